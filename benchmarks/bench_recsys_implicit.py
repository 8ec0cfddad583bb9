"""Implicit feedback, leave-last-out: lamods' weighted ALS and BPR against the ``implicit`` library.

    python -m benchmarks.bench_recsys_implicit [--root ../shared/data] [--datasets ml100k,ml1m]
        [--seeds 5] [--only SUBSTRING]

(the ML-100K table of issue 16 is ``--datasets ml100k --seeds 5``: about 3 minutes on one
core; ``--datasets ml1m --seeds 3``: about 6 minutes.)

Data: MovieLens-100K with every rating as an interaction (strength 1), and an
ML-1M-sized synthetic set (``synthetic_interactions(6040, 3706, 1000209, rank=16)``: a
planted low-rank taste plus item popularity). Evaluation: each user's latest
interaction is the test item (``leave_last_out``); NDCG@10 and recall@10 over *all*
items the user has not interacted with in training (``ranking_metrics(threshold=None)``,
the same code scores every model: the ``implicit`` library's factors are put into a
``MatrixFactorization``).

Tuning protocol (every row): inside the training part, each user's two latest
interactions are held out again (``leave_last_out(train, n=2)``); each candidate of the row's
grid is fitted on the rest and scored by validation NDCG@10; the best is refitted on the
whole training part with seeds 0, 1, 2 (``--seeds``), timed, and scored on the test
items (NDCG mean +- standard deviation over the seeds: on ML-100K's 943 test users the
seed alone moves NDCG@10 by about 0.003). The two libraries get
grids of the same size over their own parameterisation of the confidence (``implicit``
weighs a positive pair by ``alpha * r``, lamods by ``1 + alpha * r``: for strength 1,
``implicit``'s alpha a equals lamods' a - 1). On ML-100K a second, wider pair of ALS grids
(36 candidates each: larger factors, 10 or 15 sweeps) is centred for each library where
its own validation NDCG peaked in a wider scan on the fit part (``implicit``: plain
lambda 5-15; lamods: ALS-WR's lambda * n_r, ``reg_exponent=1``); EASE
(``lamods.recsys.EASE``, an item-item model, not a factorization) is a further row with its
own lambda grid, timed against ``implicit``'s wide-grid ALS.

Timing: the final fit only, wall clock, both sides on one thread (``torch`` threads 1;
``implicit`` ``num_threads=1`` with BLAS threads limited by ``threadpoolctl``); the final
fits of all rows are interleaved seed by seed. The ratio column divides by the
``implicit`` row of the same method measured in the same run.
``implicit`` is optional (``pip install implicit``; never a lamods dependency): without
it those rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import machine, markdown_table
from lamods.recsys import (
    EASE,
    MatrixFactorization,
    MovieLens,
    Ratings,
    fit_bpr,
    fit_wals,
    leave_last_out,
    parameter_grid,
    ranking_metrics,
    synthetic_interactions,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _scored(train: Ratings, user_factors, item_factors) -> MatrixFactorization:
    """Any library's factors as a lamods model (for one scoring code path)."""
    u = torch.as_tensor(np.asarray(user_factors), dtype=torch.float32)
    v = torch.as_tensor(np.asarray(item_factors), dtype=torch.float32)
    model = MatrixFactorization(train.n_users, train.n_items, u.shape[1], biased=False)
    with torch.no_grad():
        model.user_factors.copy_(u)
        model.item_factors.copy_(v)
    model.set_interactions(train.users, train.items)
    return model


def lamods_wals(train: Ratings, *, factors: int, reg: float, alpha: float,
                reg_exponent: float = 0.0, epochs: int = 15, seed: int = 0
                ) -> MatrixFactorization:
    torch.manual_seed(seed)
    model = MatrixFactorization(train.n_users, train.n_items, factors, biased=False,
                                init_std=0.01)
    fit_wals(model, train, epochs=epochs, reg=reg, alpha=alpha, reg_exponent=reg_exponent)
    return model


def lamods_wals_wr(train: Ratings, **params) -> MatrixFactorization:
    """fit_wals with ALS-WR's frequency-scaled penalty, lambda * n_r (reg_exponent=1)."""
    return lamods_wals(train, reg_exponent=1.0, **params)


