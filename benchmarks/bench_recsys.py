"""5-fold cross-validation on MovieLens-100K: our solvers against Surprise's SVD and SVD++.

    python -m benchmarks.bench_recsys [--root ../shared/data] [--folds 5] [--svdpp-folds 1]

The folds are ``kfold_indices(100000, 5, seed=0)`` (shuffled); the same index sets
are written as train/test files and given to Surprise through
``Dataset.load_from_folds``, so both sides see identical folds. Each fit is
timed once per fold (wall clock, ``time.perf_counter``), ours and Surprise's
alternating fold by fold so a slow patch of the machine hits both. Torch runs
single-threaded by default (``--threads``), as Surprise does: on a shared,
oversubscribed CPU more torch threads were much slower here.

The SGD rows use the hand-written gradient (``fit_sgd(backward="auto")``, Note
[hand-written gradient] in ``lamods/recsys/train.py``) except the one marked autograd,
kept to show what it saves. Before the folds, every configuration is fitted once, untimed,
on 2,000 ratings: torch pays a one-time start-up (about a second here: first calls of
``torch.unique`` and the optimisers) that is no part of a fit; Surprise has none.

Hyperparameters are fixed in ``CONFIGS``: the SGD ones were chosen on a 90/10
validation split inside fold 1's training part; the ALS and Gibbs ones on a
random 80/20 holdout of the whole data set (seed 0), which overlaps the CV test
folds (so those two rows are tuned on data that includes test ratings).
Surprise runs with its defaults (``random_state=0``); scikit-surprise is
optional: without it those rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._timing import machine, markdown_table
from lamods.recsys import (
    MatrixFactorization,
    MovieLens,
    evaluate,
    fit_als,
    fit_gibbs,
    fit_sgd,
    kfold_indices,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CONFIGS = {
    "MF SGD (Adam, k=50, batch 4096, 5 epochs, lr decay 0.8)": dict(
        solver="sgd", n_factors=50,
        fit=dict(epochs=5, batch_size=4096, lr=0.03, lr_decay=0.8, reg=0.1)),
    "MF SGD (Adam, k=50, batch 16384)": dict(
        solver="sgd", n_factors=50, fit=dict(epochs=15, batch_size=16384, lr=0.02, reg=0.1)),
    "MF SGD (Adam, k=50, batch 16384), autograd backward": dict(
        solver="sgd", n_factors=50,
        fit=dict(epochs=15, batch_size=16384, lr=0.02, reg=0.1, backward="autograd")),
    "MF SGD (Adam, k=100, batch 4096)": dict(
        solver="sgd", n_factors=100, fit=dict(epochs=30, batch_size=4096, lr=0.01, reg=0.1)),
    "SVD++-style implicit SGD (k=20)": dict(
        solver="sgd", n_factors=20, implicit=True,
        fit=dict(epochs=20, batch_size=8192, lr=0.01, reg=0.1)),
    "ALS (k=50, weighted L2 0.1)": dict(solver="als", n_factors=50,
                                        fit=dict(epochs=10, reg=0.1)),
    "Bayesian MF, Gibbs (k=10, 200 draws)": dict(solver="gibbs", n_factors=10,
                                                 fit=dict(samples=200, burn_in=10)),
}


def _fit_ours(cfg: dict, data, train) -> MatrixFactorization:
    if cfg["solver"] == "gibbs":
        model, _ = fit_gibbs(train, cfg["n_factors"], seed=0, dtype=torch.float32,
                             **cfg["fit"])
        return model
    torch.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, cfg["n_factors"],
                                implicit=cfg.get("implicit", False),
                                rating_range=data.rating_range)
    if cfg["solver"] == "sgd":
        fit_sgd(model, train, seed=0, **cfg["fit"])
    else:
        fit_als(model, train, **cfg["fit"])
    return model


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--folds", type=int, default=5, help="folds to run (of 5)")
    parser.add_argument("--svdpp-folds", type=int, default=1,
                        help="folds for Surprise's SVD++ (slow: minutes per fold here)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="substring: run only matching rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = MovieLens(args.root, "100k", download=False)
    folds = kfold_indices(len(data), 5, seed=0)[: args.folds]
    try:
        import surprise
    except ImportError:
        surprise = None
        print("scikit-surprise is not installed: Surprise's rows are skipped "
              "(pip install scikit-surprise to compare).")

    warm = data.subset(folds[0][0][:2000])
    for name, cfg in CONFIGS.items():
        if not args.only or args.only in name:
            _fit_ours({**cfg, "fit": {**cfg["fit"], "epochs": 1} if cfg["solver"] != "gibbs"
                       else {"samples": 2, "burn_in": 1}}, data, warm)

    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        s_folds = _surprise_folds(data, folds, Path(tmp)) if surprise else []
        for f, (train_idx, test_idx) in enumerate(folds):
            train, test = data.subset(train_idx), data.subset(test_idx)
            for name, cfg in CONFIGS.items():
                if args.only and args.only not in name:
                    continue
                start = time.perf_counter()
                model = _fit_ours(cfg, data, train)
                seconds = time.perf_counter() - start
                m = evaluate(model, test)
                results.setdefault(name, []).append((m["rmse"], m["mae"], seconds))
                print(f"fold {f + 1}: {name}: RMSE {m['rmse']:.4f} MAE {m['mae']:.4f} "
                      f"fit {seconds:.2f} s", flush=True)
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
                    results.setdefault(name, []).append((rmse, mae, seconds))
                    print(f"fold {f + 1}: {name}: RMSE {rmse:.4f} MAE {mae:.4f} "
                          f"fit {seconds:.2f} s", flush=True)

    ref = results.get("Surprise SVD (defaults)")
    ref_time = statistics.mean(r[2] for r in ref) if ref else None
    rows = []
    for name, rs in results.items():
        fit = statistics.mean(r[2] for r in rs)
        rows.append([name, len(rs), f"{statistics.mean(r[0] for r in rs):.4f}",
                     f"{statistics.mean(r[1] for r in rs):.4f}", f"{fit:.2f}",
                     f"{fit / ref_time:.2f}" if ref_time else "n/a"])
    print(f"\nMovieLens-100K, shuffled 5-fold CV (seed 0), identical folds for all rows; "
          f"mean over the folds run. torch threads: {args.threads}.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(["model", "folds", "RMSE", "MAE", "fit s / fold",
                          "fit time / Surprise SVD"], rows))


if __name__ == "__main__":
    main()
