r"""Gaussian clusters, generated (offline).

Class :math:`k` has centre :math:`\mu_k = r\, u_k` with :math:`u_k` a random unit vector and
:math:`r` = ``separation``; a sample is :math:`x = \mu_y + \sigma \varepsilon`,
:math:`\varepsilon \sim \mathcal N(0, I)`, :math:`\sigma` = ``noise``, labels balanced.
"""

from __future__ import annotations

import numpy as np

from experiments.data.base import ArrayDataModule, Split, stratified_split


def gaussian_clusters(
    n_samples: int, in_features: int, num_classes: int, separation: float, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_samples`` points ``(x, y)`` from ``num_classes`` Gaussian clusters.

    Examples::

        >>> x, y = gaussian_clusters(100, 5, 4, separation=3.0, noise=1.0, seed=0)
        >>> x.shape, x.dtype, np.bincount(y).tolist()
        ((100, 5), dtype('float32'), [25, 25, 25, 25])
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, in_features))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.arange(n_samples) % num_classes
    rng.shuffle(y)
    x = centres[y] + noise * rng.standard_normal((n_samples, in_features))
    return x.astype(np.float32), y.astype(np.int64)


class SyntheticDataModule(ArrayDataModule):
    r"""Gaussian clusters (see the module docstring), split stratified by ``seed``.

    Args:
        n_samples: total number of points.
        separation: distance of every cluster centre from the origin.
        noise: standard deviation of the isotropic noise around a centre.
        val_fraction, test_fraction: fractions of all points for validation and test.
        **kwargs: see :class:`ArrayDataModule`.
    """

    def __init__(
        self,
        *,
        n_samples: int = 1000,
        separation: float = 3.0,
        noise: float = 1.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.n_samples = n_samples
        self.separation = separation
        self.noise = noise
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def load_splits(self) -> dict[str, Split]:
        x, y = gaussian_clusters(
            self.n_samples, self.in_features, self.num_classes,
            self.separation, self.noise, self.seed,
        )
        test, val, train = stratified_split(
            x, y, [self.test_fraction, self.val_fraction], seed=self.seed
        )
        return {"test": test, "val": val, "train": train}