def lamods_ease(train: Ratings, *, reg: float, epochs: int = 1, seed: int = 0) -> EASE:
    """EASE (closed form: ``epochs`` and ``seed`` are ignored, kept for the common call)."""
    return EASE(reg=reg).fit(train)


def lamods_bpr(train: Ratings, *, factors: int, lr: float, reg: float = 0.01,
               epochs: int = 10, seed: int = 0) -> MatrixFactorization:
    torch.manual_seed(seed)
    model = MatrixFactorization(train.n_users, train.n_items, factors, init_std=0.01)
    # about 64 steps per epoch: the batch grows with the data (2048 on ML-100K, 16384 on 1M)
    batch = 2 ** round(math.log2(max(len(train) / 64, 1)))
    fit_bpr(model, train, epochs=epochs, lr=lr, reg=reg, batch_size=batch, seed=seed)
    return model


def _csr(train: Ratings):
    import scipy.sparse as sp

    return sp.csr_matrix((train.ratings.numpy().astype(np.float32),
                          (train.users.numpy(), train.items.numpy())),
                         shape=(train.n_users, train.n_items))


def implicit_als(train: Ratings, *, factors: int, reg: float, alpha: float,
                 epochs: int = 15, seed: int = 0) -> MatrixFactorization:
    from implicit.cpu.als import AlternatingLeastSquares

    m = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                iterations=epochs, num_threads=1, random_state=seed)
    m.fit(_csr(train), show_progress=False)
    return _scored(train, m.user_factors, m.item_factors)


def implicit_bpr(train: Ratings, *, factors: int, lr: float, reg: float = 0.01,
                 epochs: int = 100, seed: int = 0) -> MatrixFactorization:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    m = BayesianPersonalizedRanking(factors=factors, learning_rate=lr, regularization=reg,
                                    iterations=epochs, num_threads=1, random_state=seed)
    m.fit(_csr(train), show_progress=False)
    return _scored(train, m.user_factors, m.item_factors)


#: rows: (name, fit, grid, reference row for the time ratio, datasets it runs on). Grids of
#: one method have the same size for both libraries; each is centred where that library's
#: validation NDCG (never the test items) peaked in a wider scan on the ML-100K fit part.
#: The ML-1M-sized rows keep the first, smaller grids (``implicit`` at k = 192 on 1M
#: interactions takes ~20 s a fit).
ROWS: list[tuple[str, Callable, dict, str, tuple[str, ...]]] = [
    ("implicit ALS (CG)", implicit_als,
     {"factors": [32, 64], "reg": [0.05], "alpha": [1.0, 5.0, 10.0]}, "implicit ALS (CG)",
     ("ml100k", "ml1m")),
    ("lamods fit_wals (CG)", lamods_wals,
     {"factors": [32, 64], "reg": [0.05], "alpha": [0.0, 4.0, 9.0]}, "implicit ALS (CG)",
     ("ml100k", "ml1m")),
    ("implicit ALS (CG), wide grid", implicit_als,
     {"factors": [64, 128, 192], "reg": [5.0, 10.0, 15.0], "alpha": [1.0, 2.0],
      "epochs": [10, 15]},
     "implicit ALS (CG), wide grid", ("ml100k",)),
    ("lamods fit_wals (ALS-WR reg, reg_exponent=1), wide grid", lamods_wals_wr,
     {"factors": [64, 128, 192], "reg": [0.05, 0.07, 0.1], "alpha": [0.0, 0.5],
      "epochs": [10, 15]},
     "implicit ALS (CG), wide grid", ("ml100k",)),
    ("lamods EASE (item-item, closed form)", lamods_ease,
     {"reg": [30.0, 100.0, 300.0, 1000.0]}, "implicit ALS (CG), wide grid", ("ml100k",)),
    ("implicit BPR", implicit_bpr,
     {"factors": [64], "lr": [0.01, 0.03], "epochs": [50, 100]}, "implicit BPR",
     ("ml100k", "ml1m")),
    ("lamods fit_bpr (Adam, ~64 batches per epoch)", lamods_bpr,
     {"factors": [64], "lr": [0.005, 0.01], "epochs": [10, 30]}, "implicit BPR",
     ("ml100k", "ml1m")),
]


