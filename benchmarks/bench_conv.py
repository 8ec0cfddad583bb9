"""Forward+backward time of ManualConv2d (im2col + one matmul) against nn.Conv2d.

    python -m benchmarks.bench_conv [--repeats 20]

Both sides get the same weights and the same input in one run; the table shows medians
after warm-up and the ratio ours / torch (below 1 means we are faster). nn.Conv2d runs
oneDNN / cuDNN kernels; ours materialises the unfolded input (``C_in k_h k_w`` times the
input's size), so expect it to lose most where that copy is large.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from benchmarks._timing import devices, machine, markdown_table, time_pair
from lamods import ManualConv2d

#: (name, batch, C_in, C_out, H = W, conv kwargs)
CASES = [
    ("digits conv1", 256, 1, 16, 8, {"kernel_size": 3, "padding": 1}),
    ("digits conv2", 256, 16, 32, 8, {"kernel_size": 3, "padding": 1, "stride": 2}),
    ("MNIST 5x5", 128, 1, 32, 28, {"kernel_size": 5, "padding": 2}),
    ("CIFAR 3x3", 64, 64, 64, 32, {"kernel_size": 3, "padding": 1}),
    ("CIFAR 3x3 groups=8", 64, 64, 64, 32, {"kernel_size": 3, "padding": 1, "groups": 8}),
    ("CIFAR 1x1", 64, 64, 128, 32, {"kernel_size": 1}),
]


def _step(model: nn.Module, x: torch.Tensor) -> object:
    """One forward + backward (input and parameter gradients), gradients dropped each time."""
    def run() -> None:
        for p in model.parameters():
            p.grad = None
        x.grad = None
        model(x).sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for device in devices():
        for name, batch, c_in, c_out, size, kwargs in CASES:
            ref = nn.Conv2d(c_in, c_out, device=device, **kwargs)
            ours = ManualConv2d.from_conv2d(ref)
            x = torch.randn(batch, c_in, size, size, device=device, requires_grad=True)
            t_ours, t_ref = time_pair(_step(ours, x), _step(ref, x), device=device,
                                      repeats=args.repeats)
            shape = f"{batch}x{c_in}x{size}x{size} -> {c_out}, " + ", ".join(
                f"{k}={v}" for k, v in kwargs.items())
            rows.append([name, shape, device, f"{t_ours * 1e3:.3f}", f"{t_ref * 1e3:.3f}",
                         f"{t_ours / t_ref:.2f}"])
    print(f"Forward+backward (input and weight gradients), float32, median of {args.repeats} "
          "after warm-up.")
    print(f"Machine: {machine()}\n")
    print(markdown_table(["case", "shape", "device", "ours ms", "nn.Conv2d ms", "ratio"], rows))


if __name__ == "__main__":
    main()
