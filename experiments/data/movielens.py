"""MovieLens ratings (GroupLens) through :class:`lamods.recsys.MovieLens`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from experiments.data.base import SplitDataModule


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


class MovieLensDataModule(SplitDataModule):
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
        verify: check the documented counts and the checksum of the file read (False
            reads a modified or partial copy).
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
        verify: bool = True,
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
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         seed=seed)
        name = type(self).__name__
        if split not in self.SPLITS:
            raise ValueError(f"{name}: expected split to be one of {', '.join(self.SPLITS)}, "
                             f"got {split!r}")
        if split == "kfold" and not 0 <= fold < n_folds:
            raise ValueError(f"{name}: expected fold in [0, {n_folds}) (n_folds={n_folds}), "
                             f"got {fold}")
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self.variant = variant
        self.download = bool(download)
        self.verify = bool(verify)
        self.split = split
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.n_folds = int(n_folds)
        self.fold = int(fold)
        self.data = None  # the whole MovieLens set, read on first use

    def load(self):
        """The whole data set (read once; downloaded first when ``download`` and missing)."""
        if self.data is None:
            from lamods.recsys import MovieLens

            self.data = MovieLens(self.root, self.variant, download=self.download,
                                  verify=self.verify)
        return self.data

    def prepare_data(self) -> None:
        if self.download:
            self.load()

    def model_kwargs(self) -> dict:
        """What a rating model needs from the data: ``n_users``, ``n_items``, ``rating_range``."""
        data = self.load()
        return {"n_users": data.n_users, "n_items": data.n_items,
                "rating_range": list(data.rating_range)}

    def load_splits(self) -> dict[str, Any]:
        """``{"train", "val", "test"}`` -> :class:`lamods.recsys.Ratings` (see ``split``)."""
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
        return {"train": train, "val": val, "test": test}

    collate_fn = staticmethod(_batch)

    def make_dataset(self, split: str, data: Any) -> _RatingBatches:
        return _RatingBatches(data.users, data.items, data.ratings)

    def item_titles(self) -> dict[int, str]:
        """Raw item id -> title from ``u.item`` beside ``u.data`` (ML-100K), else empty."""
        from lamods.recsys import read_item_titles

        return read_item_titles(self.load().path.parent / "u.item")
