"""Timing helpers shared by the benchmark scripts: interleaved medians and a Markdown table."""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pair(
    ours: Callable[[], object],
    reference: Callable[[], object],
    *,
    device: str,
    repeats: int = 30,
    warmup: int = 5,
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``reference``, run alternately after warm-up.

    Alternating the two in one loop means a slow patch of the machine (another
    process, frequency scaling) hits both alike, so their ratio stays fair.
    """
    for _ in range(warmup):
        ours()
        reference()
    _sync(device)
    t_ours: list[float] = []
    t_ref: list[float] = []
    for i in range(repeats):
        pair = ((ours, t_ours), (reference, t_ref))
        for fn, sink in pair if i % 2 == 0 else pair[::-1]:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            sink.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_ref)


def time_blocks(
    ours: Callable[[], object],
    reference: Callable[[], object],
    *,
    device: str,
    repeats: int = 9,
    rounds: int = 2,
) -> tuple[float, float]:
    """Best-of-``rounds`` medians of ``repeats`` back-to-back runs of each side, in blocks.

    For a pair of libraries whose thread pools disturb each other when they alternate
    (numpy's OpenBLAS spins its pthreads after each call, holding a core while torch runs
    next; ``OMP_WAIT_POLICY`` does not reach them): each side runs alone within a block.
    """
    best_o = best_r = math.inf
    for _ in range(rounds):
        for fn, which in ((ours, "o"), (reference, "r")):
            fn()
            _sync(device)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - start)
            med = statistics.median(times)
            if which == "o":
                best_o = min(best_o, med)
            else:
                best_r = min(best_r, med)
    return best_o, best_r


def devices() -> list[str]:
    """CPU, plus CUDA when present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    line = (f"{platform.system()} {cpu}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")
    if torch.cuda.is_available():
        line += f", {torch.cuda.get_device_name()}"
    return line


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def busy_core(on: bool = True) -> Iterator[None]:
    """Run the block with a busy-loop process (``python -c 'while True: pass'``) holding one
    core, as another user's job would (nothing when ``on`` is False); it is killed after."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        proc.kill()
        proc.wait()


def load() -> str:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``), or "n/a"."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"
