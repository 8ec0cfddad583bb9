r"""LightningDataModules for the experiments; ``configs/data/*.yaml`` name them by ``_target_``.

Every module here holds its splits in memory as ``(features, labels)`` arrays
(:class:`ArrayDataModule`): a data set is a subclass with one method, ``load_splits``.

- ``digits``: scikit-learn's bundled 8x8 digits (offline): 1,797 images, 64 features.
- ``mnist``, ``fashion_mnist``: torchvision's IDX files, flattened to 784 features in
  ``[0, 1]`` and read once into memory (60,000 x 784 float32 is 188 MB). ``root`` follows
  torchvision's layout, ``<root>/MNIST/raw/train-images-idx3-ubyte`` and so on.
- ``synthetic``: Gaussian clusters. Class :math:`k` has centre :math:`\mu_k = r\, u_k`
  with :math:`u_k` a random unit vector and :math:`r` = ``separation``; a sample is
  :math:`x = \mu_y + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`,
  :math:`\sigma` = ``noise``, labels balanced.

A new data set: a subclass here, one YAML in ``configs/data/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets

Split = tuple[np.ndarray, np.ndarray]


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

    def split_dataset(self, split: str) -> torch.utils.data.Dataset:
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


class ArrayDataModule(SplitLoaders, pl.LightningDataModule):
    """A LightningDataModule whose splits are ``(features, labels)`` arrays held in memory.

    Subclasses implement :meth:`load_splits`, returning ``{"train", "val", "test"}`` ->
    ``(x, y)`` with ``x`` of shape ``(n, in_features)``; this class checks the shapes
    against the config, turns them into tensors and serves the DataLoaders.

    Args:
        in_features: number of features the model expects (checked against the data).
        num_classes: number of classes the model predicts (checked against the labels).
        batch_size: batch size of every DataLoader.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory (faster copies to a GPU).
        seed: seeds the splits and subsets (the training shuffle follows the global seed).
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: expected batch_size >= 1, got {batch_size}")
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.datasets: dict[str, TensorDataset] = {}

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` as numpy arrays."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self.load_splits()
        name = type(self).__name__
        for split, (x, y) in splits.items():
            if x.ndim != 2 or x.shape[1] != self.in_features:
                raise ValueError(
                    f"{name}: expected {split} features of shape (n, {self.in_features}) "
                    f"(data.in_features), got {tuple(x.shape)}"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"{name}: expected {split} labels in [0, {self.num_classes}) "
                    f"(data.num_classes), got [{y.min()}, {y.max()}]"
                )
            self.datasets[split] = TensorDataset(
                torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
            )

    def split_dataset(self, split: str) -> TensorDataset:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__}: call setup() before asking for {split} data"
            )
        return self.datasets[split]

    def sizes(self) -> dict[str, int]:
        """Number of examples in each split (after :meth:`setup`)."""
        return {split: len(ds) for split, ds in self.datasets.items()}


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# synthetic: Gaussian clusters
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# MNIST, Fashion-MNIST
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# MovieLens ratings
# ---------------------------------------------------------------------------
class _RatingBatches(torch.utils.data.Dataset):
    """``(users, items, ratings)`` served a whole batch at a time.

    ``DataLoader`` calls ``__getitems__`` with the batch's indices, so a batch is three
    tensor gathers rather than ``batch_size`` Python calls; :func:`_batch` is its collate.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> None:
        self.users, self.items, self.ratings = users, items, ratings

    def __len__(self) -> int:
        return self.users.shape[0]

    def __getitem__(self, index):
        return self.users[index], self.items[index], self.ratings[index]

    def __getitems__(self, indices):
        return self[torch.as_tensor(indices, dtype=torch.long)]


def _batch(batch):
    return batch


class MovieLensDataModule(SplitLoaders, pl.LightningDataModule):
    r"""MovieLens ratings (:class:`lamods.recsys.MovieLens`) split into train/val/test by ``seed``.

    Batches are ``(users, items, ratings)``: ``(B,)`` int64, int64, float32. Splits
    (``split``), all over the same user and item index space:

    - ``"random"``: holdout; ``test_fraction`` and ``val_fraction`` of all ratings.
    - ``"kfold"``: test is fold ``fold`` of a shuffled ``n_folds``-fold split
      (:func:`lamods.recsys.kfold_indices`); ``val_fraction`` of the rest is validation.
    - ``"leave_last_out"``: each user's latest rating is the test part, the latest of the
      remaining ones the validation part (users with too few ratings keep theirs in training).

    :meth:`model_kwargs` gives the rating model the sizes it needs (``n_users``,
    ``n_items``, ``rating_range``); :func:`experiments.train.build` passes them on.

    Args:
        root: folder holding ``ml-100k/u.data`` and the like (or the archive).
        variant: ``"100k"``, ``"1m"``, ... (see :data:`lamods.recsys.VARIANTS`).
        download: download the GroupLens archive (md5-checked) when no copy is found.
        split: ``"random"``, ``"kfold"`` or ``"leave_last_out"``.
        val_fraction, test_fraction: fractions of all ratings (``random``); ``val_fraction``
            is of the training part for ``kfold``.
        n_folds, fold: the k-fold split and which fold (0-based) is the test part.
        batch_size, num_workers, pin_memory: DataLoader settings.
        seed: seeds the split.
    """

    SPLITS = ("random", "kfold", "leave_last_out")

    def __init__(
        self,
        *,
        root: str | os.PathLike = "~/.cache/lamods/data",
        variant: str = "100k",
        download: bool = True,
        split: str = "random",
        val_fraction: float = 0.05,
        test_fraction: float = 0.2,
        n_folds: int = 5,
        fold: int = 0,
        batch_size: int = 16384,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if split not in self.SPLITS:
            raise ValueError(f"{name}: expected split to be one of {', '.join(self.SPLITS)}, "
                             f"got {split!r}")
        if split == "kfold" and not 0 <= fold < n_folds:
            raise ValueError(f"{name}: expected fold in [0, {n_folds}) (n_folds={n_folds}), "
                             f"got {fold}")
        if batch_size < 1:
            raise ValueError(f"{name}: expected batch_size >= 1, got {batch_size}")
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self.variant = variant
        self.download = bool(download)
        self.split = split
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.n_folds = int(n_folds)
        self.fold = int(fold)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.data = None  # the whole MovieLens set, read on first use
        self.splits: dict = {}  # "train" / "val" / "test" -> lamods.recsys.Ratings

    def load(self):
        """The whole data set (read once; downloaded first when ``download`` and missing)."""
        if self.data is None:
            from lamods.recsys import MovieLens

            self.data = MovieLens(self.root, self.variant, download=self.download)
        return self.data

    def prepare_data(self) -> None:
        if self.download:
            self.load()

    def model_kwargs(self) -> dict:
        """What a rating model needs from the data: ``n_users``, ``n_items``, ``rating_range``."""
        data = self.load()
        return {"n_users": data.n_users, "n_items": data.n_items,
                "rating_range": list(data.rating_range)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from lamods.recsys import kfold_indices, leave_last_out, random_split

        data = self.load()
        if self.split == "random":
            rest = 1.0 - self.test_fraction - self.val_fraction
            train, val, test = random_split(
                data, (rest, self.val_fraction, self.test_fraction), seed=self.seed)
        elif self.split == "kfold":
            train_idx, test_idx = kfold_indices(len(data), self.n_folds, seed=self.seed)[self.fold]
            rest, test = data.subset(train_idx), data.subset(test_idx)
            train, val = random_split(rest, (1.0 - self.val_fraction, self.val_fraction),
                                      seed=self.seed)
        else:
            rest, test = leave_last_out(data)
            train, val = leave_last_out(rest)
        self.splits = {"train": train, "val": val, "test": test}

    collate_fn = staticmethod(_batch)

    def split_dataset(self, split: str) -> _RatingBatches:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for {split} "
                               "data")
        part = self.splits[split]
        return _RatingBatches(part.users, part.items, part.ratings)

    def sizes(self) -> dict[str, int]:
        """Number of ratings in each split (after :meth:`setup`)."""
        return {split: len(part) for split, part in self.splits.items()}

    def item_titles(self) -> dict[int, str]:
        """Raw item id -> title from ``u.item`` beside ``u.data`` (ML-100K), else empty."""
        path = self.load().path.parent / "u.item"
        if not path.is_file():
            return {}
        titles = {}
        for line in path.read_text(encoding="latin-1").splitlines():
            fields = line.split("|")
            if len(fields) > 1 and fields[0].isdigit():
                titles[int(fields[0])] = fields[1]
        return titles


# ---------------------------------------------------------------------------
# diabetes: a small regression set
# ---------------------------------------------------------------------------
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

    def setup(self, stage: str | None = None) -> None:
        # regression targets: float, not class labels (no num_classes check)
        if self.datasets:
            return
        for split, (x, y) in self.load_splits().items():
            if x.ndim != 2 or x.shape[1] != self.in_features:
                raise ValueError(f"DiabetesDataModule: expected {split} features of shape "
                                 f"(n, {self.in_features}) (data.in_features), got {x.shape}")
            self.datasets[split] = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
