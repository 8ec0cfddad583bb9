"""scikit-learn's bundled diabetes regression data (offline): 442 patients, 10 features."""

from __future__ import annotations

import numpy as np

from experiments.data.base import ArrayDataModule, Split


class DiabetesDataModule(ArrayDataModule):
    """scikit-learn's bundled diabetes regression data (offline): 442 patients, 10 features.

    Features as scikit-learn gives them (each column centred and scaled to unit norm), the
    target (disease progression after a year, 25..346) as float32. Random train/val/test
    split by ``seed`` (``test_fraction`` and ``val_fraction`` of the whole set; a fraction
    of 0 leaves that split empty). ``num_classes`` is the number of targets (1): a
    regression model's output size.

    Args:
        val_fraction: fraction of all rows used for validation (0 for none).
        test_fraction: fraction of all rows held out for testing.
        **kwargs: see :class:`ArrayDataModule`.

    Examples::

        >>> dm = DiabetesDataModule(in_features=10, num_classes=1, seed=0)
        >>> dm.setup()
        >>> dm.sizes(), dm.datasets["train"].tensors[1].dtype
        ({'train': 310, 'val': 44, 'test': 88}, torch.float32)
    """

    regression = True

    def __init__(self, *, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"DiabetesDataModule: expected {name} in [0, 1), got {frac}")
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        x, y = x.astype(np.float32), y.astype(np.float32)
        order = np.random.default_rng(self.seed).permutation(len(y))
        n_test = int(round(self.test_fraction * len(y)))
        n_val = int(round(self.val_fraction * len(y)))
        test, val, train = np.split(order, [n_test, n_test + n_val])
        return {"train": (x[train], y[train]), "val": (x[val], y[val]),
                "test": (x[test], y[test])}
