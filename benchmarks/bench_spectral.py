"""Spectral clustering at size: the sparse kNN path against scikit-learn.

    python -m benchmarks.bench_spectral [--repeats 3] [--threads N] [--quick]
        [--only mnist|growth]

Table 1: the local MNIST subset (5,000 images, ``/work/shared/data`` or ``$LAMODS_DATA``,
pixels / 255, float32), ``SpectralClustering(10, affinity="nearest_neighbors",
n_neighbors=10)`` (ours: ``eigen_solver="auto"``, the sparse path; ``seed=0``) against
scikit-learn's ``SpectralClustering(n_clusters=10, affinity="nearest_neighbors",
n_neighbors=10, random_state=0)`` (sparse kNN graph + ARPACK shift-invert), timed with
interleaved medians (``time_pair``) in one process; ARI against the true digits.

Table 2: growth on a 10-blob Gaussian mixture (``make_blobs(n, centers=10, n_features=10,
cluster_std=2.0, random_state=0)``, float32), n = 10,000 / 30,000 / 100,000, one fit each
in a fresh process (so its peak RSS, ``VmHWM``, is its own; the baseline is the RSS
after imports and data) after a warm-up fit on 5,000 of the points, with the exponent
``b`` of ``time ~ n^b`` fitted by least squares on the logs. ``--quick``: 2,000 / 5,000 /
10,000.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import machine, markdown_table, time_pair

DATA = Path(os.environ.get("LAMODS_DATA", "/work/shared/data"))


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    tr = MNIST(root=str(DATA), train=True, download=False)
    te = MNIST(root=str(DATA), train=False, download=False)
    X = torch.cat([tr.data, te.data]).reshape(-1, 784).float().div(255).numpy()
    return X, torch.cat([tr.targets, te.targets]).numpy()


def bench_mnist(repeats: int) -> list[list[str]]:
    from sklearn.cluster import SpectralClustering as SkSpectral
    from sklearn.metrics import adjusted_rand_score

    from lamods.classic import SpectralClustering

    Xnp, y = _mnist()
    X = torch.from_numpy(Xnp)

    def ours():
        return SpectralClustering(10, affinity="nearest_neighbors", n_neighbors=10,
                                  seed=0).fit(X)

    def ref():
        return SkSpectral(n_clusters=10, affinity="nearest_neighbors", n_neighbors=10,
                          random_state=0).fit(Xnp)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn's connectivity notes
        t_o, t_r = time_pair(ours, ref, device="cpu", repeats=repeats, warmup=1)
        a_o = adjusted_rand_score(y, ours().labels_.numpy())
        a_r = adjusted_rand_score(y, ref().labels_)
    return [[f"MNIST subset {len(Xnp)} x 784, n_neighbors=10, k=10", f"{t_o:.2f}", f"{t_r:.2f}",
             f"{t_o / t_r:.2f}", f"{a_o:.4f}", f"{a_r:.4f}", "ratio <= 1, ARI >= sklearn"]]


def _peak_rss_gb() -> float:
    """This process's peak resident set (``VmHWM``), in GiB. Not ``ru_maxrss``: Linux keeps
    that across ``execve``, so a spawned child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _fit_blobs(n: int) -> tuple[float, float, float, float, dict[str, float]]:
    """In a fresh process: (fit seconds, ARI, baseline RSS GB, peak RSS GB, stage seconds)."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from lamods.classic import SpectralClustering, knn_affinity

    Xnp, y = make_blobs(n, centers=10, n_features=10, cluster_std=2.0, random_state=0)
    X = torch.from_numpy(Xnp.astype(np.float32))
    base = _peak_rss_gb()
    with warnings.catch_warnings():
        # the blobs lie apart: the kNN graph has several components (scikit-learn warns too)
        warnings.simplefilter("ignore", UserWarning)
        # warm-up on 5,000 points (first calls of the sparse and BLAS kernels: ~4 s once)
        SpectralClustering(10, affinity="nearest_neighbors", n_neighbors=10,
                           seed=0).fit(X[:5000])
        start = time.perf_counter()
        sc = SpectralClustering(10, affinity="nearest_neighbors", n_neighbors=10,
                                seed=0).fit(X)
    seconds = time.perf_counter() - start
    peak = _peak_rss_gb()
    ari = adjusted_rand_score(y, sc.labels_.numpy())
    start = time.perf_counter()
    knn_affinity(X, 10)  # the graph alone, for the split
    return seconds, ari, base, peak, {"graph": time.perf_counter() - start}


def bench_growth(sizes: list[int], threads: int | None) -> tuple[list[list[str]], float]:
    ctx = mp.get_context("spawn")
    rows, logs = [], []
    for n in sizes:
        with ctx.Pool(1, initializer=_threads, initargs=(threads,)) as pool:
            seconds, ari, base, peak, split = pool.apply(_fit_blobs, (n,))
        logs.append((math.log(n), math.log(seconds)))
        rows.append([f"10 blobs, {n:,} x 10", f"{seconds:.2f}", f"{split['graph']:.2f}",
                     f"{ari:.4f}", f"{base:.2f}", f"{peak:.2f}"])
    x, t = np.array(logs).T
    slope = float(np.polyfit(x, t, 1)[0])
    return rows, slope


def _threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("mnist", "growth"), default=None)
    args = parser.parse_args()
    _threads(args.threads)
    print(f"Machine: {machine()}; load {open('/proc/loadavg').read().split()[:3]}\n")
    if args.only != "growth":
        header = ["case", "lamods s", "sklearn s", "ratio", "ARI lamods", "ARI sklearn", "target"]
        print(markdown_table(header, bench_mnist(args.repeats)))
        print()
    if args.only == "mnist":
        return
    sizes = [2_000, 5_000, 10_000] if args.quick else [10_000, 30_000, 100_000]
    rows, slope = bench_growth(sizes, args.threads)
    header = ["case", "fit s", "of which kNN graph s", "ARI", "baseline RSS GB",
              "peak RSS GB"]
    print(markdown_table(header, rows))
    print(f"\nfitted growth exponent: time ~ n^{slope:.2f} (n = {', '.join(map(str, sizes))}); "
          f"load after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
