"""Scale: time and peak memory of the fit-style modules against n, and against the number of
gloo processes for the distributed (streamed, all-reduced) fits.

    python -m benchmarks.bench_scale_growth                      # every case, default sizes
    python -m benchmarks.bench_scale_growth --cases ridge_fit kmeans_fit --n 10000 100000
    python -m benchmarks.bench_scale_growth --no-growth          # the process table only
    python -m benchmarks.bench_scale_growth --dist-n 100000 --worlds 1 2

Growth table: each (case, n) runs in its own fresh subprocess, so that its peak RSS belongs
to it alone. The subprocess makes the data (seeded), runs the fit once on its first 2,000 rows
(warm-up: lazy initialisation, thread pools), then resets the peak-RSS counter (Linux
``/proc/self/clear_refs``, value 5; without it the peak includes the data generation) and
times the fit on all ``n`` rows (median of 3 for n <= 100,000, else one run). ``peak RSS`` is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the fit (the whole process: Python, torch,
the data); ``extra`` is that peak minus the resident size just before the fit (the fit's own
working memory: the data is already resident). The growth exponents are the least-squares
slopes of log time and log extra memory against log n (1 = linear).

Process table: the distributed cases stream one pass of batches of ``--batch`` rows; with
``W`` processes (``torch.multiprocessing`` spawn, gloo, ``cores // W`` torch threads each)
every rank takes its contiguous ``1/W`` of every batch and the estimator all-reduces its
statistics (Note [distributed statistics] in :mod:`lamods._distributed`). Time is the
slowest rank's fit, after a barrier; the difference column is, over the floating fitted
buffers, the largest ``max |diff| / max |buffer|`` against the one-process run (float32
data: rounding is about 1e-7 relative), naming the buffer.

Adding a case: one :class:`Case` in :data:`CASES` (data maker, fit, and for the process
table a ``stream`` function that runs one rank's share). Spectral clustering and Nystrom /
FALKON rows live in their own benchmarks (``bench_scale.py`` and the spectral one).
"""

from __future__ import annotations

import os

# Note [OpenMP spin-wait] in benchmarks/bench_scale.py: passive waiting on a shared machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import torch  # noqa: E402

import lamods  # noqa: E402
from benchmarks._timing import machine, markdown_table  # noqa: E402

Data = tuple[torch.Tensor, ...]


