"""Scale: time and peak memory against n for the streaming / large-n solvers.

    python -m benchmarks.bench_scale falkon [--n 10000 100000] [--m 1000 ...] [--maxiter 20]
                                            [--exact-n 5000] [--lam 1e-3] [--threads 2]
    python -m benchmarks.bench_scale kmeans [--n 100000] [--d 64] [--k 16] [--iters 30]
                                            [--busy] [--data gaussian|blobs]
    python -m benchmarks.bench_scale knm [--n 100000] [--m 5000] [--iters 5]

``falkon``: :class:`lamods.NystromKernelRidge` on HIGGS-like synthetic data (28 standard
normal features, labels +-1 from the sign of a fixed random two-layer network plus 10%
label noise), ``m`` centres, RBF kernel with lengthscale sqrt(28), alpha = ``--lam`` n
(FALKON's lambda; default 1e-3), ``maxiter`` CG iterations. Each n runs in its own
subprocess so that peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: Python, torch and the data)
belongs to that n alone; the table gives fit time (wall clock, and the CPU time of the process's
threads, less sensitive to other processes' load), peak RSS, test accuracy on 10,000 fresh
points, and (when ``--exact-n`` > 0) the accuracy of exact kernel ridge
(:class:`lamods.KernelRidgeHead`, same lambda) and of FALKON on the first ``--exact-n``
training points (exact kernel ridge holds an ``exact_n x exact_n`` float32 matrix: 1.6 GB at
20,000); with several ``--m`` the exact fit runs beside the first only (it does not depend on m).
The growth exponent is the least-squares slope of log time (and log RSS) against log n.

``knm``: one streamed pass :math:`v \\mapsto K_{nm}^T (K_{nm} v)` of the FALKON operator
(HIGGS-like data, RBF): the kernel module called per block (the pass before the fused one)
against :class:`lamods.layers._kernel_stream.KnmStream` at 256 / 1024 / 4096 rows per block
and on float64 data, interleaved round-robin, median of ``--iters`` rounds after one warm-up.

``kmeans``: Lloyd iterations from the same k-means++ init, ``--iters`` iterations
(``tol=0``, ``max_iter=iters``), lamods ``KMeans.fit`` and ``KMeans.fit_batches`` (10 batches)
against ``sklearn.cluster.KMeans(algorithm="lloyd")``; median of 5, interleaved, after a
warm-up, and scikit-learn's ``algorithm="elkan"`` for reference. ``--data gaussian`` (the
default) has no cluster structure, ``--data blobs`` is a mixture of k Gaussians (the
bounds of Note [Hamerly bounds] in :mod:`lamods._lloyd` prune on it). Both sides run exactly
``--iters`` iterations (scikit-learn stops early only on
strict convergence, when no label changes; the table prints each side's count), and the
final centres are compared (max abs difference to scikit-learn's). ``--busy``: the rows again
with a busy-loop process holding one core (``benchmarks._timing.busy_core``).
"""

from __future__ import annotations

import os

