"""Scale: time and peak memory against n for the streaming / large-n solvers.

    python -m benchmarks.bench_scale falkon [--n 10000 100000] [--m 1000] [--maxiter 20]
                                            [--exact-n 5000] [--lam 1e-3] [--threads 2]
    python -m benchmarks.bench_scale kmeans [--n 100000] [--d 64] [--k 16] [--iters 30]
                                            [--busy]

``falkon``: :class:`lamods.NystromKernelRidge` on HIGGS-like synthetic data (28 standard
normal features, labels +-1 from the sign of a fixed random two-layer network plus 10%
label noise), ``m`` centres, RBF kernel with lengthscale sqrt(28), alpha = ``--lam`` n
(FALKON's lambda; default 1e-3), ``maxiter`` CG iterations. Each n runs in its own
subprocess so that peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: Python, torch and the data)
belongs to that n alone; the table gives fit time, peak RSS, test accuracy on 10,000 fresh
points, and (when ``--exact-n`` > 0) the accuracy of exact kernel ridge
(:class:`lamods.KernelRidgeHead`, same lambda) and of FALKON on the first ``--exact-n``
training points (exact kernel ridge holds an ``exact_n x exact_n`` float32 matrix: 1.6 GB at
20,000).
The growth exponent is the least-squares slope of log time (and log RSS) against log n.

``kmeans``: Lloyd iterations from the same k-means++ init, ``--iters`` iterations
(``tol=0``, ``max_iter=iters``), lamods ``KMeans.fit`` and ``KMeans.fit_batches`` (10 batches)
against ``sklearn.cluster.KMeans(algorithm="lloyd")``; median of 5, interleaved, after a
warm-up. Both sides run exactly ``--iters`` iterations (scikit-learn stops early only on
strict convergence, when no label changes; the table prints each side's count), and the
final centres are compared (max abs difference to scikit-learn's). ``--busy``: the rows again
with a busy-loop process holding one core (``benchmarks._timing.busy_core``).
"""

from __future__ import annotations

import os

# Note [OpenMP spin-wait]: torch and scikit-learn each keep an OpenMP pool; with the default
# active wait policy one library's idle threads spin for a while after every parallel region
# and steal the cores from the other when both run in one process (measured: KMeans.fit from
# the same init took 6.8 s interleaved with scikit-learn vs 0.86 s with passive waiting)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import lamods  # noqa: E402
from benchmarks._timing import busy_core, load  # noqa: E402

D_HIGGS = 28


def higgs_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points, 28 features, labels +-1 (float32)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.Generator().manual_seed(12345)  # the same function for every draw
    W1 = torch.randn(D_HIGGS, 32, generator=net) / math.sqrt(D_HIGGS)
    w2 = torch.randn(32, generator=net) / math.sqrt(32)
    X = torch.randn(n, D_HIGGS, generator=g)
    score = torch.tanh(X @ W1) @ w2
    y = torch.where(score > score.median(), 1.0, -1.0)
    flip = torch.rand(n, generator=g) < 0.1
    return X, torch.where(flip, -y, y)


