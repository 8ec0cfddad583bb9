"""MNIST and Fashion-MNIST through torchvision's IDX files (the same format, one reader).

Images are flattened to 784 features in ``[0, 1]`` and read once into memory (60,000 x 784
float32 is 188 MB). ``root`` follows torchvision's layout,
``<root>/MNIST/raw/train-images-idx3-ubyte`` and so on; files are downloaded with
torchvision's checksums when ``download`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision import datasets

from experiments.data.base import ArrayDataModule, Split, stratified_split


class TorchvisionDataModule(ArrayDataModule):
    """Base for torchvision's IDX image datasets (``dataset_cls`` set by subclasses).

    Args:
        root: folder holding ``<Name>/raw/`` (``~`` expanded; relative to the working directory).
        download: download the files (with torchvision's checksums) when they are missing.
        limit_train: keep this many training images (a stratified subset by ``seed``),
            ``None`` for all.
        val_fraction: fraction of the (kept) training images held out for validation.
        **kwargs: see :class:`ArrayDataModule`.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST

    def __init__(
        self,
        *,
        root: str | os.PathLike = "~/.cache/lamods/data",
        download: bool = True,
        limit_train: int | None = None,
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if limit_train is not None and limit_train < 2:
            raise ValueError(
                f"{type(self).__name__}: expected limit_train >= 2 or null, got {limit_train}"
            )
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self.download = bool(download)
        self.limit_train = limit_train
        self.val_fraction = val_fraction

    @property
    def raw_folder(self) -> Path:
        """Where torchvision looks for the files: ``<root>/<Name>/raw``."""
        return self.root / self.dataset_cls.__name__ / "raw"

    def _open(self, train: bool, download: bool) -> datasets.MNIST:
        name = type(self).__name__
        try:
            return self.dataset_cls(str(self.root), train=train, download=download)
        except RuntimeError as err:
            if download:
                raise RuntimeError(
                    f"{name}: could not download {self.dataset_cls.__name__} into "
                    f"{self.raw_folder} ({err}). Without network access, copy the files "
                    "there or pass data.root=DIR pointing at a folder that holds "
                    f"{self.dataset_cls.__name__}/raw/."
                ) from err
            files = ", ".join(f.removesuffix(".gz") for f, _ in self.dataset_cls.resources)
            raise FileNotFoundError(
                f"{name}: {self.dataset_cls.__name__} not found: looked in {self.raw_folder} "
                f"for {files} (or .gz) (torchvision: {err}). Pass data.download=true to "
                f"download it, or data.root=DIR for a folder that holds "
                f"{self.dataset_cls.__name__}/raw/."
            ) from err

    def prepare_data(self) -> None:
        # Called on one process only: download here, read in setup().
        if self.download:
            self._open(train=True, download=True)
            self._open(train=False, download=True)

    def load_splits(self) -> dict[str, Split]:
        train_set = self._open(train=True, download=False)
        test_set = self._open(train=False, download=False)
        x, y = _flatten(train_set)
        if self.limit_train is not None and self.limit_train < len(y):
            x, y = stratified_split(x, y, [self.limit_train / len(y)], seed=self.seed)[0]
        val, train = stratified_split(x, y, [self.val_fraction], seed=self.seed)
        return {"train": train, "val": val, "test": _flatten(test_set)}


def _flatten(ds: datasets.MNIST) -> Split:
    x = ds.data.reshape(len(ds.data), -1).numpy().astype(np.float32) / 255.0
    return x, ds.targets.numpy().astype(np.int64)


class MNISTDataModule(TorchvisionDataModule):
    """MNIST handwritten digits (LeCun et al.), 784 pixels in ``[0, 1]``, 10 classes."""

    dataset_cls = datasets.MNIST


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST clothing images (Zalando), 784 pixels in ``[0, 1]``, 10 classes."""

    dataset_cls = datasets.FashionMNIST


