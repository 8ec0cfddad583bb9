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

import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lamods._validation import check_finite, check_ids

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
        check_finite(name, self.ratings, "ratings tensor")
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
    step: float           # ratings are multiples of this (whole or half stars)
    counts: tuple[int, int, int] | None  # (ratings, users, items) GroupLens documents
    file_md5: str | None  # md5 of the extracted ratings file, where known


_URL = "https://files.grouplens.org/datasets/movielens/"

#: MovieLens variants: archive, md5, extracted folder, ratings file, format, rating scale,
#: documented counts and (where known) the md5 of the extracted ratings file.
#:
#: Note [MovieLens counts]: the (ratings, users, items) triples are those of GroupLens'
#: README of each archive (items = movies with at least one rating): ML-100K 100,000 / 943 /
#: 1,682; ML-1M 1,000,209 / 6,040 / 3,706; ML-10M 10,000,054 / 69,878 / 10,677; ML-20M
#: 20,000,263 / 138,493 / 26,744; ML-25M 25,000,095 / 162,541 / 59,047. ml-latest-small is
#: refreshed in place, so it has neither fixed counts nor checksums. The md5 of ML-100K's
#: ``u.data`` is that of the file extracted from the md5-checked archive; for the other
#: variants the extracted file is checked against the CRC-32 its archive records, when the
#: archive is beside it (:meth:`MovieLens._verify`).
VARIANTS: dict[str, _Variant] = {
    "100k": _Variant("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k",
                     "u.data", "\t", False, (1.0, 5.0), 1.0, (100_000, 943, 1_682),
                     "6e47046882bad158b0efbb84cd5cb987"),
    "1m": _Variant("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m",
                   "ratings.dat", "::", False, (1.0, 5.0), 1.0, (1_000_209, 6_040, 3_706),
                   None),
    "10m": _Variant("ml-10m.zip", "ce571fd55effeba0271552578f2648bd", "ml-10M100K",
                    "ratings.dat", "::", False, (0.5, 5.0), 0.5, (10_000_054, 69_878, 10_677),
                    None),
    "20m": _Variant("ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m",
                    "ratings.csv", ",", True, (0.5, 5.0), 0.5, (20_000_263, 138_493, 26_744),
                    None),
    "25m": _Variant("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m",
                    "ratings.csv", ",", True, (0.5, 5.0), 0.5, (25_000_095, 162_541, 59_047),
                    None),
    # GroupLens refreshes ml-latest-small in place, so it has no fixed checksum or counts.
    "latest-small": _Variant("ml-latest-small.zip", None, "ml-latest-small",
                             "ratings.csv", ",", True, (0.5, 5.0), 0.5, None, None),
}

#: Lines parsed per block (bounded memory on the 25M-rating files).
_BLOCK_BYTES = 64 << 20