def falkon_one(n: int, m: int, maxiter: int, exact_n: int, lam: float) -> dict[str, float]:
    X, y = higgs_like(n, seed=0)
    Xt, yt = higgs_like(10_000, seed=1)
    ls = math.sqrt(D_HIGGS)
    model = lamods.NystromKernelRidge("rbf", lam * n, n_centers=m, maxiter=maxiter, seed=0,
                                      lengthscale=ls)
    t0 = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((torch.sign(model.predict(Xt)) == yt).float().mean())
    # ru_maxrss is in KiB on Linux; taken before the exact comparison, which holds
    # an exact_n x exact_n matrix
    out = {"n": n, "m": m, "fit_s": fit_s, "acc": acc, "iters": int(model.n_iter_),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if exact_n and exact_n <= n:
        exact = lamods.KernelRidgeHead("rbf", lam * exact_n, lengthscale=ls)
        with torch.no_grad():
            exact.fit(X[:exact_n], y[:exact_n])
            out["exact_acc"] = float((torch.sign(exact(Xt)) == yt).float().mean())
            sub = lamods.NystromKernelRidge("rbf", lam * exact_n, n_centers=min(m, exact_n),
                                            maxiter=maxiter, seed=0, lengthscale=ls)
            sub.fit(X[:exact_n], y[:exact_n])
            out["falkon_sub_acc"] = float((torch.sign(sub.predict(Xt)) == yt).float().mean())
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def falkon(args: argparse.Namespace) -> None:
    rows = []
    for n in args.n:
        cmd = [sys.executable, "-m", "benchmarks.bench_scale", "_falkon_one", "--n", str(n),
               "--m", str(args.m), "--maxiter", str(args.maxiter), "--exact-n",
               str(args.exact_n), "--threads", str(args.threads), "--lam", str(args.lam)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {args.threads} threads, m = {args.m}, "
          f"{args.maxiter} CG iterations, alpha = {args.lam:g} n")
    print("\n| n | m | CG iterations | fit (s) | peak RSS (MB) | test acc. | exact KRR acc. "
          "(FALKON on the same subset) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ex = (f"{r['exact_acc']:.4f} ({r['falkon_sub_acc']:.4f}) on {args.exact_n}"
              if "exact_acc" in r else "")
        print(f"| {r['n']:,} | {r['m']:,} | {r['iters']} | {r['fit_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['acc']:.4f} | {ex} |")
    if len(rows) > 1:
        ns = [r["n"] for r in rows]
        print(f"\ngrowth exponent: time ~ n^{slope(ns, [r['fit_s'] for r in rows]):.2f}, "
              f"peak RSS ~ n^{slope(ns, [r['peak_rss_mb'] for r in rows]):.2f}")


def kmeans(args: argparse.Namespace) -> None:
    from sklearn.cluster import KMeans as SkKMeans
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # scikit-learn on as many threads as torch

    g = torch.Generator().manual_seed(0)
    X = torch.randn(args.n, args.d, generator=g, dtype=torch.float64)
    init = lamods.classic.kmeans.kmeans_plusplus(X, args.k, generator=g)
    Xn, init_n = X.numpy(), init.numpy()

    def ours() -> object:
        return lamods.KMeans(args.k, init=init, max_iter=args.iters, tol=0.0).fit(X)

    def ours_batches() -> object:
        return lamods.KMeans(args.k, init=init, max_iter=args.iters,
                             tol=0.0).fit_batches(torch.chunk(X, 10))

    def sk() -> object:
        return SkKMeans(args.k, init=init_n, n_init=1, max_iter=args.iters, tol=0.0,
                        algorithm="lloyd").fit(Xn)

    fns = {"ours": ours, "ours_batches": ours_batches, "sklearn": sk}
    a, b, c = ours(), ours_batches(), sk()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.n:,} x {args.d}, k = {args.k}, float64, same init, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}")
    print("\n| work | machine | time (s) | ratio to scikit-learn | iterations | inertia | "
          "max abs centre diff. to scikit-learn |")
    print("|---|---|---|---|---|---|---|")
    ref = torch.from_numpy(c.cluster_centers_)
    for busy in ([False, True] if args.busy else [False]):
        with busy_core(busy):
            before = load()
            for fn in fns.values():
                fn()
            times: dict[str, list[float]] = {key: [] for key in fns}
            for _ in range(5):
                for key, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        where = f"{'other core busy' if busy else 'quiet'} (load {before})"
        for key, label, iters, inertia, centres in (
                ("ours", "lamods KMeans.fit", int(a.n_iter_), float(a.inertia_),
                 a.cluster_centers_),
                ("ours_batches", "lamods KMeans.fit_batches (10 batches)", int(b.n_iter_),
                 float(b.inertia_), b.cluster_centers_),
                ("sklearn", "scikit-learn KMeans(lloyd)", c.n_iter_, c.inertia_, ref)):
            diff = float((centres - ref).abs().max())
            print(f"| {label} | {where} | {med[key]:.3f} | {med[key] / med['sklearn']:.2f} | "
                  f"{iters} | {inertia:.10g} | {diff:.1e} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["falkon", "kmeans", "_falkon_one"])
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--maxiter", type=int, default=20)
    p.add_argument("--exact-n", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--busy", action="store_true",
                   help="kmeans: print the rows again with a busy-loop process on one core")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "_falkon_one":
        print(json.dumps(falkon_one(args.n[0], args.m, args.maxiter, args.exact_n, args.lam)))
    elif args.what == "falkon":
        args.n = args.n or [10_000, 100_000]
        falkon(args)
    else:
        args.n = (args.n or [100_000])[0]
        kmeans(args)


if __name__ == "__main__":
    main()