# Note [OpenMP spin-wait]: torch and scikit-learn each keep an OpenMP pool; with the default
# active wait policy one library's idle threads spin for a while after every parallel region
# and steal the cores from the other when both run in one process (measured: KMeans.fit from
# the same init took 6.8 s interleaved with scikit-learn vs 0.86 s with passive waiting).
# numpy's OpenBLAS keeps its own pthreads, which OMP_WAIT_POLICY does not reach: they spin
# for 2^28 cycles after each call unless OPENBLAS_THREAD_TIMEOUT lowers it (read when numpy
# loads, so set here before any import). With both sides waiting passively, an interleaved
# pair measures the same as each side alone (``time_blocks``; RFF + ridge, bench_kernel)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

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
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(X, y)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        acc = float((torch.sign(model.predict(Xt)) == yt).float().mean())
    # ru_maxrss is in KiB on Linux; taken before the exact comparison, which holds
    # an exact_n x exact_n matrix
    out = {"n": n, "m": m, "fit_s": fit_s, "cpu_s": cpu_s, "acc": acc, "iters": int(model.n_iter_),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if exact_n and exact_n <= n:
        exact = lamods.KernelRidgeHead("rbf", lam * exact_n, lengthscale=ls)
        with torch.no_grad():
            t0 = time.perf_counter()
            exact.fit(X[:exact_n], y[:exact_n])
            out["exact_s"] = time.perf_counter() - t0
            out["exact_acc"] = float((torch.sign(exact(Xt)) == yt).float().mean())
            del exact
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
    load0 = f"{os.getloadavg()[0]:.2f}"
    rows = []
    for n in args.n:
        for j, m in enumerate(args.m):
            # the exact fit depends on n only: run it beside the first m
            cmd = [sys.executable, "-m", "benchmarks.bench_scale", "_falkon_one", "--n", str(n),
                   "--m", str(m), "--maxiter", str(args.maxiter), "--exact-n",
                   str(args.exact_n if j == 0 else 0), "--threads", str(args.threads),
                   "--lam", str(args.lam)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, {args.threads} threads, at most "
          f"{args.maxiter} CG iterations, alpha = {args.lam:g} n; load average before / "
          f"after: {load0} / {os.getloadavg()[0]:.2f}")
    print("\n| n | m | CG iterations | fit (s) | fit CPU (s) | peak RSS (MB) | test acc. | "
          "exact KRR acc. (FALKON on the same subset) | exact KRR fit (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ex = (f"{r['exact_acc']:.4f} ({r['falkon_sub_acc']:.4f}) on {args.exact_n:,} | "
              f"{r['exact_s']:.2f}" if "exact_acc" in r else " |")
        print(f"| {r['n']:,} | {r['m']:,} | {r['iters']} | {r['fit_s']:.2f} | "
              f"{r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['acc']:.4f} | {ex} |")
    if len(args.n) > 1 and len(args.m) == 1:
        ns = [r["n"] for r in rows]
        print(f"\ngrowth exponent: time ~ n^{slope(ns, [r['fit_s'] for r in rows]):.2f}, "
              f"peak RSS ~ n^{slope(ns, [r['peak_rss_mb'] for r in rows]):.2f}")


def knm(args: argparse.Namespace) -> None:
    """One pass v -> K_nm^T (K_nm v), RBF, n x m x 28, variants interleaved round-robin."""
    from lamods.layers import RBFKernel
    from lamods.layers._kernel_stream import KnmStream

    n, m = args.n[0], args.m[0]
    X, _ = higgs_like(n, seed=0)
    C = X[:m].clone()
    v = torch.randn(m, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kern32, kern64 = RBFKernel(math.sqrt(D_HIGGS)), RBFKernel(math.sqrt(D_HIGGS),
                                                             dtype=torch.float64)
    X64, C64 = X.double(), C.double()

    def before(v: torch.Tensor) -> object:  # the kernel module per 2^22 / m rows (the old pass)
        rows, out, vf = max(1, 2 ** 22 // m), torch.zeros(m, 1), v.float()
        for i in range(0, n, rows):
            Kb = kern32(X[i:i + rows], C)
            out += Kb.mT @ (Kb @ vf)
        return out

    variants = {"kernel module per block, float32 (before)": before}
    for rows in (256, 1024, 4096):
        key = f"fused, {rows} rows, float32" + (" (now)" if rows == 256 else "")
        variants[key] = KnmStream(kern32, X, C, rows).gram_products  # prepared once, as fit
    variants["fused, 256 rows, float64 data"] = KnmStream(kern64, X64, C64).gram_products
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.iters + 1):  # the first round warms up
        for key, fn in variants.items():
            t0 = time.perf_counter()
            fn(v)
            if rep:
                times[key].append(time.perf_counter() - t0)
    print(f"one pass K_nm^T (K_nm v), n = {n:,}, m = {m:,}, d = {D_HIGGS}, torch "
          f"{torch.__version__}, {args.threads} threads, median of {args.iters} interleaved; "
          f"load average {os.getloadavg()[0]:.2f}")
    base = statistics.median(times["kernel module per block, float32 (before)"])
    print("\n| pass | s | ratio to before | kernel entries / s |")
    print("|---|---|---|---|")
    for key, ts in times.items():
        med = statistics.median(ts)
        print(f"| {key} | {med:.3f} | {med / base:.2f} | {n * m / med / 1e6:.0f}M |")


def kmeans(args: argparse.Namespace) -> None:
    from sklearn.cluster import KMeans as SkKMeans
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # scikit-learn on as many threads as torch

    g = torch.Generator().manual_seed(0)
    X = torch.randn(args.n, args.d, generator=g, dtype=torch.float64)
    if args.data == "blobs":
        # a mixture of k overlapping Gaussians, means 2 standard deviations apart on average
        means = 2.0 / math.sqrt(2.0) * torch.randn(args.k, args.d, generator=g,
                                                   dtype=torch.float64)
        X += means[torch.randint(0, args.k, (args.n,), generator=g)]
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

    def sk_elkan() -> object:
        return SkKMeans(args.k, init=init_n, n_init=1, max_iter=args.iters, tol=0.0,
                        algorithm="elkan").fit(Xn)

    fns = {"ours": ours, "ours_batches": ours_batches, "sklearn": sk, "sklearn_elkan": sk_elkan}
    a, b, c, e = ours(), ours_batches(), sk(), sk_elkan()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.n:,} x {args.d} ({args.data}), k = {args.k}, float64, same init, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT')}, median of {args.repeats}")
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
            for _ in range(args.repeats):
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
                ("sklearn", "scikit-learn KMeans(lloyd)", c.n_iter_, c.inertia_, ref),
                ("sklearn_elkan", "scikit-learn KMeans(elkan)", e.n_iter_, e.inertia_,
                 torch.from_numpy(e.cluster_centers_))):
            diff = float((centres - ref).abs().max())
            print(f"| {label} | {where} | {med[key]:.3f} | {med[key] / med['sklearn']:.2f} | "
                  f"{iters} | {inertia:.10g} | {diff:.1e} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["falkon", "kmeans", "knm", "_falkon_one"])
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--m", type=int, nargs="+", default=[1000])
    p.add_argument("--maxiter", type=int, default=20)
    p.add_argument("--repeats", type=int, default=11,
                   help="kmeans: timed runs per side (the median is reported)")
    p.add_argument("--exact-n", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--data", choices=("gaussian", "blobs"), default="gaussian",
                   help="kmeans: one Gaussian (no cluster structure) or a mixture of k")
    p.add_argument("--busy", action="store_true",
                   help="kmeans: print the rows again with a busy-loop process on one core")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "_falkon_one":
        print(json.dumps(falkon_one(args.n[0], args.m[0], args.maxiter, args.exact_n,
                                    args.lam)))
    elif args.what == "knm":
        args.n = args.n or [100_000]
        args.m = [5000] if args.m == [1000] else args.m
        args.iters = 5 if args.iters == 30 else args.iters
        knm(args)
    elif args.what == "falkon":
        args.n = args.n or [10_000, 100_000]
        falkon(args)
    else:
        args.n = (args.n or [100_000])[0]
        kmeans(args)


if __name__ == "__main__":
    main()
