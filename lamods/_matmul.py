r"""Matrix products in the orientation the CPU BLAS runs fast.

Note [transposed thin products]: torch's CPU ``matmul`` hands :math:`A^\top B` (``A.mT @ B``)
to MKL as a GEMM with a transposed first operand. When ``B`` has only a few columns, MKL on
the project's AMD CPU runs that shape 5-12x slower than the same product formed as
:math:`(B^\top A)^\top` (measured on the 2-core VM, float32 and float64: ``A`` 4,000 x 2,048
and ``B`` 4,000 x 10, 66 ms against 5 ms; 20,000 x 512 by 20,000 x 10, 73 ms against 7 ms;
the same within 10% when ``B`` has as many columns as ``A``). :func:`at_b` picks the faster
orientation; the sums are the same up to their order.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["at_b"]


def at_b(A: Tensor, B: Tensor) -> Tensor:
    """:math:`A^\\top B` for ``A`` ``(*, m, p)`` and ``B`` ``(*, m, q)``: ``(*, p, q)``.

    On CPU with ``q < p`` formed as :math:`(B^\\top A)^\\top` (Note [transposed thin
    products]); the result is then a transposed view.
    """
    if A.device.type == "cpu" and B.shape[-1] < A.shape[-1]:
        return (B.mT @ A).mT
    return A.mT @ B
