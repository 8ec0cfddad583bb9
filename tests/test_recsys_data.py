"""MovieLens reading, splits and synthetic ratings (lamods.recsys)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path

import pytest
import torch

from lamods.recsys import (
    VARIANTS,
    MovieLens,
    Ratings,
    kfold,
    kfold_indices,
    leave_last_out,
    random_split,
    synthetic_ratings,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n" \
         "196\t377\t5\t881250950\n"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared, oversubscribed CPU more threads were ~10x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write(root: Path, folder: str, name: str, text: str) -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    path = root / folder / name
    path.write_text(text)
    return path


def test_reads_u_data_and_maps_ids(tmp_path: Path) -> None:
    _write(tmp_path, "ml-100k", "u.data", U_DATA)
    data = MovieLens(tmp_path, "100k", download=False, verify=False)
    assert (data.n_users, data.n_items, len(data)) == (3, 3, 4)
    assert data.user_ids.tolist() == [22, 186, 196]
    assert data.item_ids.tolist() == [242, 302, 377]
    assert data.users.tolist() == [2, 1, 0, 2]
    assert data.items.tolist() == [0, 1, 2, 2]
    assert data.ratings.tolist() == [3.0, 3.0, 1.0, 5.0]
    assert data.timestamps[0].item() == 881250949
    assert data.user_index[196] == 2 and data.item_index[377] == 2
    assert data.rating_range == (1.0, 5.0)
    assert data.ratings.dtype == torch.float32 and data.users.dtype == torch.int64
    user, item, rating = data[3]
    assert (int(user), int(item), float(rating)) == (2, 2, 5.0)


def test_reads_flat_folder(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text(U_DATA)
    assert len(MovieLens(tmp_path, download=False, verify=False)) == 4


def test_reads_ratings_dat_and_csv(tmp_path: Path) -> None:
    _write(tmp_path, "ml-1m", "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    data = MovieLens(tmp_path, "1m", download=False, verify=False)
    assert data.ratings.tolist() == [5.0, 3.0] and data.n_users == 2
    _write(tmp_path, "ml-latest-small", "ratings.csv",
           "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    data = MovieLens(tmp_path, "latest-small", download=False, verify=False)
    assert data.ratings.tolist() == [4.0, 3.5] and data.rating_range == (0.5, 5.0)


def test_unknown_variant_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(
            "MovieLens: expected variant to be one of '100k', '1m', '10m', '20m', '25m', "
            "'latest-small', got '2k'")):
        MovieLens(tmp_path, "2k", download=False)


def test_missing_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Dataset not found: use download=True"):
        MovieLens(tmp_path, "100k", download=False)


# -- strict parsing (issue 13): each corruption names the file, the line and the fault ---
def _bad(tmp_path: Path, text: str, variant: str = "100k") -> str:
    spec = VARIANTS[variant]
    path = _write(tmp_path, spec.folder, spec.file, text)
    with pytest.raises(ValueError) as info:
        MovieLens(tmp_path, variant, download=False, verify=False)
    message = str(info.value)
    assert message.startswith(f"MovieLens: in {path}, line "), message
    return message


def test_float_id_is_an_error_not_truncated(tmp_path: Path) -> None:
    msg = _bad(tmp_path, U_DATA + "196.7\t242\t3\t881250949\n")
    assert "line 5 ('196.7\\t242\\t3\\t881250949'): expected the user id as a non-negative " \
           "integer, got '196.7'" in msg
    msg = _bad(tmp_path, "196\t24e2\t3\t881250949\n")
    assert "line 1" in msg and "expected the item id as a non-negative integer, got '24e2'" \
        in msg
    msg = _bad(tmp_path, "196\t242\t3\t-881250949\n")
    assert "expected the timestamp as a non-negative integer, got '-881250949'" in msg


def test_huge_ids_are_an_error_and_large_ones_stay_distinct(tmp_path: Path) -> None:
    msg = _bad(tmp_path, U_DATA + "99999999999999999999\t242\t3\t881250949\n")
    assert "line 5" in msg and "expected the user id below 2**63, got 99999999999999999999" \
        in msg
    # ids that a float64 parse would merge (2**53 and 2**53 + 1) are two users
    big = 2 ** 53
    _write(tmp_path, "ml-100k", "u.data", f"{big}\t1\t3\t0\n{big + 1}\t1\t4\t0\n")
    data = MovieLens(tmp_path, download=False, verify=False)
    assert data.n_users == 2 and data.user_ids.tolist() == [big, big + 1]


def test_missing_field_then_extra_field_is_not_shifted(tmp_path: Path) -> None:
    lines = U_DATA.splitlines(keepends=True)
    text = lines[0] + "186\t302\t891717742\n" + "22\t377\t1\t878887116\t9\n" + lines[3]
    msg = _bad(tmp_path, text)
    assert "line 2 ('186\\t302\\t891717742'): expected 4 fields (user, item, rating, " \
           "timestamp) separated by '\\t', got 3 fields" in msg


@pytest.mark.parametrize("bad_line, shown, fault", [
    ("22\t377\t1\n", "line 3", "got 3 fields"),
    ("22\t377\tfive\t878887116\n", "line 3", "expected a rating in [1.0, 5.0] in steps of 1.0, "
                                             "got 'five'"),
    ("22\t377\t7\t878887116\n", "line 3", "got '7'"),
    ("22\t377\t3.5\t878887116\n", "line 3", "got '3.5'"),
    ("22\t377\tnan\t878887116\n", "line 3", "got 'nan'"),
    ("22 \t377\t1\t878887116\n", "line 3", "expected the user id as a non-negative integer, "
                                           "got '22 '"),
    ("\n", "line 3", "expected a rating, got a blank line inside the file"),
])
def test_corrupt_file_names_the_line(tmp_path: Path, bad_line: str, shown: str,
                                     fault: str) -> None:
    lines = U_DATA.splitlines(keepends=True)
    msg = _bad(tmp_path, "".join(lines[:2]) + bad_line + lines[3])
    assert shown in msg and fault in msg, msg


def test_other_formats_are_strict_too(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "1::1193::5::978300760\n2::661::978302109\n", "1m")
    assert "line 2" in msg and "separated by '::', got 3 fields" in msg
    msg = _bad(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.25,9\n",
               "latest-small")
    assert "line 3" in msg and "expected a rating in [0.5, 5.0] in steps of 0.5, got '3.25'" \
        in msg


def test_trailing_blank_lines_are_fine(tmp_path: Path) -> None:
    _write(tmp_path, "ml-100k", "u.data", U_DATA + "\n\n")
    assert len(MovieLens(tmp_path, download=False, verify=False)) == 4


def test_empty_file(tmp_path: Path) -> None:
    _write(tmp_path, "ml-100k", "u.data", "")
    with pytest.raises(ValueError, match="expected ratings in .*got an empty file"):
        MovieLens(tmp_path, download=False)


def _full_u_data(seed: int = 0) -> str:
    """A u.data-format file with ML-100K's documented counts (100,000 / 943 / 1,682)."""
    g = torch.Generator().manual_seed(seed)
    users = torch.cat([torch.arange(1, 944), torch.randint(1, 944, (100_000 - 943,),
                                                             generator=g)])
    items = torch.cat([torch.arange(1, 944), torch.randint(1, 1683, (100_000 - 943,),
                                                             generator=g)])
    items[943:943 + 739] = torch.arange(944, 1683)
    ratings = torch.randint(1, 6, (100_000,), generator=g)
    return "".join(f"{u}\t{i}\t{r}\t88125{n:04d}\n" for n, (u, i, r) in enumerate(
        zip(users.tolist(), items.tolist(), ratings.tolist())))


