"""torch.distributed helpers shared by the streaming fits (private).

Note [distributed statistics]: a fit whose statistics are sums over rows (counts, column
sums, centred scatters, per-cluster sums) all-reduces them with ``SUM`` when a process
group is initialised, so every rank ends with the statistics of the union of the ranks'
batches and fits the same model as one process over all the data (up to summation order).
Every rank must call the same fit methods with the same shapes of statistics, in the same
order (the collectives are matched by order).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks in place when torch.distributed is initialised; returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(t: Tensor) -> Tensor:
    """The rows of ``t`` from every rank, concatenated in rank order (``t`` itself when
    torch.distributed is not initialised). Ranks may hold different row counts; the other
    dimensions, the dtype and the device must agree."""
    if not is_distributed():
        return t
    world = dist.get_world_size()
    count = torch.tensor([t.shape[0]], device=t.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[:t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])