DATA_NAMES = {"ml100k": "MovieLens-100K (ratings as interactions)",
              "ml1m": "ML-1M-sized synthetic (6,040 x 3,706, 1M)"}


def datasets(root: str, which: list[str]) -> dict[str, Ratings]:
    out = {}
    if "ml100k" in which:
        ml = MovieLens(root, "100k", download=False)
        out["ml100k"] = Ratings(
            ml.users, ml.items, torch.ones(len(ml)), ml.timestamps, n_users=ml.n_users,
            n_items=ml.n_items, rating_range=(1.0, 1.0))
    if "ml1m" in which:
        out["ml1m"] = synthetic_interactions(
            6040, 3706, 1_000_209, 16, seed=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--datasets", default="ml100k,ml1m")
    parser.add_argument("--only", default="", help="substring: run only matching rows")
    parser.add_argument("--seeds", type=int, default=3,
                        help="final fits per row (seeds 0..n-1): NDCG mean +- std, mean time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    has = _has_implicit()
    if has:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)   # implicit's BLAS calls on one thread, as torch's
    else:
        print("implicit is not installed: its rows are skipped (pip install implicit to "
              "compare; it is never a lamods dependency).")
    all_rows = [r for r in ROWS if (not args.only or args.only in r[0])
                and (has or not r[0].startswith("implicit "))]
    table = []
    for key, data in datasets(args.root, args.datasets.split(",")).items():
        dname = DATA_NAMES[key]
        rows = [r for r in all_rows if key in r[4]]
        train, test = leave_last_out(data)
        fit_part, val = leave_last_out(train, n=2)
        # warm-up: torch's and implicit's one-time start-up is no part of a fit
        for _, fit, grid, _, _ in rows:
            fit(fit_part.subset(torch.arange(min(5000, len(fit_part)))),
                **{**parameter_grid(grid)[0], "epochs": 1})
        chosen = {}
        for name, fit, grid, _, _ in rows:
            start = time.perf_counter()
            scores = []
            for params in parameter_grid(grid):
                m = fit(fit_part, **params)
                scores.append((ranking_metrics(m, val, k=10, threshold=None)["ndcg@10"],
                               params))
            chosen[name] = (max(scores, key=lambda s: s[0])[1], time.perf_counter() - start)
            print(f"{dname}: {name}: chose {chosen[name][0]} by validation NDCG@10 "
                  f"{max(s[0] for s in scores):.4f} (tuning {chosen[name][1]:.1f} s)",
                  flush=True)
        # final fits interleaved: seed s of every row, then seed s + 1, so that a slow patch
        # of the machine hits every row alike and the time ratios stay fair
        finals: dict[str, list[tuple[float, float, float]]] = {r[0]: [] for r in rows}
        for seed in range(args.seeds):
            for name, fit, _, _, _ in rows:
                start = time.perf_counter()
                model = fit(train, **chosen[name][0], seed=seed)
                seconds = time.perf_counter() - start
                out = ranking_metrics(model, test, k=10, threshold=None)
                finals[name].append((out["ndcg@10"], out["recall@10"], seconds))
        results = {name: float(np.mean([f[2] for f in runs])) for name, runs in finals.items()}
        for name, _, _, ref, _ in rows:
            ndcg = np.array([f[0] for f in finals[name]])
            recall = np.mean([f[1] for f in finals[name]])
            seconds = results[name]
            best, tune_s = chosen[name]
            print(f"{dname}: {name} {best}: NDCG@10 {ndcg.mean():.4f} +- {ndcg.std():.4f} "
                  f"(seeds {np.round(ndcg, 4).tolist()}) recall@10 {recall:.4f} fit "
                  f"{seconds:.2f} s", flush=True)
            table.append([dname, name, str(best), f"{ndcg.mean():.4f} +- {ndcg.std():.4f}",
                          f"{recall:.4f}", f"{seconds:.2f}",
                          f"{seconds / results[ref]:.2f}" if ref in results else "n/a",
                          f"{tune_s:.1f}"])
    print("\nLeave-last-out (each user's latest interaction), NDCG@10 / recall@10 over all "
          "unseen items; hyperparameters by validation inside the training part; one "
          "thread each.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(["data", "model", "chosen", "NDCG@10", "recall@10", "fit s",
                          "fit time / implicit's", "tuning s"], table))


def _has_implicit() -> bool:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
