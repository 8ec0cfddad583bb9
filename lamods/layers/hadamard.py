r"""Fast Walsh-Hadamard transform over the last dimension, with its own backward.

The Sylvester Hadamard matrix of order :math:`d = 2^n` is

.. math::
    H_1 = [1], \qquad H_{2m} = \begin{bmatrix} H_m & H_m \\ H_m & -H_m \end{bmatrix},
    \qquad (H_d)_{ij} = (-1)^{\operatorname{popcount}(i \,\&\, j)},

symmetric with :math:`H_d H_d = d I`, so :math:`H_d / \sqrt{d}` is orthogonal and
its own inverse. :func:`fwht` computes :math:`y = x H_d` (times :math:`1/\sqrt d`
when ``normalized``) in :math:`O(d \log d)` per row.

Note [radix-m stages]: :math:`H_d = H_{m_1} \otimes H_{m_2} \otimes \dots \otimes H_{m_p}`
for any split :math:`d = m_1 \cdots m_p` into powers of two. Viewing a row as a
tensor of shape :math:`(m_1, \dots, m_p)`, stage :math:`i` multiplies axis
:math:`i` by the small dense :math:`H_{m_i}` (:math:`m_i \le 64`): one batched
matmul per stage, :math:`d \sum_i m_i` flops per row instead of :math:`d^2`.
Radix-2 butterflies (``log2 d`` elementwise passes over memory) and
transpose-then-GEMM stages both measured slower on CPU (see
``benchmarks/bench_projection.py``).

Note [cache blocking]: on CPU the stages run on blocks of rows of up to 256 MiB,
ping-ponging between scratch buffers (allocated once per call, only as many as the
stages need) and writing the last stage straight into the output. Allocating a fresh
full-size tensor per stage costs page faults that measured slower than the matmuls
themselves. The blocks were 2 MiB (cache-sized) before; that issued two parallel
regions per 2 MiB, hundreds per call, and with OpenMP's default (spinning) wait
policy every region waited for a thread descheduled by another process: at
(10000, 4096) float32 on a 2-core machine with other jobs running, ``SRHTProjection``
took 1.35x a dense ``X @ W`` (1.34x with a busy-loop process added) against 0.23x
(0.34x) with one block per stage: two parallel regions per call
(``benchmarks/bench_projection.py --busy``). With one thread, or with
``OMP_WAIT_POLICY=PASSIVE``, 2 MiB blocks were at most 15% faster than one block. Under
``torch.compile`` and on CUDA the same stages run as whole-tensor ops.

Note [adjoint]: the transform is linear and :math:`H_d^T = H_d`, so the
backward of :math:`y = s\,x H_d` is :math:`g \mapsto s\,g H_d`: the same
Function applied to the upstream gradient. The backward is itself
differentiable (double backward works), the forward-mode rule is the same map,
and the ``vmap`` rule moves the vmapped dimension to the front.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lamods._precision import autocast_dtype

__all__ = ["fwht", "hadamard_matrix"]

#: Largest dense Hadamard block applied per stage (Note [radix-m stages]).
MAX_RADIX = 64
#: Most bytes of rows processed per block on CPU (Note [cache blocking]).
CHUNK_BYTES = 1 << 28


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def hadamard_matrix(
    n: int,
    *,
    normalized: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""The Sylvester Hadamard matrix :math:`H_n` (times :math:`1/\sqrt n` if ``normalized``).

    Args:
        n: order, a power of two.
        normalized: scale by :math:`1/\sqrt n` (then the matrix is orthogonal).

    Examples::

        >>> hadamard_matrix(4)
        tensor([[ 1.,  1.,  1.,  1.],
                [ 1., -1.,  1., -1.],
                [ 1.,  1., -1., -1.],
                [ 1., -1., -1.,  1.]])
    """
    if isinstance(n, bool) or not isinstance(n, int) or not _is_power_of_two(n):
        raise ValueError(f"hadamard_matrix: expected n to be a power of two, got {n!r}")
    scale = 1 / math.sqrt(n) if normalized else 1.0
    return _sylvester(n, scale, device=device, dtype=dtype or torch.get_default_dtype())


def _sylvester(m: int, scale: float, *, device: Any, dtype: torch.dtype) -> Tensor:
    # H_{2m} = [[H_m, H_m], [H_m, -H_m]]  (log2 m concatenations; traceable by torch.compile)
    h = torch.full((1, 1), scale, device=device, dtype=dtype)
    while h.shape[0] < m:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


_BLOCKS: dict[tuple[int, float, torch.dtype, torch.device], Tensor] = {}


