r"""Streamed products with the ``n x m`` kernel matrix :math:`K_{nm} = K(X, C)` (private).

:class:`KnmStream` gives :math:`K_{nm}^T (K_{nm} V)`, :math:`K_{nm}^T Y` and the
statistics :math:`K_{nm}^T K_{nm}` without ever holding :math:`K_{nm}`: it walks ``X`` in
row blocks, computes one block :math:`K_b` into a preallocated buffer and accumulates
:math:`K_b^T (K_b V)`. It is the kernel pass of :class:`~lamods.layers.NystromKernelRidge`
(one per conjugate-gradient iteration: the whole cost of FALKON at large ``n``).

Note [fused RBF pass]: for the :class:`~lamods.layers.RBFKernel` the block is computed in
place in four sweeps over one ``(rows, m)`` buffer,

.. math:: K_b = \exp\big(\min(0,\; 2\gamma\, x c^T - \gamma \|c\|^2 - \gamma \|x\|^2)\big)
          = \exp(-\gamma \|x - c\|^2), \qquad \gamma = 1 / (2 l^2),

one ``addmm`` (with :math:`2\gamma C^T` and :math:`-\gamma\|c\|^2` made once) then
``sub_``, ``clamp_max_`` (the clamp of the squared distance at 0), ``exp_``. What the
kernel module does per call is done once for all the blocks here: the centring and
power-of-two scaling of ``X`` and ``C`` (Note [centring trick], Note [power-of-two
scaling] in :mod:`lamods.distances`: the same frame for the whole data, so the same
digits as the module up to float rounding) and the NaN policy (the fit checked ``X``
finite once; no per-block check). Blocks are ``256`` rows by default, so the ``(256, m)``
buffer (5 MB in float32 at ``m = 5000``) can stay in cache between the ``addmm``, the
element-wise sweeps and the two products. Measured (``python -m benchmarks.bench_scale knm``,
``n = 10^5``, ``m = 5000``, ``d = 28``, float32, 2 threads, interleaved, but at load
average 11 on 2 cores, so to be re-measured): 5.19 s per pass against 8.85 s for the kernel
module called per block of :math:`2^{22}/m` rows (0.59x); 1024 and 4096 rows per block
0.82x and 0.62x; float64 data 1.15x. When folding :math:`\gamma` into the
product could overflow (a lengthscale tiny against the data's spread), and for every
other kernel, the blocks come from the kernel module's own ``_prepare`` / ``_block``
(prepared once).

Note [mixed-precision accumulation]: the block products run in the data's dtype (float32
data: float32 kernel blocks, half the memory traffic of float64); each block's
:math:`K_b^T U` is added into an accumulator of ``acc_dtype`` (float64 for float32 data),
so the sum over the ``n / rows`` blocks adds error at float64's level only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lamods._matmul import at_b
from lamods.distances import ScaledFrame, row_sq_norms
from lamods.layers.kernels import Kernel, RBFKernel

__all__ = ["KnmStream", "accumulation_dtype"]

#: rows per block of the fused RBF pass (Note [fused RBF pass])
FUSED_ROWS = 256


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for the sums of float32 (or half) blocks (Note [mixed-precision accumulation])."""
    return torch.float64 if dtype != torch.float64 else dtype


