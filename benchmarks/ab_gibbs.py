"""A/B of one Gibbs fit on MovieLens-100K: this checkout's sampler against a git revision's.

    python -m benchmarks.ab_gibbs [--root ../shared/data] [--rev 03f7c5e] [--repeats 7]

The revision's ``lamods/recsys/_rows.py`` and ``bayes.py`` are read with ``git show`` and
imported beside ours (the rest of lamods is shared), so both run in one process, alternately
(:func:`benchmarks._timing.time_pair`). The fit is the 5-fold table's tuned row at
``implicit_reg=1`` (k=10, 50 draws, 10 burn-in, float32) on fold 1's training part; the table
also gives the largest difference of the two models' test predictions (same seed: the same
draws, to rounding).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks._timing import machine, markdown_table, time_pair
from lamods.recsys import MovieLens, evaluate, fit_gibbs, kfold_indices

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def _load_old(rev: str, tmp: Path):
    """The revision's fit_gibbs, importing its own _rows (as ``_ab_rows``)."""
    for name, path in (("_ab_rows", "lamods/recsys/_rows.py"),
                       ("_ab_bayes", "lamods/recsys/bayes.py")):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        text = text.replace("from lamods.recsys._rows import", "from _ab_rows import")
        file = tmp / f"{name}.py"
        file.write_text(text)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules["_ab_bayes"].fit_gibbs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--rev", default="03f7c5e", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = MovieLens(args.root, "100k", download=False)
    train_idx, test_idx = kfold_indices(len(data), 5, seed=0)[0]
    train, test = data.subset(train_idx), data.subset(test_idx)
    opts = dict(samples=50, burn_in=10, implicit=True, implicit_reg=1.0, seed=0,
                dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        old_fit = _load_old(args.rev, Path(tmp))
        ours, _ = fit_gibbs(train, 10, **opts)
        theirs, _ = old_fit(train, 10, **opts)
        diff = float((ours.predict(test.users, test.items)
                      - theirs.predict(test.users, test.items)).abs().max())
        t_ours, t_old = time_pair(lambda: fit_gibbs(train, 10, **opts),
                                  lambda: old_fit(train, 10, **opts), device="cpu",
                                  repeats=args.repeats, warmup=1)
    print(f"MovieLens-100K fold 1 of 5, fit_gibbs(k=10, 50 draws, burn-in 10, implicit, "
          f"float32), median of {args.repeats} alternating fits; torch threads {args.threads}")
    print(f"Machine: {machine()}\n")
    print(markdown_table(
        ["code", "fit s", "ratio", "test RMSE", "max |prediction difference|"],
        [["this checkout", f"{t_ours:.3f}", f"{t_ours / t_old:.2f}",
          f"{evaluate(ours, test)['rmse']:.4f}", f"{diff:.1e}"],
         [f"git {args.rev}", f"{t_old:.3f}", "1.00", f"{evaluate(theirs, test)['rmse']:.4f}",
          ""]]))


if __name__ == "__main__":
    main()
