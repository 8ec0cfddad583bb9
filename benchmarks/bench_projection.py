"""Random projections and fwht against scikit-learn and dense torch matmuls.

    python -m benchmarks.bench_projection [--rows 10000] [--features 4096] [--repeats 5]
                                          [--busy] [--srht-only] [--threads N]

Table 1: X of shape (rows, features), float32, projected to k in {256, 1024}:
time of ours and of the reference in one interleaved loop (medians after
warm-up) and the ratio ours / reference (below 1 means we are faster), with the
max and mean of |ratio - 1| of squared pairwise distances (ratio
||f(x_i) - f(x_j)||^2 / ||x_i - x_j||^2) over random pairs for both sides.
References: scikit-learn's GaussianRandomProjection / SparseRandomProjection
(transform alone, and fit + transform against our construction + forward) on
the CPU, and a dense torch matmul ``X @ R^T`` with a Gaussian R on every device.

``--busy``: table 1 again with a busy-loop process holding one core
(``benchmarks._timing.busy_core``), as another user's job would; ``--srht-only`` keeps its
SRHT rows. OpenMP keeps its default wait policy here (unlike ``bench_scale``, whose Note
[OpenMP spin-wait] sets passive waiting for torch and scikit-learn in one process): users
get the default, and the SRHT-vs-dense rows compare torch with torch, so the busy rows show
what a loaded machine does to them (Note [cache blocking] in ``lamods.layers.hadamard``).

Table 2: fwht alone against ``X @ H_d`` with a dense Hadamard matrix for
d = 2^9 .. 2^14 (fewer rows for wide d so the dense side stays affordable).
"""

from __future__ import annotations

import argparse
import math

import torch

from benchmarks._timing import busy_core, devices, load, machine, markdown_table, time_pair
from lamods.layers.hadamard import fwht, hadamard_matrix
from lamods.layers.projection import (
    GaussianRandomProjection,
    SparseRandomProjection,
    SRHTProjection,
    pairwise_distance_distortion,
)


def _distortion(x: torch.Tensor, y: torch.Tensor, n_pairs: int) -> str:
    """``max/mean`` of |ratio - 1| over the same random pairs (seeded) for every method."""
    gen = torch.Generator().manual_seed(0)
    r = pairwise_distance_distortion(x.cpu(), torch.as_tensor(y).cpu(), n_pairs=n_pairs,
                                     generator=gen)
    dev = (r - 1).abs()
    return f"{dev.max().item():.3f}/{dev.mean().item():.3f}"


def _row(case: str, k: int, device: str, t_ours: float, t_ref: float, d_ours: str,
         d_ref: str, target: str) -> list[str]:
    return [case, str(k), device, f"{t_ours * 1e3:.1f}", f"{t_ref * 1e3:.1f}",
            f"{t_ours / t_ref:.2f}", d_ours, d_ref, target]