def _block(m: int, scale: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``scale * H_m``, cached in eager mode (built in the graph under torch.compile)."""
    if torch.compiler.is_compiling():
        return _sylvester(m, scale, device=device, dtype=dtype)
    key = (m, scale, dtype, device)
    h = _BLOCKS.get(key)
    if h is None:
        if len(_BLOCKS) > 256:
            _BLOCKS.clear()
        h = _BLOCKS[key] = _sylvester(m, scale, device=device, dtype=dtype)
    return h


def _radices(d: int) -> list[int]:
    """Split ``d = 2^n`` into the fewest near-equal powers of two each <= MAX_RADIX."""
    n = d.bit_length() - 1
    if n == 0:
        return [1]
    per = MAX_RADIX.bit_length() - 1
    stages = -(-n // per)
    base, extra = divmod(n, stages)
    return [1 << (base + (i < extra)) for i in range(stages)]


def _stage(src: Tensor, h: Tensor, m: int, c: int, out: Tensor | None) -> Tensor:
    # src viewed as (rows, a, m, c): multiply the m axis by H_m (symmetric, so side is free)
    if c == 1:
        return torch.mm(src.reshape(-1, m), h, out=None if out is None else out.view(-1, m))
    return torch.matmul(h, src.reshape(-1, m, c), out=None if out is None else out.view(-1, m, c))


def _fwht_2d(x: Tensor, scale: float) -> Tensor:
    """``scale * x @ H_d`` for a contiguous ``x`` of shape ``(N, d)``."""
    n_rows, d = x.shape
    radices = _radices(d)
    mats = [_block(m, scale if i == len(radices) - 1 else 1.0, x.dtype, x.device)
            for i, m in enumerate(radices)]
    if len(radices) == 1:
        return torch.mm(x, mats[0])
    if torch.compiler.is_compiling() or x.device.type != "cpu":
        y, c = x, d
        for m, h in zip(radices, mats):
            c //= m
            y = _stage(y, h, m, c, None)
        return y.reshape(n_rows, d)
    # Note [cache blocking]
    out = torch.empty_like(x)
    rows = max(1, CHUNK_BYTES // (d * x.element_size()))
    scratch: list[Tensor] = []
    last = len(radices) - 1
    for r0 in range(0, n_rows, rows):
        r1 = min(n_rows, r0 + rows)
        src, c = x[r0:r1], d
        for i, (m, h) in enumerate(zip(radices, mats)):
            c //= m
            if i == last:
                dst = out[r0:r1]
            else:
                if len(scratch) <= i % 2:
                    scratch.append(torch.empty(min(rows, n_rows), d, dtype=x.dtype,
                                               device=x.device))
                dst = scratch[i % 2][: r1 - r0]
            src = _stage(src, h, m, c, dst)
    return out


class _FWHTFn(torch.autograd.Function):
    """``y = scale * x H_d`` over the last dimension; Note [adjoint] for the backward."""

    @staticmethod
    def forward(x: Tensor, scale: float) -> Tensor:
        # x: (*, d) -> (*, d)
        d = x.shape[-1]
        return _fwht_2d(x.reshape(-1, d).contiguous(), scale).reshape(x.shape)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None]:
        # dL/dx = scale * g H_d^T = scale * g H_d  (H_d is symmetric)
        return _FWHTFn.apply(g, ctx.scale) if ctx.needs_input_grad[0] else None, None

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor, _scale_t: Any) -> Tensor:
        return _FWHTFn.apply(x_t, ctx.scale)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, scale: float) -> tuple[Tensor, int | None]:
        if in_dims[0] is None:
            return _FWHTFn.apply(x, scale), None
        # the vmapped dimension goes to the front; the transformed one stays last
        return _FWHTFn.apply(x.movedim(in_dims[0], 0), scale), 0


def _check_fwht_input(name: str, x: object) -> int:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected input of shape (*, d) with d a power of two, "
                         "got a 0-dimensional tensor")
    d = x.shape[-1]
    if not _is_power_of_two(d):
        raise ValueError(
            f"{name}: expected the last dimension to be a power of two, got {d} "
            f"(input shape {tuple(x.shape)}); zero-pad it to {1 << max(d - 1, 0).bit_length()}"
        )
    return d


def _scaled_fwht(x: Tensor, scale: float) -> Tensor:
    """``scale * x H_d`` with the autocast handling of :func:`fwht` (no input checks)."""
    if torch.compiler.is_compiling():
        # Dynamo does not trace Functions with a custom jvp: there the whole-tensor stages
        # are plain differentiable ops, and autograd derives the same (exact) backward
        d = x.shape[-1]
        return _fwht_2d(x.reshape(-1, d).contiguous(), scale).reshape(x.shape)
    dtype = autocast_dtype(x)
    if dtype is None:
        return _FWHTFn.apply(x, scale)
    with torch.autocast(x.device.type, enabled=False):
        return _FWHTFn.apply(x.to(dtype), scale)


def fwht(x: Tensor, normalized: bool = True) -> Tensor:
    r"""Fast Walsh-Hadamard transform of the last dimension: :math:`y = x H_d / \sqrt d`.

    :math:`(H_d)_{ij} = (-1)^{\operatorname{popcount}(i \& j)}` is the Sylvester
    (natural-order) Hadamard matrix, so ``fwht(x, normalized=False)`` equals
    ``x @ hadamard_matrix(d)``. Cost :math:`O(d \log d)` per row, computed as a
    few batched matmuls with blocks :math:`H_m`, :math:`m \le 64` (see the
    module notes). Normalized, the transform is orthogonal and its own inverse:
    ``fwht(fwht(x)) == x``. Differentiable (twice), with ``torch.func`` rules;
    follows autocast like a matmul.

    Args:
        x: input of shape ``(*, d)``, ``d`` a power of two, floating point.
        normalized: scale by :math:`1/\sqrt d`.

    Shape:
        - Input: :math:`(*, d)`.
        - Output: :math:`(*, d)`.

    Examples::

        >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0]), normalized=False)
        tensor([1., 1., 1., 1.])
        >>> x = torch.randn(3, 1024)
        >>> torch.allclose(fwht(fwht(x)), x, atol=1e-5)
        True
    """
    d = _check_fwht_input("fwht", x)
    return _scaled_fwht(x, 1 / math.sqrt(d) if normalized else 1.0)