class KnmStream:
    r"""Row-block products with :math:`K(X, C)` for data ``X`` ``(n, d)`` already checked
    finite and centres ``C`` ``(m, d)`` (module docstring). No autograd."""

    def __init__(self, kernel: Kernel, X: Tensor, C: Tensor, rows: int | None = None) -> None:
        self.kernel, self.X, self.C = kernel, X, C
        self.n, self.m = X.shape[0], C.shape[0]
        self.acc_dtype = accumulation_dtype(X.dtype)
        self.fused = False
        if type(kernel) is RBFKernel:
            self.fused = self._prepare_rbf()
        if self.fused:
            self.rows = rows if rows is not None else FUSED_ROWS
        else:
            # the kernel module's per-call preparation (centring, scaling), once
            self.Xp, self.Cp, self.ctx = kernel._prepare(X, C, False)
            self.rows = rows if rows is not None else max(1, 2 ** 22 // self.m)
        self.buf = X.new_empty(min(self.rows, self.n), self.m) if self.fused else None

    @torch.no_grad()
    def _prepare_rbf(self) -> bool:
        """The operands of Note [fused RBF pass]; False when they would overflow."""
        X, C = self.X, self.C
        frame = ScaledFrame.of(X, C)
        Xs, Cs = frame.apply(X), frame.apply(C)
        # l' = l / s on the scaled points (as RBFKernel._block); gamma = 1 / (2 l'^2)
        ls = float(self.kernel.lengthscale) / float(frame.s.reshape(()))
        gamma = 0.5 / ls ** 2 if ls > 0 else math.inf
        # |x'|, |c'| < 2 per entry: every term is at most 4 d gamma (plus rounding)
        if not 8 * X.shape[1] * gamma < torch.finfo(X.dtype).max:
            return False
        self.x_sq = row_sq_norms(Xs).mul_(gamma)  # gamma ||x||^2  (n,)
        self.c_sq = Cs.square().sum(1).mul_(-gamma)[None]  # -gamma ||c||^2  (1, m)
        self.Ct2 = (Cs.mT * (2 * gamma)).contiguous()  # 2 gamma C^T  (d, m)
        self.Xs = Xs
        return True

    def block(self, i: int) -> Tensor:
        """:math:`K_b` for rows ``i:i+rows`` (a view of the shared buffer on the fused path:
        valid until the next call)."""
        e = min(self.n, i + self.rows)
        if not self.fused:
            return self.kernel._block(self.Xp[i:e], self.Cp, None, self.ctx)
        b = self.buf[:e - i]
        # Note [fused RBF pass]: exp(min(0, 2 gamma x c^T - gamma ||c||^2 - gamma ||x||^2))
        torch.addmm(self.c_sq, self.Xs[i:e], self.Ct2, out=b)
        return b.sub_(self.x_sq[i:e, None]).clamp_max_(0).exp_()

    @torch.no_grad()
    def gram_products(self, V: Tensor) -> Tensor:
        r""":math:`K_{nm}^T (K_{nm} V) = \sum_b K_b^T (K_b V)` for ``V`` ``(m, k)``, in
        ``acc_dtype`` (Note [mixed-precision accumulation])."""
        Vb = V.to(self.X.dtype)
        out = torch.zeros(self.m, V.shape[1], dtype=self.acc_dtype, device=V.device)
        for i in range(0, self.n, self.rows):
            Kb = self.block(i)
            out.add_(at_b(Kb, Kb @ Vb))
        return out

    @torch.no_grad()
    def cross(self, Y: Tensor) -> Tensor:
        r""":math:`K_{nm}^T Y = \sum_b K_b^T Y_b` for ``Y`` ``(n, k)``, in ``acc_dtype``."""
        out = torch.zeros(self.m, Y.shape[1], dtype=self.acc_dtype, device=Y.device)
        for i in range(0, self.n, self.rows):
            Kb = self.block(i)
            out.add_(at_b(Kb, Y[i:i + Kb.shape[0]]))
        return out

    @torch.no_grad()
    def statistics(self, Y: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(K_{nm}^T K_{nm},\ K_{nm}^T Y)`, ``(m, m)`` and ``(m, k)``, in
        ``acc_dtype``: sums over the rows (the streamed fit's statistics)."""
        G = torch.zeros(self.m, self.m, dtype=self.acc_dtype, device=Y.device)
        R = torch.zeros(self.m, Y.shape[1], dtype=self.acc_dtype, device=Y.device)
        tmp = self.X.new_empty(self.m, self.m)  # one block's K_b^T K_b, reused
        for i in range(0, self.n, self.rows):
            Kb = self.block(i)
            G.add_(torch.mm(Kb.mT, Kb, out=tmp))
            R.add_(at_b(Kb, Y[i:i + Kb.shape[0]]))
        return (G + G.mT) / 2, R