def projection_table(rows: int, d: int, repeats: int, n_pairs: int,
                     srht_only: bool = False) -> list[list[str]]:
    from sklearn import random_projection as skrp

    out: list[list[str]] = []
    x_cpu = torch.randn(rows, d)
    x_np = x_cpu.numpy()
    for k in (256, 1024):
        for device in devices():
            x = x_cpu.to(device)
            gauss = GaussianRandomProjection(d, k, seed=0, device=device)
            sparse = SparseRandomProjection(d, k, seed=0, device=device)
            srht = SRHTProjection(d, k, seed=0, device=device)
            r_dense = gauss.weight.clone()

            def dense(x=x, r=r_dense):
                return x @ r.T

            with torch.no_grad():
                d_dense = _distortion(x, dense(), n_pairs)
                for case, mod, target in (
                        ("SRHTProjection vs dense torch matmul", srht, "<= 0.5"),
                        ("SparseRandomProjection vs dense torch matmul", sparse, ""),
                        ("GaussianRandomProjection vs dense torch matmul", gauss, "~ 1"),
                        )[:1 if srht_only else 3]:
                    t_o, t_r = time_pair(lambda m=mod, x=x: m(x), dense, device=device,
                                         repeats=repeats, warmup=1)
                    out.append(_row(case, k, device, t_o, t_r, _distortion(x, mod(x), n_pairs),
                                    d_dense, target))
            if device != "cpu" or srht_only:
                continue
            # scikit-learn, CPU, float32 in and out
            for name, ours_cls, sk_cls in (
                    ("Gaussian", GaussianRandomProjection, skrp.GaussianRandomProjection),
                    ("Sparse", SparseRandomProjection, skrp.SparseRandomProjection)):
                ours = ours_cls(d, k, seed=0)
                sk = sk_cls(k, random_state=0).fit(x_np)
                with torch.no_grad():
                    y_ours = ours(x)
                    t_o, t_r = time_pair(lambda o=ours, x=x: o(x), lambda s=sk: s.transform(x_np),
                                         device="cpu", repeats=repeats, warmup=1)
                    out.append(_row(f"{name}RandomProjection vs sklearn, transform", k, "cpu",
                                    t_o, t_r, _distortion(x, y_ours, n_pairs),
                                    _distortion(x, sk.transform(x_np), n_pairs), "<= 1"))

                    def fit_ours(c=ours_cls, k=k, x=x):
                        return c(d, k)(x)

                    def fit_sk(c=sk_cls, k=k):
                        return c(k).fit_transform(x_np)

                    t_o, t_r = time_pair(fit_ours, fit_sk, device="cpu", repeats=repeats,
                                         warmup=1)
                    out.append(_row(f"{name}RandomProjection vs sklearn, fit+transform", k,
                                    "cpu", t_o, t_r, "", "", "<= 1"))
    return out


def fwht_table(repeats: int) -> list[list[str]]:
    out = []
    for device in devices():
        for log_d in range(9, 15):
            d = 1 << log_d
            rows = min(4096, (1 << 22) // d)
            x = torch.randn(rows, d, device=device)
            h = hadamard_matrix(d, normalized=True, device=device)
            torch.testing.assert_close(fwht(x), x @ h, rtol=1e-3, atol=1e-3)
            reps = repeats if d <= 4096 else max(3, repeats // 3)
            t_o, t_r = time_pair(lambda x=x: fwht(x), lambda x=x, h=h: x @ h, device=device,
                                 repeats=reps, warmup=1)
            out.append([f"2^{log_d}", str(rows), device, f"{t_o * 1e3:.2f}", f"{t_r * 1e3:.2f}",
                        f"{t_o / t_r:.3f}", "< 1"])
            del h
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=5000, help="random pairs for distortion")
    parser.add_argument("--skip-projection", action="store_true")
    parser.add_argument("--skip-fwht", action="store_true")
    parser.add_argument("--busy", action="store_true",
                        help="table 1 again with a busy-loop process holding one core")
    parser.add_argument("--srht-only", action="store_true", help="table 1: the SRHT rows only")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"Machine: {machine()}\n")
    if not args.skip_projection:
        print(f"Projections of X ({args.rows}, {args.features}) float32 to k features, median "
              f"of {args.repeats} after warm-up; distortion = max/mean |ratio - 1| of squared "
              f"distances over {args.pairs} random pairs (JL scale: sqrt(8/k) = "
              f"{math.sqrt(8 / 256):.2f} at k=256, {math.sqrt(8 / 1024):.2f} at k=1024).\n")
        for busy in ([False, True] if args.busy else [False]):
            with busy_core(busy):
                print(f"{'Other core busy (a busy-loop process)' if busy else 'Quiet'}; load "
                      f"before: {load()}\n")
                print(markdown_table(
                    ["case", "k", "device", "ours ms", "ref ms", "ratio", "distortion ours",
                     "distortion ref", "target"],
                    projection_table(args.rows, args.features, args.repeats, args.pairs,
                                     args.srht_only)))
                print()
    if not args.skip_fwht:
        print("fwht (normalized) vs dense X @ H_d, float32.\n")
        print(markdown_table(["d", "rows", "device", "fwht ms", "dense ms", "ratio", "target"],
                             fwht_table(max(args.repeats, 9))))


if __name__ == "__main__":
    main()
