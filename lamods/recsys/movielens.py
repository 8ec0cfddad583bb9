r"""Explicit-feedback rating data: the :class:`Ratings` container and the MovieLens datasets.

A rating data set is a list of triples :math:`(u, i, r_{ui})` (plus a timestamp)
with users and items numbered contiguously ``0 .. n_users-1`` and
``0 .. n_items-1``. Subsets made by the splitters keep the full index space, so
a model sized for the whole data set can be trained on any part of it.

MovieLens (GroupLens, https://grouplens.org/datasets/movielens/) is read from an
already-extracted ratings file (``u.data``, ``ratings.dat`` or ``ratings.csv``
by variant), from the official ``.zip`` archive, or downloaded with its md5
checksum through torchvision's helpers. MovieLens may not be redistributed:
the data never lives in this repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lamods._validation import check_ids

__all__ = ["VARIANTS", "MovieLens", "Ratings"]


class Ratings(Dataset):
    r"""Explicit ratings :math:`(u, i, r_{ui}, t_{ui})` as four aligned 1-D tensors.

    ``dataset[n]`` is the triple ``(user, item, rating)``, so a
    :class:`torch.utils.data.DataLoader` batches it as three tensors.

    Args:
        users: ``(N,)`` integer user indices in ``[0, n_users)``.
        items: ``(N,)`` integer item indices in ``[0, n_items)``.
        ratings: ``(N,)`` ratings (stored as float32 unless a floating dtype is given).
        timestamps: ``(N,)`` integer times, or None (all zero).
        n_users: size of the user index space (default: ``users.max() + 1``).
        n_items: size of the item index space (default: ``items.max() + 1``).
        rating_range: ``(lowest, highest)`` rating of the scale; predictions
            are clipped to it at evaluation (default: the min and max seen).

    Attributes:
        users, items, ratings, timestamps: the tensors above.
        n_users, n_items, rating_range: as above.

    Examples::

        >>> data = Ratings(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0]),
        ...                torch.tensor([4.0, 3.0, 5.0]), n_items=4)
        >>> len(data), data.n_users, data.n_items, data.rating_range
        (3, 2, 4, (3.0, 5.0))
        >>> data[2]
        (tensor(1), tensor(0), tensor(5.))
        >>> data.subset(torch.tensor([0, 2])).ratings
        tensor([4., 5.])
    """

    def __init__(
        self,
        users: Tensor,
        items: Tensor,
        ratings: Tensor,
        timestamps: Tensor | None = None,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        rating_range: tuple[float, float] | None = None,
    ) -> None:
        name = type(self).__name__
        for what, t in (("users", users), ("items", items), ("ratings", ratings)):
            if not isinstance(t, Tensor) or t.dim() != 1:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name}: expected {what} as a 1-D tensor, got {got}")
        n = users.shape[0]
        if items.shape[0] != n or ratings.shape[0] != n or (
                timestamps is not None and timestamps.shape[0] != n):
            lens = [users.shape[0], items.shape[0], ratings.shape[0]]
            if timestamps is not None:
                lens.append(timestamps.shape[0])
            raise ValueError(f"{name}: expected users, items, ratings (and timestamps) of one "
                             f"length, got lengths {lens}")
        self.n_users = int(users.max()) + 1 if n_users is None and n else (n_users or 0)
        self.n_items = int(items.max()) + 1 if n_items is None and n else (n_items or 0)
        self.users = check_ids(name, "users", users, self.n_users).long()
        self.items = check_ids(name, "items", items, self.n_items).long()
        self.ratings = ratings if ratings.is_floating_point() else ratings.float()
        self.timestamps = (torch.zeros(n, dtype=torch.long, device=users.device)
                           if timestamps is None else timestamps.long())
        if rating_range is None:
            rating_range = ((float(self.ratings.min()), float(self.ratings.max())) if n
                            else (0.0, 0.0))
        self.rating_range = (float(rating_range[0]), float(rating_range[1]))

    def __len__(self) -> int:
        return self.users.shape[0]

    def __getitem__(self, index):
        return self.users[index], self.items[index], self.ratings[index]

    @property
    def global_mean(self) -> float:
        """Mean rating :math:`\\mu` (0 for an empty set)."""
        return float(self.ratings.double().mean()) if len(self) else 0.0

    def subset(self, index: Tensor) -> Ratings:
        """The ratings at ``index`` (integer or boolean tensor), in the same index space."""
        return Ratings(self.users[index], self.items[index], self.ratings[index],
                       self.timestamps[index], n_users=self.n_users, n_items=self.n_items,
                       rating_range=self.rating_range)

    def to(self, device: torch.device | str) -> Ratings:
        """A copy on ``device``."""
        return Ratings(self.users.to(device), self.items.to(device), self.ratings.to(device),
                       self.timestamps.to(device), n_users=self.n_users, n_items=self.n_items,
                       rating_range=self.rating_range)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_ratings={len(self)}, n_users={self.n_users}, "
                f"n_items={self.n_items}, rating_range={self.rating_range})")


@dataclass(frozen=True)
class _Variant:
    archive: str          # file name of the GroupLens archive
    md5: str | None       # md5 of the archive (None: GroupLens updates it in place)
    folder: str           # folder the archive extracts to
    file: str             # ratings file inside that folder
    sep: str              # field separator
    header: bool          # whether the first line is a header
    scale: tuple[float, float]


_URL = "https://files.grouplens.org/datasets/movielens/"

#: MovieLens variants: archive, md5, extracted folder, ratings file, format, rating scale.
VARIANTS: dict[str, _Variant] = {
    "100k": _Variant("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k",
                     "u.data", "\t", False, (1.0, 5.0)),
    "1m": _Variant("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m",
                   "ratings.dat", "::", False, (1.0, 5.0)),
    "10m": _Variant("ml-10m.zip", "ce571fd55effeba0271552578f2648bd", "ml-10M100K",
                    "ratings.dat", "::", False, (0.5, 5.0)),
    "20m": _Variant("ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m",
                    "ratings.csv", ",", True, (0.5, 5.0)),
    "25m": _Variant("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m",
                    "ratings.csv", ",", True, (0.5, 5.0)),
    # GroupLens refreshes ml-latest-small in place, so it has no fixed checksum.
    "latest-small": _Variant("ml-latest-small.zip", None, "ml-latest-small",
                             "ratings.csv", ",", True, (0.5, 5.0)),
}


def _parse(path: Path, sep: str, header: bool) -> np.ndarray:
    """Read ``user sep item sep rating sep timestamp`` lines into an ``(N, 4)`` float64 array.

    Raises ValueError naming the file and the first line that does not parse.
    """
    text = path.read_text(encoding="latin-1")
    lines = text.splitlines()
    first = 1 if header else 0
    body = "\n".join(lines[first:])
    try:
        flat = np.array(body.replace(sep, " ").split(), dtype=np.float64)
        ok = flat.size % 4 == 0 and np.isfinite(flat).all()
    except ValueError:
        ok = False
    if ok:
        table = flat.reshape(-1, 4)
        # a wrong field count can still divide by 4: check line by line only then
        if table.shape[0] == sum(1 for line in lines[first:] if line.strip()):
            if table.shape[0] == 0:
                raise ValueError(f"MovieLens: expected ratings in {path}, got an empty file")
            return table
    for n, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        try:
            good = len(fields) == 4 and all(np.isfinite(float(f)) for f in fields)
        except ValueError:
            good = False
        if not good:
            raise ValueError(
                f"MovieLens: expected 4 fields user{sep!r}item{sep!r}rating{sep!r}timestamp "
                f"on every line of {path}, got line {n}: {line[:80]!r} (the file is corrupt or "
                "not a MovieLens ratings file; delete it and download again)")
    raise ValueError(f"MovieLens: expected ratings in {path}, got an unreadable file")


class MovieLens(Ratings):
    r"""A MovieLens ratings data set (GroupLens) with raw ids mapped to contiguous indices.

    Looks for the ratings file of ``variant`` (``u.data`` for ``"100k"``,
    ``ratings.dat`` for ``"1m"``/``"10m"``, ``ratings.csv`` for the others) at
    ``root/<folder>/<file>`` (``root/ml-100k/u.data``, as the archive extracts)
    or ``root/<file>``. If absent, extracts ``root/<archive>.zip`` after
    checking its md5, and with ``download=True`` first downloads it from
    ``https://files.grouplens.org/datasets/movielens/`` (torchvision's
    ``download_and_extract_archive``, which checks the md5 again).

    Raw user and item ids are sorted and numbered: ``users[n]`` is the index
    of ``user_ids[users[n]]``.

    Args:
        root: folder holding the data (``str`` or path).
        variant: one of ``"100k"``, ``"1m"``, ``"10m"``, ``"20m"``, ``"25m"``,
            ``"latest-small"``.
        download: download the archive when no local copy is found.

    Attributes:
        users, items, ratings, timestamps: ``(N,)`` tensors (int64, int64,
            float32, int64), in file order.
        user_ids, item_ids: ``(n_users,)``, ``(n_items,)`` raw GroupLens ids by index.
        user_index, item_index: dicts raw id -> index.
        rating_range: the variant's rating scale, ``(1, 5)`` or ``(0.5, 5)``.
        path: the ratings file read.

    Examples::

        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "ml-100k").mkdir()
        >>> _ = (root / "ml-100k" / "u.data").write_text("7\t30\t4\t881250949\n"
        ...                                              "3\t30\t5\t891717742\n")
        >>> data = MovieLens(root, download=False)
        >>> data.users, data.items, data.ratings
        (tensor([1, 0]), tensor([0, 0]), tensor([4., 5.]))
        >>> data.user_ids, data.item_index
        (tensor([3, 7]), {30: 0})
    """

    def __init__(self, root: str | os.PathLike, variant: str = "100k",
                 download: bool = True) -> None:
        if variant not in VARIANTS:
            valid = ", ".join(repr(v) for v in VARIANTS)
            raise ValueError(f"MovieLens: expected variant to be one of {valid}, got {variant!r}")
        spec = VARIANTS[variant]
        self.root = Path(root).expanduser()
        self.variant = variant
        self.path = self._locate(spec, download)
        table = _parse(self.path, spec.sep, spec.header)
        raw_users = table[:, 0].astype(np.int64)
        raw_items = table[:, 1].astype(np.int64)
        user_ids, users = np.unique(raw_users, return_inverse=True)
        item_ids, items = np.unique(raw_items, return_inverse=True)
        ratings = table[:, 2]
        lo, hi = spec.scale
        if ratings.min() < lo or ratings.max() > hi:
            bad = ratings.min() if ratings.min() < lo else ratings.max()
            raise ValueError(f"MovieLens: expected ratings in [{lo}, {hi}] in {self.path}, "
                             f"got {bad} (the file is corrupt or of another variant)")
        super().__init__(
            torch.from_numpy(users.reshape(-1)), torch.from_numpy(items.reshape(-1)),
            torch.from_numpy(ratings.astype(np.float32)),
            torch.from_numpy(table[:, 3].astype(np.int64)),
            n_users=len(user_ids), n_items=len(item_ids), rating_range=spec.scale)
        self.user_ids = torch.from_numpy(user_ids)
        self.item_ids = torch.from_numpy(item_ids)
        self.user_index = {int(u): n for n, u in enumerate(user_ids)}
        self.item_index = {int(i): n for n, i in enumerate(item_ids)}

    def _locate(self, spec: _Variant, download: bool) -> Path:
        for candidate in (self.root / spec.folder / spec.file, self.root / spec.file):
            if candidate.is_file():
                return candidate
        archive = self.root / spec.archive
        from torchvision.datasets.utils import (
            check_integrity,
            download_and_extract_archive,
            extract_archive,
        )
        if archive.is_file():
            if not check_integrity(str(archive), spec.md5):
                raise RuntimeError(
                    f"MovieLens: expected {archive} with md5 {spec.md5}, got a file with another "
                    "checksum (corrupt or partial download); delete it and download again")
            extract_archive(str(archive), str(self.root))
        elif download:
            download_and_extract_archive(_URL + spec.archive, str(self.root),
                                         filename=spec.archive, md5=spec.md5)
        else:
            raise RuntimeError(
                f"MovieLens: expected the {self.variant!r} ratings file at "
                f"{self.root / spec.folder / spec.file} (or the archive {archive}), got no such "
                "file. Dataset not found: use download=True to download it")
        path = self.root / spec.folder / spec.file
        if not path.is_file():
            raise RuntimeError(f"MovieLens: expected {path} inside {spec.archive}, got an "
                               "archive without it; delete the archive and download again")
        return path

    def __repr__(self) -> str:
        return (f"MovieLens(variant={self.variant!r}, n_ratings={len(self)}, "
                f"n_users={self.n_users}, n_items={self.n_items}, path={str(self.path)!r})")
