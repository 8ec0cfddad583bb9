"""Forward+backward time of ManualLinear / ManualMLP against nn.Linear / nn.Sequential.

    python benchmarks/bench_layers.py [--repeats 30]

Both sides get the same weights and the same input in one run; the table shows
medians after warm-up and the ratio ours / torch (below 1 means we are faster).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from benchmarks._timing import devices, machine, markdown_table, time_pair
from lamods import ManualLinear, ManualMLP


def _step(model: nn.Module, x: torch.Tensor) -> object:
    """One forward + backward; gradients are dropped (set to None) each time."""
    def run() -> None:
        for p in model.parameters():
            p.grad = None
        if x.grad is not None:
            x.grad = None
        model(x).sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    for device in devices():
        for dtype in (torch.float32, torch.float64):
            ref = nn.Linear(1024, 1024, device=device, dtype=dtype)
            ours = ManualLinear.from_linear(ref)
            x = torch.randn(args.batch, 1024, device=device, dtype=dtype, requires_grad=True)
            t_ours, t_ref = time_pair(_step(ours, x), _step(ref, x), device=device,
                                      repeats=args.repeats)
            rows.append(["ManualLinear vs nn.Linear", "1024->1024, input grad", device,
                         str(dtype).removeprefix("torch."), f"{t_ours * 1e3:.3f}",
                         f"{t_ref * 1e3:.3f}", f"{t_ours / t_ref:.3f}", "<= 1.05"])
        for dtype in (torch.float32, torch.float64):
            ours = ManualMLP([784, 512, 256, 10], device=device, dtype=dtype)
            ref = ours.to_sequential()
            x = torch.randn(args.batch, 784, device=device, dtype=dtype)
            t_ours, t_ref = time_pair(_step(ours, x), _step(ref, x), device=device,
                                      repeats=args.repeats)
            rows.append(["ManualMLP vs nn.Sequential", "784-512-256-10 relu", device,
                         str(dtype).removeprefix("torch."), f"{t_ours * 1e3:.3f}",
                         f"{t_ref * 1e3:.3f}", f"{t_ours / t_ref:.3f}", "<= 1.00"])

    print(f"Forward+backward, batch {args.batch}, median of {args.repeats} after warm-up.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(
        ["case", "shape", "device", "dtype", "ours ms", "torch ms", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
