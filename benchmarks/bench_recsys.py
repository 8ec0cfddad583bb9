"""5-fold cross-validation on MovieLens-100K: every lamods rating model, tuned inside the folds.

    python -m benchmarks.bench_recsys [--root ../shared/data] [--folds 5] [--plot front.png]

Folds: ``kfold_indices(100000, 5, seed=0)`` (shuffled), the same for every row.

Tuning protocol (the rows marked "tuned"): in each fold the *training* part is split
90/10 (``random_split``, seed 0); every candidate of the row's grid is fitted on the 90%
and scored by RMSE on the 10% (:func:`lamods.recsys.select_by_validation`); the best is
refitted on the whole training part and scored once on the test fold. The test fold is
never seen before that. The other rows have fixed settings (the default experiment's, or
the Bayesian models' defaults, whose priors are learned by the sampler). Tuning seconds
are reported apart from the fit seconds of the final model.

Each fit is timed once per fold (wall clock, ``time.perf_counter``), rows alternating
fold by fold so a slow patch of the machine hits all of them. Torch runs single-threaded
by default (``--threads``). The ratio column divides by the fit time of the first row
(the default experiment's SGD model) measured in the same run: on a busy machine the
absolute seconds are pessimistic, the ratios less so. Before the folds every row is fitted
once, untimed, on 2,000 ratings (torch's one-time start-up is no part of a fit).

Surprise's SVD / SVD++ (``pip install scikit-surprise``; optional, skipped with a message
when missing) run with their defaults on identical folds (``Dataset.load_from_folds``).

``--plot PATH`` draws RMSE against fit seconds for every row (the Pareto front marked)
to ``PATH`` (needs matplotlib; never commit the image).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks._timing import machine, markdown_table
from lamods.recsys import (
    MatrixFactorization,
    MovieLens,
    Ratings,
    evaluate,
    fit_als,
    fit_gibbs,
    fit_sgd,
    kfold_indices,
    select_by_validation,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _mf(train: Ratings, k: int, implicit: bool = False) -> MatrixFactorization:
    torch.manual_seed(0)
    return MatrixFactorization(train.n_users, train.n_items, k, implicit=implicit,
                               rating_range=train.rating_range)


def sgd(train: Ratings, *, k: int = 50, implicit: bool = False, **fit) -> MatrixFactorization:
    model = _mf(train, k, implicit)
    fit_sgd(model, train, seed=0, **fit)
    return model


def als(train: Ratings, *, k: int = 50, **fit) -> MatrixFactorization:
    model = _mf(train, k)
    fit_als(model, train, **fit)
    return model


def gibbs(train: Ratings, *, k: int = 10, **fit) -> MatrixFactorization:
    model, _ = fit_gibbs(train, k, seed=0, dtype=torch.float32, **fit)
    return model


@dataclass
class Row:
    fit: Callable[..., MatrixFactorization]
    params: dict                      # fixed settings
    grid: dict | None = None          # tuned inside each fold when given
    results: list[tuple[float, float, float, float]] = field(default_factory=list)


#: Every candidate measured, winners and losers. SGD settings of the first row are the
#: default experiment's (+exp=mf_movielens).
ROWS: dict[str, Row] = {
    "MF SGD (Adam, k=50), the default experiment": Row(
        sgd, dict(k=50, epochs=10, batch_size=4096, lr=0.03, lr_decay=0.8, reg=0.1)),
    "MF SGD (Adam, k=100, per-example L2), tuned reg": Row(
        sgd, dict(k=100, epochs=15, batch_size=2048, lr=0.01, lr_decay=0.9, reg_bias=0.005),
        grid={"reg": [0.08, 0.12, 0.16]}),
    "SVD++ SGD (implicit term from all rated items, k=20)": Row(
        sgd, dict(k=20, implicit=True, epochs=20, batch_size=8192, lr=0.01, reg=0.1)),
    "ALS-WR (frequency-scaled L2, k=50), tuned reg": Row(
        als, dict(k=50, epochs=8), grid={"reg": [0.07, 0.1, 0.14]}),
    "BPMF Gibbs (Normal-Wishart, k=10, 50 draws)": Row(
        gibbs, dict(k=10, samples=50, burn_in=10)),
    "Bayesian SVD++ flipped (BPMF + implicit side features, k=10, 50 draws), tuned": Row(
        gibbs, dict(k=10, samples=50, burn_in=10, implicit=True),
        grid={"implicit_reg": [0.3, 1.0, 3.0]}),
    "Bayesian SVD++ flipped (k=10, 30 draws), tuned": Row(
        gibbs, dict(k=10, samples=30, burn_in=10, implicit=True),
        grid={"implicit_reg": [0.3, 1.0, 3.0]}),
    "Bayesian SVD++ flipped (k=10, 100 draws, implicit_reg=1)": Row(
        gibbs, dict(k=10, samples=100, burn_in=10, implicit=True, implicit_reg=1.0)),
}


def _surprise_folds(data, folds, tmp: Path):
    """Surprise trainsets/testsets built from our fold indices (raw MovieLens ids)."""
    from surprise import Dataset, Reader
    from surprise.model_selection import PredefinedKFold

    users = data.user_ids[data.users].tolist()
    items = data.item_ids[data.items].tolist()
    ratings = data.ratings.tolist()
    pairs = []
    for f, (train_idx, test_idx) in enumerate(folds):
        names = []
        for part, idx in (("train", train_idx), ("test", test_idx)):
            path = tmp / f"fold{f}.{part}"
            path.write_text("".join(f"{users[n]}\t{items[n]}\t{ratings[n]}\n"
                                    for n in idx.tolist()))
            names.append(str(path))
        pairs.append(tuple(names))
    reader = Reader(line_format="user item rating", sep="\t", rating_scale=data.rating_range)
    dataset = Dataset.load_from_folds(pairs, reader=reader)
    return list(PredefinedKFold().split(dataset))


def pareto(points: list[tuple[str, float, float]]) -> set[str]:
    """Names of the rows no other row beats on both RMSE and time (lower is better)."""
    return {n for n, r, t in points
            if not any((r2 <= r and t2 <= t) and (r2 < r or t2 < t) for _, r2, t2 in points)}


def plot(points: list[tuple[str, float, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto(points)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r, t in points:
        ax.scatter(t, r, color="C3" if name in front else "C0", zorder=3)
        ax.annotate(name[:40], (t, r), fontsize=7, xytext=(4, 2), textcoords="offset points")
    line = sorted((t, r) for n, r, t in points if n in front)
    ax.plot([t for t, _ in line], [r for _, r in line], color="C3", lw=1, label="Pareto front")
    ax.axhline(0.895, color="grey", ls="--", lw=0.8, label="RMSE 0.895")
    ax.axvline(2.0, color="grey", ls=":", lw=0.8, label="2 s / fold")
    ax.set_xscale("log")
    ax.set_xlabel("fit seconds per fold (log)")
    ax.set_ylabel("test RMSE (5-fold mean)")
    ax.set_title("MovieLens-100K, shuffled 5-fold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"Pareto plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--folds", type=int, default=5, help="folds to run (of 5)")
    parser.add_argument("--svdpp-folds", type=int, default=1,
                        help="folds for Surprise's SVD++ (slow: minutes per fold)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="substring: run only matching rows")
    parser.add_argument("--plot", default="", help="write the RMSE / time plot here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = MovieLens(args.root, "100k", download=False)
    folds = kfold_indices(len(data), 5, seed=0)[: args.folds]
    rows = {n: r for n, r in ROWS.items() if not args.only or args.only in n}
    try:
        import surprise
    except ImportError:
        surprise = None
        print("scikit-surprise is not installed: Surprise's rows are skipped "
              "(pip install scikit-surprise to compare).")

    warm = data.subset(folds[0][0][:2000])
    for row in rows.values():
        quick = {**row.params, **({"epochs": 1} if "epochs" in row.params else {}),
                 **({"samples": 2, "burn_in": 1} if "samples" in row.params else {})}
        row.fit(warm, **quick)

    extra: dict[str, list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        s_folds = _surprise_folds(data, folds, Path(tmp)) if surprise else []
        for f, (train_idx, test_idx) in enumerate(folds):
            train, test = data.subset(train_idx), data.subset(test_idx)
            order = list(rows.items())
            if f % 2:
                order.reverse()
            for name, row in order:
                tune_s, chosen = 0.0, {}
                if row.grid:
                    def candidate(ratings, row=row, **p):
                        return row.fit(ratings, **row.params, **p)

                    sel = select_by_validation(candidate, train, row.grid, val_fraction=0.1,
                                               seed=0)
                    tune_s, chosen = sel.seconds, sel.best
                start = time.perf_counter()
                model = row.fit(train, **row.params, **chosen)
                seconds = time.perf_counter() - start
                m = evaluate(model, test)
                row.results.append((m["rmse"], m["mae"], seconds, tune_s))
                print(f"fold {f + 1}: {name}: RMSE {m['rmse']:.4f} MAE {m['mae']:.4f} "
                      f"fit {seconds:.2f} s" + (f" (tuned {chosen} in {tune_s:.1f} s)"
                                                if row.grid else ""), flush=True)
            if surprise:
                trainset, testset = s_folds[f]
                algos = [("Surprise SVD (defaults)", surprise.SVD)]
                if f < args.svdpp_folds:
                    algos.append(("Surprise SVD++ (defaults)", surprise.SVDpp))
                for name, cls in algos:
                    if args.only and args.only not in name:
                        continue
                    algo = cls(random_state=0)
                    start = time.perf_counter()
                    algo.fit(trainset)
                    seconds = time.perf_counter() - start
                    preds = algo.test(testset)
                    rmse = surprise.accuracy.rmse(preds, verbose=False)
                    mae = surprise.accuracy.mae(preds, verbose=False)
                    extra.setdefault(name, []).append((rmse, mae, seconds, 0.0))
                    print(f"fold {f + 1}: {name}: RMSE {rmse:.4f} MAE {mae:.4f} "
                          f"fit {seconds:.2f} s", flush=True)

    results = {n: r.results for n, r in rows.items()} | extra
    first = next(iter(results.values()))
    ref = statistics.mean(r[2] for r in first)
    points, table = [], []
    for name, rs in results.items():
        rmse = statistics.mean(r[0] for r in rs)
        fit = statistics.mean(r[2] for r in rs)
        tune = statistics.mean(r[3] for r in rs)
        points.append((name, rmse, fit))
        table.append([name, len(rs), f"{rmse:.4f}", f"{statistics.mean(r[1] for r in rs):.4f}",
                      f"{fit:.2f}", f"{fit / ref:.2f}", f"{tune:.1f}" if tune else "-"])
    front = pareto(points)
    for row in table:
        row.append("yes" if row[0] in front else "")
    print(f"\nMovieLens-100K, shuffled 5-fold CV (seed 0), identical folds for all rows; mean "
          f"over the folds run. torch threads: {args.threads}. Ratio: fit time over the first "
          "row's, same run.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(["model", "folds", "RMSE", "MAE", "fit s / fold",
                          "fit time / first row", "tuning s / fold", "Pareto"], table))
    if args.plot:
        plot(points, args.plot)


if __name__ == "__main__":
    main()
