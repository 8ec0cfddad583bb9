"""MovieLens-shaped synthetic ratings at 1M / 10M / 25M: ALS and SGD epochs, time and peak memory.

    python -m benchmarks.bench_recsys_scale [--sizes 1m,10m,25m] [--factors 32] [--threads 1]

Data: :func:`lamods.recsys.planted_ratings` (rank-8 planted structure, noise 0.5,
long-tailed user activity and item popularity) at the shapes of the real sets: 1M ->
ML-1M (6,040 users x 3,706 items, 1,000,209 ratings), 10M -> ML-10M (69,878 x 10,677,
10,000,054), 25M -> ML-25M (162,541 x 59,047, 25,000,095). 1% of the ratings are held out
to show the fits learn (test RMSE against the noise floor 0.5).

Every (size, solver) runs in its own fresh process, so the peak resident memory
(``ru_maxrss``, data generation included) belongs to that run alone. Per run: ``--epochs``
epochs of ``fit_als`` (biased, weighted L2 0.05) or ``fit_sgd`` (Adam, hand-written
gradient, batch 65,536, lr 0.05, L2 0.02); the table gives the mean seconds per epoch
(the first epoch included), the peak RSS and the held-out RMSE after the epochs. The
bound to meet: peak RSS under 6 GB at 25M.

``--real-25m ROOT`` also reads the real ML-25M (``MovieLens(ROOT, "25m")``, downloaded with
its checksum when there is a network) and runs the same epochs on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

SHAPES = {"1m": (6_040, 3_706, 1_000_209), "10m": (69_878, 10_677, 10_000_054),
          "25m": (162_541, 59_047, 25_000_095)}


def run_one(size: str, solver: str, factors: int, epochs: int, threads: int,
            real_root: str | None) -> dict:
    """One measurement, in this process (the parent runs it in a child)."""
    from lamods.recsys import (
        MatrixFactorization,
        MovieLens,
        evaluate,
        fit_als,
        fit_sgd,
        planted_ratings,
    )

    torch.set_num_threads(threads)
    start = time.perf_counter()
    if real_root:
        data = MovieLens(real_root, "25m")
    else:
        n_users, n_items, n = SHAPES[size]
        data = planted_ratings(n_users, n_items, n, 8, noise=0.5, seed=0).data
    gen_s = time.perf_counter() - start
    n = len(data)
    test_idx = torch.arange(n - n // 100, n)
    train, test = data.subset(torch.arange(n - n // 100)), data.subset(test_idx)
    del data
    torch.manual_seed(0)
    model = MatrixFactorization(train.n_users, train.n_items, factors, init_std=0.1,
                                rating_range=train.rating_range)
    if solver == "als":
        hist = fit_als(model, train, epochs=epochs, reg=0.05)
    else:
        hist = fit_sgd(model, train, epochs=epochs, batch_size=65536, lr=0.05, reg=0.02,
                       reg_bias=0.0)
    rmse = evaluate(model, test)["rmse"]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"size": size, "solver": solver, "ratings": n, "users": train.n_users,
            "items": train.n_items, "gen_s": gen_s,
            "epoch_s": sum(hist.epoch_seconds) / len(hist.epoch_seconds),
            "epochs": len(hist.epoch_seconds), "peak_gb": peak_kb / 2**20, "rmse": rmse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1m,10m,25m")
    parser.add_argument("--solvers", default="als,sgd")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real-25m", default="", help="root of the real ML-25M (optional)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, solver = args.child.split(":")
        print(json.dumps(run_one(size, solver, args.factors, args.epochs, args.threads,
                                 args.real_25m if size == "real25m" else None)))
        return

    from benchmarks._timing import machine, markdown_table

    torch.set_num_threads(args.threads)
    runs = [(s, v) for s in args.sizes.split(",") for v in args.solvers.split(",")]
    if args.real_25m:
        runs += [("real25m", v) for v in args.solvers.split(",")]
    rows = []
    for size, solver in runs:
        cmd = [sys.executable, "-m", "benchmarks.bench_recsys_scale", "--child",
               f"{size}:{solver}", "--factors", str(args.factors), "--epochs",
               str(args.epochs), "--threads", str(args.threads)]
        if args.real_25m:
            cmd += ["--real-25m", args.real_25m]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{size} {solver}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{size} {solver}: {r}", flush=True)
        rows.append([size, solver.upper(), f"{r['ratings']:,}", f"{r['users']:,} x "
                     f"{r['items']:,}", f"{r['gen_s']:.1f}", f"{r['epoch_s']:.1f}",
                     f"{r['peak_gb']:.2f}", f"{r['rmse']:.3f}"])
    print(f"\nPlanted-rank synthetic ratings at MovieLens shapes; k={args.factors}, "
          f"{args.epochs} epochs, torch threads {args.threads}; peak RSS per fresh process.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(["size", "solver", "ratings", "users x items", "data s",
                          "s / epoch", "peak RSS GB", "held-out RMSE"], rows))


if __name__ == "__main__":
    main()
