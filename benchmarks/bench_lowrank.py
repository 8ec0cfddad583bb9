"""Forward+backward time of LowRankLinear against nn.Linear, beside the FLOP ratio.

    python -m benchmarks.bench_lowrank [--features 4096] [--batch 512]
                                       [--ranks 64 128 256 512 1024] [--repeats N]

A 4096 -> 4096 layer at rank r costs r (in + out) multiply-adds per row instead
of in * out: the FLOP ratio r (in + out) / (in * out) is r / 2048 here, break-even
at r = 2048. The measured time ratio (low rank / dense, below 1 means low rank
is faster) shows where that arithmetic turns into wall-clock time: small ranks
do too little work per kernel to reach the dense GEMM's throughput.

Both sides run on the same input (which requires grad, as a hidden layer's would)
in one interleaved loop (``time_pair``); medians after warm-up.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from benchmarks._timing import devices, machine, markdown_table, time_pair
from lamods.layers.lowrank import LowRankLinear


def _step(model: nn.Module, x: torch.Tensor):
    """One forward + backward; gradients are dropped (set to None) each time."""
    def run() -> None:
        for p in model.parameters():
            p.grad = None
        x.grad = None
        model(x).sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096, help="in = out features")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per pair (default: 10 on CPU, 30 on CUDA)")
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.features

    rows = []
    for device in devices():
        repeats = args.repeats or (30 if device == "cuda" else 10)
        warmup = 5 if device == "cuda" else 2
        dense = nn.Linear(n, n, device=device)
        x = torch.randn(args.batch, n, device=device, requires_grad=True)
        for rank in args.ranks:
            low = LowRankLinear(n, n, rank, device=device)
            t_low, t_dense = time_pair(_step(low, x), _step(dense, x), device=device,
                                       repeats=repeats, warmup=warmup)
            flop_ratio = rank * (n + n) / (n * n)
            param_ratio = (rank * (n + n + 1) + n) / (n * n + n)
            rows.append([device, rank, f"{flop_ratio:.3f}", f"{param_ratio:.3f}",
                         f"{t_low * 1e3:.2f}", f"{t_dense * 1e3:.2f}",
                         f"{t_low / t_dense:.3f}", f"{t_dense / t_low:.2f}x"])
        del dense, x

    print(f"LowRankLinear vs nn.Linear, {n} -> {n}, batch {args.batch}, float32, "
          f"forward+backward (input grad too), median after warm-up "
          f"({args.repeats or '10 CPU / 30 CUDA'} repeats).")
    print(f"Machine: {machine()}\n")
    print(markdown_table(
        ["device", "rank", "FLOP ratio r(in+out)/(in*out)", "param ratio", "low-rank ms",
         "dense ms", "time ratio", "speed-up"], rows))


if __name__ == "__main__":
    main()