# -- data ---------------------------------------------------------------------------------
def blobs(n: int, d: int = 32, k: int = 16, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    centers = 5 * torch.randn(k, d, generator=g)
    X = torch.randn(n, d, generator=g)
    X += centers[torch.randint(0, k, (n,), generator=g)]
    return (X,)


def regression(n: int, d: int = 64, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = X @ w + 0.1 * torch.randn(n, generator=g)
    return X, y


def spectrum(n: int, d: int = 64, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    X *= torch.logspace(0, -2, d)
    X += 1.0
    return (X,)


def nonneg(n: int, d: int = 32, r: int = 8, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, r, generator=g) @ torch.rand(r, d, generator=g)
    X += 0.01 * torch.rand(n, d, generator=g)
    return (X,)


def batches(data: Data, size: int) -> list[Data]:
    return list(zip(*(torch.split(t, size) for t in data)))


def share(batch: Data, rank: int, world: int) -> Data:
    """This rank's contiguous share of one batch (every rank gets the same number of calls)."""
    return tuple(torch.tensor_split(t, world)[rank] for t in batch)


# -- cases --------------------------------------------------------------------------------
K = 16  # clusters
BATCH = 10_000  # rows per batch of the streamed fits


def _kmeans_init(X: torch.Tensor) -> torch.Tensor:
    return X[:K].clone()  # a fixed init: the same centres on every rank and every n


@dataclass
class Case:
    """One benchmarked fit: ``data(n)`` makes the inputs, ``fit(data)`` returns the fitted
    module; ``stream(data, rank, world)``, if given, is one rank's streamed fit for the
    process table (``None``: not a distributed fit)."""

    data: Callable[[int], Data]
    fit: Callable[[Data], torch.nn.Module]
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    stream: Callable[[Data, int, int], torch.nn.Module] | None = None
    note: str = ""


def _stream(make: Callable[[], torch.nn.Module], method: str = "partial_fit"):
    def fit(data: Data, rank: int = 0, world: int = 1) -> torch.nn.Module:
        model = make()
        for batch in batches(data, BATCH):
            getattr(model, method)(*share(batch, rank, world))
        return model
    return fit


def _kmeans_batches(data: Data, rank: int = 0, world: int = 1) -> torch.nn.Module:
    X = data[0]
    parts = [share((b,), rank, world)[0] for b in torch.split(X, BATCH)]
    return lamods.KMeans(K, init=_kmeans_init(X), max_iter=10, tol=0.0).fit_batches(parts)


def _nmf_fit(data: Data) -> torch.nn.Module:
    return lamods.NMF(8, max_iter=50, tol=0.0, seed=0).fit(data[0])


CASES: dict[str, Case] = {
    "kmeans_fit": Case(blobs, lambda D: lamods.KMeans(K, init=_kmeans_init(D[0]), max_iter=10,
                                                      tol=0.0).fit(D[0]),
                       note="Lloyd, 10 iterations, d=32, k=16"),
    "kmeans_fit_f64": Case(lambda n: tuple(t.double() for t in blobs(n)),
                           lambda D: lamods.KMeans(K, init=_kmeans_init(D[0]), max_iter=10,
                                                   tol=0.0).fit(D[0]),
                           note="float64 data (Note [float32 screen]: a float32 copy)"),
    "kmeans_fit_batches": Case(blobs, _kmeans_batches, stream=_kmeans_batches,
                               note="exact Lloyd over batches of 10,000, 10 iterations"),
    "ridge_fit": Case(regression, lambda D: lamods.RidgeRegression(alpha=1.0).fit(*D),
                      note="normal equations, d=64"),
    "ridge_partial_fit": Case(regression, _stream(lambda: lamods.RidgeRegression(alpha=1.0)),
                              stream=_stream(lambda: lamods.RidgeRegression(alpha=1.0)),
                              note="batches of 10,000"),
    "pca_full": Case(spectrum, lambda D: lamods.PCA(16, solver="full").fit(D[0]),
                     note="k=16, d=64"),
    "pca_randomized": Case(spectrum, lambda D: lamods.PCA(16, solver="randomized",
                                                          seed=0).fit(D[0])),
    "pca_partial_fit": Case(spectrum, _stream(lambda: lamods.PCA(16)),
                            stream=_stream(lambda: lamods.PCA(16)), note="batches of 10,000"),
    "nmf_fit": Case(nonneg, _nmf_fit, sizes=[10_000, 30_000, 100_000, 300_000],
                    note="MU, k=8, d=32, 50 iterations"),
    "nmf_partial_fit": Case(nonneg, _stream(lambda: lamods.NMF(8, seed=0)),
                            sizes=[10_000, 100_000, 1_000_000],
                            stream=_stream(lambda: lamods.NMF(8, seed=0)),
                            note="online MU, one pass of batches of 10,000"),
}


# -- one size in this process -----------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def one(name: str, n: int) -> dict[str, float]:
    case = CASES[name]
    data = case.data(n)
    case.fit(tuple(t[:2000] for t in data))  # warm-up
    times = []
    repeats = 3 if n <= 100_000 else 1
    reset = _reset_peak()
    base = _rss_mb()
    for _ in range(repeats):
        start = time.perf_counter()
        case.fit(data)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"n": n, "time_s": statistics.median(times), "peak_mb": peak,
            "extra_mb": max(peak - base, 0.0), "peak_reset": reset}


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x (NaN with fewer than two positive points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale_growth", *args],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench_scale_growth {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth(names: list[str], sizes: list[int] | None) -> None:
    rows = []
    for name in names:
        case = CASES[name]
        results = [_subprocess(["--one", name, str(n)]) for n in (sizes or case.sizes)]
        for r in results:
            print(f"  {name} n={r['n']:,}: {r['time_s']:.3f} s, peak {r['peak_mb']:.0f} MB, "
                  f"extra {r['extra_mb']:.0f} MB", file=sys.stderr, flush=True)
        ns = [r["n"] for r in results]
        t_exp = slope(ns, [r["time_s"] for r in results])
        m_exp = slope(ns, [r["extra_mb"] for r in results])
        for r in results:
            rows.append([name, f"{r['n']:,}", f"{r['time_s']:.3f}", f"{r['peak_mb']:.0f}",
                         f"{r['extra_mb']:.0f}", f"{t_exp:.2f}", f"{m_exp:.2f}", case.note])
    print(markdown_table(["case", "n", "time (s)", "peak RSS (MB)", "extra (MB)",
                          "time exponent", "memory exponent", "notes"], rows))


# -- processes ----------------------------------------------------------------------------
def _fitted_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.endswith("_") and v.is_floating_point() and v.numel() > 0}


def _rank(rank: int, world: int, name: str, n: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        case = CASES[name]
        data = case.data(n)
        assert case.stream is not None
        dist.barrier()
        start = time.perf_counter()
        model = case.stream(data, rank, world)
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if rank == 0:
            torch.save({"time_s": float(elapsed), "state": _fitted_state(model)}, out)
    finally:
        dist.destroy_process_group()


def dist_one(name: str, n: int, world: int, out: str) -> dict[str, float]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/rendezvous"
        mp.spawn(_rank, args=(world, name, n, init, out), nprocs=world, join=True)
    return {"time_s": torch.load(out)["time_s"]}


def processes(names: list[str], n: int, worlds: list[int]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if CASES[name].stream is None:
                continue
            states = {}
            for world in worlds:
                path = f"{tmp}/{name}.{world}.pt"
                r = _subprocess(["--dist", name, str(n), str(world), path])
                states[world] = torch.load(path)["state"]
                ref = states[worlds[0]]
                # per fitted buffer: max |diff| relative to the buffer's largest entry
                rel = {k: float((states[world][k].double() - ref[k].double()).abs().max())
                       / max(float(ref[k].double().abs().max()), 1e-300) for k in ref}
                worst = max(rel, key=rel.__getitem__)
                dtype = str(next(iter(ref.values())).dtype).replace("torch.", "")
                rows.append([name, f"{n:,}", world, f"{r['time_s']:.3f}",
                             f"{rel[worst]:.1e} ({worst})", dtype])
                print(f"  {name} world={world}: {r['time_s']:.3f} s, max rel diff "
                      f"{rel[worst]:.1e} ({worst})", file=sys.stderr, flush=True)
    print(markdown_table(["case", "n", "processes", "time (s)",
                          f"max abs diff / max abs state vs {worlds[0]} process (buffer)",
                          "dtype"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--n", nargs="+", type=int, default=None,
                        help="sizes for every case (default: each case's own)")
    parser.add_argument("--no-growth", action="store_true", help="skip the growth table")
    parser.add_argument("--no-dist", action="store_true", help="skip the process table")
    parser.add_argument("--dist-n", type=int, default=100_000)
    parser.add_argument("--worlds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--one", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--dist", nargs=4, metavar=("CASE", "N", "WORLD", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    if args.dist:
        name, n, world, out = args.dist
        print(json.dumps(dist_one(name, int(n), int(world), out)))
        return
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{machine()}; load average {' '.join(load)} at start\n")
    if not args.no_growth:
        growth(args.cases, args.n)
        print()
    if not args.no_dist:
        processes(args.cases, args.dist_n, args.worlds)
    with open("/proc/loadavg") as f:
        print(f"\nload average {' '.join(f.read().split()[:3])} at the end")


if __name__ == "__main__":
    main()