def test_counts_and_checksum_are_verified(tmp_path: Path) -> None:
    # a file cut at a line boundary: clean lines, too few ratings
    _write(tmp_path, "ml-100k", "u.data", U_DATA)
    with pytest.raises(ValueError, match=re.escape(
            "MovieLens: expected 100,000 ratings by 943 users of 1,682 items in "
            f"{tmp_path / 'ml-100k' / 'u.data'} (the '100k' variant), got 4 ratings by 3 "
            "users of 3 items; the file is truncated, edited or not the official one")):
        MovieLens(tmp_path, download=False)
    # the documented counts, but not GroupLens' file: the md5 catches it
    _write(tmp_path, "ml-100k", "u.data", _full_u_data())
    with pytest.raises(ValueError, match="MovieLens: expected .*u.data with md5 "
                                         "6e47046882bad158b0efbb84cd5cb987, got md5 [0-9a-f]{32}"):
        MovieLens(tmp_path, download=False)
    data = MovieLens(tmp_path, download=False, verify=False)
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1_682)


def test_extracted_file_is_checked_against_the_archive_crc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "1::1193::5::978300760\n2::661::3::978302109\n"
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", text)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(VARIANTS, "1m", dataclasses.replace(VARIANTS["1m"], md5=md5,
                                                           counts=(2, 2, 2)))
    data = MovieLens(tmp_path, "1m", download=False)   # extracted from the archive, checked
    assert len(data) == 2
    _write(tmp_path, "ml-1m", "ratings.dat", text.replace("::3::", "::4::"))  # edited copy
    with pytest.raises(ValueError, match=r"MovieLens: expected .*ratings.dat with CRC-32 "
                                         r"[0-9a-f]{8} \(as recorded in .*ml-1m.zip\), got"):
        MovieLens(tmp_path, "1m", download=False)
    assert len(MovieLens(tmp_path, "1m", download=False, verify=False)) == 2