class _Table:
    """The four columns of a ratings file: int64 users, items, timestamps; float64 ratings."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, users, items, ratings, times) -> None:
        self.parts.append((users, items, ratings, times))

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([p[c] for p in self.parts]) for c in range(4))


def _line_error(path: Path, number: int, line: bytes, spec: _Variant) -> ValueError | None:
    """What is wrong with one line of a ratings file (None if nothing), naming file and line."""
    text = line.decode("latin-1").rstrip("\r\n")
    fields = text.split(spec.sep)
    head = f"MovieLens: in {path}, line {number} ({text[:80]!r}): expected "
    tail = " (the file is corrupt or not a MovieLens ratings file; delete it and download again)"
    if not text.strip():
        return ValueError(f"MovieLens: in {path}, line {number}: expected a rating, got a blank "
                          "line inside the file")
    if len(fields) != 4:
        return ValueError(f"{head}4 fields (user, item, rating, timestamp) separated by "
                          f"{spec.sep!r}, got {len(fields)} field{'s' * (len(fields) != 1)}"
                          f"{tail}")
    for what, field in (("user id", fields[0]), ("item id", fields[1]),
                        ("timestamp", fields[3])):
        if not field.isdigit():   # digits only: no sign, no point, no exponent, no spaces
            return ValueError(f"{head}the {what} as a non-negative integer, got "
                              f"{field!r}{tail}")
        if int(field) >= 2 ** 63:
            return ValueError(f"{head}the {what} below 2**63, got {field} (too large for an "
                              f"int64 id; it would collide with others){tail}")
    try:
        rating = float(fields[2])
    except ValueError:
        rating = math.nan
    lo, hi = spec.scale
    if not (math.isfinite(rating) and lo <= rating <= hi
            and float(rating / spec.step).is_integer()):
        return ValueError(f"{head}a rating in [{lo}, {hi}] in steps of {spec.step}, got "
                          f"{fields[2]!r}{tail}")
    return None


def _parse_block(path: Path, lines: list[bytes], first_line: int, spec: _Variant,
                 table: _Table) -> None:
    """Parse ``lines`` (numbered from ``first_line``) into ``table``; raise on the first bad one.

    Fast path: every line must hold exactly three separators and four whitespace-free
    fields; ids and timestamps are parsed as int64 (a float such as ``196.7`` or an id past
    int64 fails), ratings as float64 checked against the scale and its step. On any failure
    the block is scanned line by line for the first bad line (:func:`_line_error`).
    """
    sep = spec.sep.encode()
    blob = b"".join(lines)
    n = len(lines)
    try:
        # separators per line: exactly 3 on every line (a missing field and an extra one
        # elsewhere must not cancel out)
        arr = np.frombuffer(blob, dtype=np.uint8)
        ends = np.cumsum([len(line) for line in lines])
        hits = np.flatnonzero(arr == sep[0]) if len(sep) == 1 else np.array(
            [m for m in _find_all(blob, sep)], dtype=np.int64)
        per_line = np.diff(np.searchsorted(hits, np.concatenate([[0], ends])))
        # exact fields: no whitespace is stripped (CRLF line ends are accepted)
        text = blob.replace(b"\r\n", b"\n")
        tokens = text.replace(sep, b"\n").split(b"\n")
        if text.endswith(b"\n"):
            tokens.pop()
        if not (per_line == 3).all() or len(tokens) != 4 * n:
            raise ValueError
        columns = [np.array(tokens[c::4]) for c in range(4)]
        # digits only in ids and timestamps: no sign, point or exponent
        ids_ok = all(bool(np.strings.isdigit(columns[c]).all()) for c in (0, 1, 3))
        users, items, times = (columns[c].astype(np.int64) for c in (0, 1, 3))
        ratings = columns[2].astype(np.float64)
        lo, hi = spec.scale
        steps = ratings / spec.step
        if not (ids_ok and np.isfinite(ratings).all() and (ratings >= lo).all()
                and (ratings <= hi).all() and (steps == np.round(steps)).all()):
            raise ValueError
    except (ValueError, OverflowError):
        for offset, line in enumerate(lines):
            err = _line_error(path, first_line + offset, line, spec)
            if err is not None:
                raise err from None
        raise ValueError(f"MovieLens: expected a ratings file, got {path} that does not "
                         f"parse near line {first_line}") from None
    table.add(users, items, ratings, times)


def _find_all(blob: bytes, sep: bytes):
    """Start offsets of the non-overlapping occurrences of ``sep`` in ``blob``."""
    at = blob.find(sep)
    while at >= 0:
        yield at
        at = blob.find(sep, at + len(sep))


def _parse(path: Path, spec: _Variant) -> tuple[np.ndarray, ...]:
    """Read a ratings file strictly: ``(users, items, ratings, timestamps)`` raw columns.

    Every non-empty line must be ``user SEP item SEP rating SEP timestamp`` with integer
    ids and timestamp and a rating on the variant's scale; the first bad line raises a
    ValueError naming the file, the line number and what was wrong. Blank lines are
    allowed only at the end of the file.
    """
    table = _Table()
    number = 0          # lines consumed so far
    blank_at = None     # line number of a run of blank lines not yet followed by data
    with open(path, "rb") as f:
        if spec.header:
            f.readline()
            number = 1
        while True:
            lines = f.readlines(_BLOCK_BYTES)
            if not lines:
                break
            first = number + 1
            number += len(lines)
            # trailing blank lines of the file are tolerated, blank lines inside it are not
            end = len(lines)
            while end and not lines[end - 1].strip():
                end -= 1
            if end and blank_at is not None:
                raise ValueError(f"MovieLens: in {path}, line {blank_at}: expected a rating, "
                                 "got a blank line inside the file")
            if end < len(lines) and (end or blank_at is None):
                blank_at = first + end
            if end:
                _parse_block(path, lines[:end], first, spec, table)
    if not table.parts:
        raise ValueError(f"MovieLens: expected ratings in {path}, got an empty file")
    return table.columns()


class MovieLens(Ratings):
    r"""A MovieLens ratings data set (GroupLens) with raw ids mapped to contiguous indices.

    Looks for the ratings file of ``variant`` (``u.data`` for ``"100k"``,
    ``ratings.dat`` for ``"1m"``/``"10m"``, ``ratings.csv`` for the others) at
    ``root/<folder>/<file>`` (``root/ml-100k/u.data``, as the archive extracts)
    or ``root/<file>``. If absent, extracts ``root/<archive>.zip`` after
    checking its md5, and with ``download=True`` first downloads it from
    ``https://files.grouplens.org/datasets/movielens/`` (torchvision's
    ``download_and_extract_archive``, which checks the md5 again).

    The file is read strictly (Note [MovieLens counts]): every line must be
    ``user SEP item SEP rating SEP timestamp`` with integer ids and timestamp (``196.7``
    or an id past int64 is an error, not truncated) and a rating on the variant's scale
    and step; the first bad line raises a ValueError naming the file, the line and what
    was wrong. With ``verify=True`` (the default) the file must also hold the documented
    numbers of ratings, users and items of its variant, and match its checksum where one
    is known (md5 of ML-100K's ``u.data``; for the others the CRC-32 recorded in the
    md5-checked archive when the archive is beside the file), so a file cut at a line
    boundary or edited is refused. ``verify=False`` reads a modified or partial copy in
    the variant's format (the line checks still apply).

    Raw user and item ids are sorted and numbered: ``users[n]`` is the index
    of ``user_ids[users[n]]``.

    Args:
        root: folder holding the data (``str`` or path).
        variant: one of ``"100k"``, ``"1m"``, ``"10m"``, ``"20m"``, ``"25m"``,
            ``"latest-small"``.
        download: download the archive when no local copy is found.
        verify: check the documented counts and the checksum of the file read.

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
        >>> data = MovieLens(root, download=False, verify=False)
        >>> data.users, data.items, data.ratings
        (tensor([1, 0]), tensor([0, 0]), tensor([4., 5.]))
        >>> data.user_ids, data.item_index
        (tensor([3, 7]), {30: 0})
        >>> MovieLens(root, download=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MovieLens: expected 100,000 ratings by 943 users of 1,682 items in ...
    """

    def __init__(self, root: str | os.PathLike, variant: str = "100k",
                 download: bool = True, *, verify: bool = True) -> None:
        if variant not in VARIANTS:
            valid = ", ".join(repr(v) for v in VARIANTS)
            raise ValueError(f"MovieLens: expected variant to be one of {valid}, got {variant!r}")
        spec = VARIANTS[variant]
        self.root = Path(root).expanduser()
        self.variant = variant
        self.path = self._locate(spec, download)
        raw_users, raw_items, ratings, times = _parse(self.path, spec)
        user_ids, users = np.unique(raw_users, return_inverse=True)
        item_ids, items = np.unique(raw_items, return_inverse=True)
        if verify:
            self._verify(spec, len(ratings), len(user_ids), len(item_ids))
        super().__init__(
            torch.from_numpy(users.reshape(-1)), torch.from_numpy(items.reshape(-1)),
            torch.from_numpy(ratings.astype(np.float32)), torch.from_numpy(times),
            n_users=len(user_ids), n_items=len(item_ids), rating_range=spec.scale)
        self.user_ids = torch.from_numpy(user_ids)
        self.item_ids = torch.from_numpy(item_ids)
        self.user_index = {int(u): n for n, u in enumerate(user_ids)}
        self.item_index = {int(i): n for n, i in enumerate(item_ids)}

    def _verify(self, spec: _Variant, n_ratings: int, n_users: int, n_items: int) -> None:
        """The documented counts, then the checksum of the file (Note [MovieLens counts])."""
        hint = ("the file is truncated, edited or not the official one: delete it and "
                "download again, or pass verify=False to read a modified copy")
        if spec.counts is not None and (n_ratings, n_users, n_items) != spec.counts:
            r, u, i = spec.counts
            raise ValueError(
                f"MovieLens: expected {r:,} ratings by {u:,} users of {i:,} items in "
                f"{self.path} (the {self.variant!r} variant), got {n_ratings:,} ratings by "
                f"{n_users:,} users of {n_items:,} items; {hint}")
        if spec.file_md5 is not None:
            digest = hashlib.md5()
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != spec.file_md5:
                raise ValueError(f"MovieLens: expected {self.path} with md5 {spec.file_md5}, "
                                 f"got md5 {digest.hexdigest()}; {hint}")
            return
        archive = self.root / spec.archive
        member = f"{spec.folder}/{spec.file}"
        if spec.md5 is None or not archive.is_file() or not zipfile.is_zipfile(archive):
            return
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                return
            expected = zf.getinfo(member).CRC
        crc = 0
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                crc = zlib.crc32(chunk, crc)
        if crc != expected:
            raise ValueError(f"MovieLens: expected {self.path} with CRC-32 {expected:08x} (as "
                             f"recorded in {archive}), got {crc:08x}; {hint}")

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
