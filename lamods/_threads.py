"""Run a stretch of small torch operations on one intra-op thread.

Note [one thread for small ops]: an iterative loop of many small tensor operations (a
sparse product of an ``n x 20`` block, a Cholesky of ``20 x 20``, a top-k over a few
thousand entries) gains little from torch's intra-op threads: each operation is one
OpenMP fork/join whose barrier costs about as much as the work. When another process
holds a core, a barrier waits for a descheduled thread and the loop slows down by one to
two orders of magnitude (measured on the 2-core development machine with one other busy
process: the sparse spectral eigensolver on 5,000 points 3.7-8.7 s on two threads against
0.13 s on one; the cell-pruned kNN graph of 100,000 points 118 s against 7.8 s;
``benchmarks/bench_spectral.py``). Such loops run under :func:`one_thread`; large dense
products (a brute-force distance block) keep the threads. ``torch.set_num_threads`` is
process-wide, so other Python threads of the process see one thread meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Note [one thread for small ops]: torch's intra-op threads set to 1 inside the block,
    restored after (also on an exception)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
