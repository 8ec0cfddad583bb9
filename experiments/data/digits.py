"""scikit-learn's bundled 8x8 handwritten digits (offline): 1,797 images, 64 features."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from experiments.data.base import ArrayDataModule, Split, stratified_split


class DigitsDataModule(ArrayDataModule):
    """Digits as 64 pixel intensities scaled from ``0..16`` to ``[0, 1]``.

    Stratified train/val/test split by ``seed``: ``test_fraction`` and ``val_fraction``
    of the whole set, the rest for training.

    Args:
        val_fraction: fraction of all images used for validation.
        test_fraction: fraction of all images used for testing.
        **kwargs: see :class:`ArrayDataModule`.

    Examples::

        >>> dm = DigitsDataModule(in_features=64, num_classes=10, seed=0)
        >>> dm.setup()
        >>> dm.sizes()
        {'test': 359, 'val': 180, 'train': 1258}
    """

    def __init__(self, *, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def load_splits(self) -> dict[str, Split]:
        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
        test, val, train = stratified_split(
            x, y, [self.test_fraction, self.val_fraction], seed=self.seed
        )
        return {"test": test, "val": val, "train": train}


