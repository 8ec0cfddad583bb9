"""The contract every data module of the experiments follows, and what they share.

A data module is a :class:`SplitDataModule`: it reads its data once in :meth:`setup` through
:meth:`~SplitDataModule.load_splits` (``{"train", "val", "test"}`` -> that split's data) and
serves each split through :meth:`~SplitDataModule.make_dataset` with the same DataLoader
settings (:class:`SplitLoaders`). :class:`ArrayDataModule` is the common case, splits held in
memory as ``(features, targets)`` arrays, checked against the config's ``in_features`` and
``num_classes``; one file per data source subclasses it (``digits.py``, ``mnist.py``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset

Split = tuple[np.ndarray, np.ndarray]
SPLITS = ("train", "val", "test")


def stratified_split(
    x: np.ndarray, y: np.ndarray, fractions: Sequence[float], seed: int
) -> list[Split]:
    """Split ``(x, y)`` into ``len(fractions) + 1`` stratified parts.

    Part ``i`` (for ``i < len(fractions)``) holds ``fractions[i]`` of the *whole*
    set; the last part holds the rest. The same ``seed`` gives the same parts.

    Examples::

        >>> x, y = np.arange(20).reshape(10, 2), np.array([0, 1] * 5)
        >>> rest, test = stratified_split(x, y, [0.2], seed=0)[::-1]
        >>> len(test[1]), len(rest[1]), sorted(test[1].tolist())
        (2, 8, [0, 1])
    """
    total = len(y)
    parts: list[Split] = []
    for frac in fractions:
        if not 0.0 < frac < 1.0:
            raise ValueError(f"stratified_split: expected fractions in (0, 1), got {frac}")
        n = int(round(frac * total))
        x, x_part, y, y_part = train_test_split(
            x, y, test_size=n, stratify=y, random_state=seed
        )
        parts.append((x_part, y_part))
    return [*parts, (x, y)]


class SplitLoaders:
    """``train/val/test_dataloader`` over ``self.split_dataset(split)``, with the module's
    ``batch_size``, ``num_workers`` and ``pin_memory`` (and ``collate_fn`` if set)."""

    collate_fn = None
    batch_size: int
    num_workers: int
    pin_memory: bool

    def split_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.split_dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SplitDataModule(SplitLoaders, pl.LightningDataModule):
    """A LightningDataModule that reads its splits once and serves them.

    Subclasses implement :meth:`load_splits` (``{"train", "val", "test"}`` -> the split's
    data, in any form) and :meth:`make_dataset` (that data as a ``Dataset``). :meth:`setup`
    calls both once; the data stays in :attr:`splits`, the datasets in :attr:`datasets`.

    Args:
        batch_size: batch size of every DataLoader.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        seed: seeds the splits and subsets (the training shuffle follows the global seed).
    """

    def __init__(self, *, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: expected batch_size >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.splits: dict[str, Any] = {}
        self.datasets: dict[str, Dataset] = {}

    def load_splits(self) -> dict[str, Any]:
        """Return ``{"train": ..., "val": ..., "test": ...}``: each split's data."""
        raise NotImplementedError

    def make_dataset(self, split: str, data: Any) -> Dataset:
        """The ``Dataset`` of ``split`` from its data (one value of :meth:`load_splits`)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.splits = self.load_splits()
        self.datasets = {split: self.make_dataset(split, data)
                         for split, data in self.splits.items()}

    def split_dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__}: call setup() before asking for {split} data"
            )
        return self.datasets[split]

    def sizes(self) -> dict[str, int]:
        """Number of examples in each split (after :meth:`setup`)."""
        return {split: len(ds) for split, ds in self.datasets.items()}


class ArrayDataModule(SplitDataModule):
    """A data module whose splits are ``(features, targets)`` arrays held in memory.

    Subclasses implement :meth:`load_splits`, returning ``{"train", "val", "test"}`` ->
    ``(x, y)`` numpy arrays with ``x`` of shape ``(n, in_features)``; this class checks the
    shapes against the config and turns them into tensors. Class labels (int64) must lie in
    ``[0, num_classes)``; a regression data set sets :attr:`regression` and keeps float32
    targets (``num_classes`` is then the number of targets, a model's output size).

    Args:
        in_features: number of features the model expects (checked against the data).
        num_classes: number of classes the model predicts (checked against the labels).
        **kwargs: see :class:`SplitDataModule`.
    """

    #: float targets, not class labels (no label check)
    regression: bool = False

    def __init__(self, *, in_features: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` as numpy arrays."""
        raise NotImplementedError

    def make_dataset(self, split: str, data: Split) -> TensorDataset:
        x, y = data
        name = type(self).__name__
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{name}: expected {split} features of shape (n, {self.in_features}) "
                f"(data.in_features), got {tuple(x.shape)}"
            )
        if self.regression:
            return TensorDataset(torch.as_tensor(x, dtype=torch.float32),
                                 torch.as_tensor(y, dtype=torch.float32))
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"{name}: expected {split} labels in [0, {self.num_classes}) "
                f"(data.num_classes), got [{y.min()}, {y.max()}]"
            )
        return TensorDataset(
            torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        )