def test_out_of_scale_ratings(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "1\t2\t7\t0\n")
    assert "expected a rating in [1.0, 5.0] in steps of 1.0, got '7'" in msg


def test_corrupt_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.zip").write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="md5 0e33842e24a9c977be4e0107933c0723"):
        MovieLens(tmp_path, download=False)


def test_archive_with_matching_checksum_is_extracted(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(VARIANTS, "100k", dataclasses.replace(VARIANTS["100k"], md5=md5))
    data = MovieLens(tmp_path, download=False, verify=False)
    assert len(data) == 4 and (tmp_path / "ml-100k" / "u.data").is_file()


def test_real_ml100k() -> None:
    if not (SHARED_DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not present at {SHARED_DATA / 'ml-100k' / 'u.data'}")
    data = MovieLens(SHARED_DATA, download=False)
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert set(data.ratings.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


# -- Ratings -----------------------------------------------------------------------------
def test_ratings_checks() -> None:
    with pytest.raises(ValueError, match=r"Ratings: expected users, items, ratings .* "
                                         r"got lengths \[2, 3, 2\]"):
        Ratings(torch.tensor([0, 1]), torch.tensor([0, 1, 2]), torch.ones(2))
    with pytest.raises(IndexError, match=re.escape("Ratings: expected items in [0, 2), got 2")):
        Ratings(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.ones(2), n_items=2)
    with pytest.raises(TypeError, match="Ratings: expected users of an integer dtype"):
        Ratings(torch.tensor([0.0]), torch.tensor([0]), torch.ones(1))
    with pytest.raises(ValueError, match="Ratings: expected a finite ratings tensor, got 1 NaN "
                                         "or infinite entries"):
        Ratings(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([4.0, float("nan")]))


# -- splits ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, k", [(100, 5), (103, 5), (7, 7)])
def test_kfold_partitions(n: int, k: int) -> None:
    folds = kfold_indices(n, k, seed=3)
    tests = torch.cat([test for _, test in folds])
    assert tests.sort().values.tolist() == list(range(n))   # each rating in exactly one fold
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, test in folds:
        assert len(train) + len(test) == n
        assert not torch.isin(train, test).any()
    again = kfold_indices(n, k, seed=3)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, again))
    other = kfold_indices(n, k, seed=4)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(folds, other))


def test_kfold_on_ratings_and_bad_k() -> None:
    data = synthetic_ratings(20, 15, 2, density=0.5, seed=0).data
    parts = kfold(data, 4, seed=0)
    assert sum(len(test) for _, test in parts) == len(data)
    assert all(tr.n_users == 20 and te.n_items == 15 for tr, te in parts)
    with pytest.raises(ValueError, match=r"kfold: expected k to be an int in \[2, 10\]"):
        kfold_indices(10, 11)


def test_random_split() -> None:
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    train, val, test = random_split(data, (0.8, 0.1, 0.1), seed=0)
    assert len(train) + len(val) + len(test) == len(data)
    assert len(train) == int(0.8 * len(data))
    key = lambda d: set((d.users * 100 + d.items).tolist())  # noqa: E731
    assert not key(train) & key(test) and not key(val) & key(test)
    with pytest.raises(ValueError, match="random_split: expected at least two positive ratios"):
        random_split(data, (1.0,))


def test_leave_last_out_takes_each_users_latest() -> None:
    g = torch.Generator().manual_seed(0)
    n = 200
    users = torch.randint(0, 12, (n,), generator=g)
    items = torch.randint(0, 30, (n,), generator=g)
    times = torch.randperm(n, generator=g)
    data = Ratings(users, items, torch.ones(n), times, n_users=13, n_items=30)
    train, test = leave_last_out(data, n=2)
    assert len(train) + len(test) == n
    for u in range(13):
        t_user = times[users == u]
        if len(t_user) > 2:
            assert sorted(test.timestamps[test.users == u].tolist()) == sorted(
                t_user.sort().values[-2:].tolist())
            assert train.timestamps[train.users == u].max() < test.timestamps[
                test.users == u].min()
        else:
            assert (test.users == u).sum() == 0


def test_synthetic_is_reproducible() -> None:
    a = synthetic_ratings(30, 20, 3, density=0.3, noise=0.2, seed=5)
    b = synthetic_ratings(30, 20, 3, density=0.3, noise=0.2, seed=5)
    assert torch.equal(a.data.ratings, b.data.ratings)
    assert abs(float((a.data.ratings - a.clean).std()) - 0.2) < 0.05
