r"""Kernels: batched, memory-bounded Gram matrices :math:`K_{ij} = k(x_i, y_j)`.

The kernel trick: a positive-definite kernel is an inner product of feature maps,
:math:`k(x, y) = \langle \varphi(x), \varphi(y) \rangle`. The modules here give
the exact Gram matrix; :mod:`lamods.layers.random_features` and
:mod:`lamods.layers.kernel_heads` approximate and use it.

- :class:`RBFKernel`: :math:`\exp(-\|x-y\|^2 / (2 l^2))`
  (scikit-learn's ``rbf_kernel`` with ``gamma = 1/(2 l^2)``; ``gamma=`` is accepted).
- :class:`LaplacianKernel`: :math:`\exp(-\|x-y\|_1 / l)` (``gamma = 1/l``).
- :class:`PolynomialKernel`: :math:`(\gamma \langle x, y\rangle + c_0)^p`.
- :class:`LinearKernel`: :math:`\langle x, y \rangle`.
- :class:`CosineKernel`: :math:`\langle x, y \rangle / (\|x\| \|y\|)` (0 for a zero row).

Every kernel maps ``X (*, n, d)`` and ``Y (*, m, d)`` (batch dimensions
broadcast) to the Gram matrix ``(*, n, m)``, computed in row blocks of ``X`` so
that no intermediate holds more than about ``block_elements`` entries. With
``Y`` omitted (or ``Y is X``) the Gram matrix is exactly symmetric and the RBF
squared distances are clamped at 0, so the RBF Gram matrix is PSD up to rounding.

Positive hyperparameters (``lengthscale``) are stored as their logarithm
(:mod:`lamods._hyperparams`): :math:`l = \exp(\log l)` stays positive under any
gradient step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamods._hyperparams import register_log_positive
from lamods._precision import compute_dtype, pow2_at_least
from lamods._validation import check_features, check_positive, check_positive_int
from lamods.distances import ScaledFrame, sq_distances

__all__ = [
    "BLOCK_ELEMENTS",
    "CosineKernel",
    "Kernel",
    "LaplacianKernel",
    "LinearKernel",
    "PolynomialKernel",
    "RBFKernel",
    "make_kernel",
]

#: default budget (entries) of one row block's intermediate tensors
BLOCK_ELEMENTS = 1 << 24


def check_pair(name: str, X: object, Y: object) -> None:
    """Check ``X (*, n, d)`` and ``Y (*, m, d)``: floating tensors of equal width."""
    if not isinstance(X, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor X, got {type(X).__name__}")
    if X.dim() < 2:
        raise ValueError(f"{name}: expected X of shape (*, n, d), got shape {tuple(X.shape)}")
    check_features(name, X, X.shape[-1])
    if X.shape[-1] == 0:
        raise ValueError(f"{name}: expected at least one feature (X of shape (*, n, d) with "
                         f"d >= 1), got shape {tuple(X.shape)}")
    if Y is not X:
        check_features(name, Y, X.shape[-1])
        if Y.dim() < 2:  # type: ignore[union-attr]
            raise ValueError(f"{name}: expected Y of shape (*, m, d), got shape "
                             f"{tuple(Y.shape)}")  # type: ignore[union-attr]


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------
class Kernel(nn.Module):
    """Base class: ``kernel(X, Y=None)`` returns the Gram matrix ``(*, n, m)``.

    Subclasses implement :meth:`_block`, the Gram matrix of a row block of ``X``
    against all of ``Y`` (both already in the compute dtype), and may override
    :meth:`_prepare`, run once before the blocks, whose third result (``ctx``) every
    block receives.

    NaN: a kernel is a layer (Note [NaN policy] in :mod:`lamods.base`): it does not
    check its inputs, and a NaN or infinite row ``i`` of ``X`` (or ``j`` of ``Y``) gives
    non-finite values in row ``i`` (column ``j``) of the Gram matrix only.

    Args:
        block_elements: the largest number of entries one row block's
            intermediates may hold (``(rows, m)`` for distances).
    """

    def __init__(self, *, block_elements: int = BLOCK_ELEMENTS) -> None:
        super().__init__()
        self.block_elements = check_positive_int(type(self).__name__, "block_elements",
                                                 block_elements)

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        raise NotImplementedError

    def _prepare(self, X: Tensor, Y: Tensor, same: bool) -> tuple[Tensor, Tensor, Any]:
        """Transform ``X`` and ``Y`` once before the blocks (identity by default), and give
        the ``ctx`` the blocks receive."""
        return X, Y, None

    def forward(self, X: Tensor, Y: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        same = Y is None or Y is X
        Y = X if Y is None else Y
        check_pair(name, X, Y)
        if X.device != Y.device or X.dtype != Y.dtype:
            raise TypeError(f"{name}: expected X and Y with the same device and dtype, got "
                            f"{X.device}/{X.dtype} and {Y.device}/{Y.dtype}")
        if X.shape[-2] == 0 or Y.shape[-2] == 0:  # no pairs: an empty Gram matrix
            batch = torch.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
            return X.new_zeros(*batch, X.shape[-2], Y.shape[-2])
        X, Y, ctx = self._prepare(X, Y, same)
        m = Y.shape[-2]
        batch = math.prod(torch.broadcast_shapes(X.shape[:-2], Y.shape[:-2]))
        rows = max(1, self.block_elements // max(1, batch * m))  # (rows, m) per block
        n = X.shape[-2]
        if same and X.dim() == 2 and rows < n and not (torch.is_grad_enabled() and any(
                t.requires_grad for t in (X, *self.parameters()))):
            return self._symmetric_blocks(X, rows, ctx)
        if rows >= n:
            K = self._block(X, Y, 0 if same else None, ctx)
        else:
            K = torch.cat([self._block(X[..., s:s + rows, :], Y, s if same else None, ctx)
                           for s in range(0, n, rows)], dim=-2)
        if same:
            K = 0.5 * (K + K.mT)  # exactly symmetric: K = (K + K^T) / 2
        return K

    def _symmetric_blocks(self, X: Tensor, rows: int, ctx: Any) -> Tensor:
        """``K(X, X)`` without autograd from its upper block rows (half the work), mirrored."""
        n = X.shape[-2]
        K = X.new_empty(n, n)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            B = self._block(X[s:e], X[s:], 0, ctx)  # K[s:e, s:]
            D = B[:, :e - s]
            K[s:e, s:e] = 0.5 * (D + D.mT)  # exactly symmetric diagonal block
            K[s:e, e:] = B[:, e - s:]
            K[e:, s:e] = B[:, e - s:].mT
        return K


class _LengthscaleKernel(Kernel):
    """A stationary kernel with one positive lengthscale :math:`l` (stored as :math:`\\log l`)."""

    def __init__(self, lengthscale: float = 1.0, *, learnable_lengthscale: bool = False,
                 block_elements: int = BLOCK_ELEMENTS, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(block_elements=block_elements)
        register_log_positive(self, "lengthscale", lengthscale, learnable_lengthscale,
                              type(self).__name__, device=device, dtype=dtype)

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    def extra_repr(self) -> str:
        return f"lengthscale={self.lengthscale.item():.4g}"


class RBFKernel(_LengthscaleKernel):
    r"""Gaussian kernel :math:`k(x, y) = \exp(-\|x - y\|^2 / (2 l^2))`.

    Squared distances come from :func:`lamods.distances.sq_distances`: both sets
    centred on the mean of ``X``'s finite rows (less cancellation; a NaN row stays in
    its own row and column), clamped at 0, exactly 0 on the diagonal of ``kernel(X)``.
    Note [power-of-two scaling] (:mod:`lamods._precision`): the centred sets are
    divided by a power of two :math:`s` near their largest entry and the kernel is
    :math:`\exp(-\|x' - y'\|^2 / (2 (l/s)^2))` on the scaled points
    (:class:`lamods.distances.ScaledFrame`),
    the same number (bit for bit on data of ordinary size) with no overflow for data
    at ``1e30`` and no underflow at ``1e-30`` in float32. scikit-learn's parametrisation
    :math:`\exp(-\gamma \|x - y\|^2)` is the same kernel with
    :math:`\gamma = 1 / (2 l^2)`: pass ``gamma=`` instead of ``lengthscale``.

    Args:
        lengthscale: :math:`l > 0` (default 1 when ``gamma`` is not given either).
        gamma: alternatively :math:`\gamma > 0`; :math:`l = 1/\sqrt{2\gamma}`.
        learnable_lengthscale: make :math:`\log l` an ``nn.Parameter``.
        block_elements: memory budget of one row block (see :class:`Kernel`).

    Examples::

        >>> k = RBFKernel(lengthscale=1.0)
        >>> k(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        tensor([[1.0000, 0.3679],
                [0.3679, 1.0000]])
        >>> torch.equal(RBFKernel(gamma=0.5)(torch.eye(2)), RBFKernel(1.0)(torch.eye(2)))
        True
    """

    def __init__(self, lengthscale: float | None = None, *, gamma: float | None = None,
                 learnable_lengthscale: bool = False, block_elements: int = BLOCK_ELEMENTS,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        name = type(self).__name__
        if gamma is not None:
            if lengthscale is not None:
                raise ValueError(f"{name}: expected at most one of lengthscale and gamma, "
                                 f"got lengthscale={lengthscale!r} and gamma={gamma!r}")
            check_positive(name, "gamma", gamma)
            lengthscale = 1.0 / math.sqrt(2.0 * gamma)  # gamma = 1 / (2 l^2)
        super().__init__(1.0 if lengthscale is None else lengthscale,
                         learnable_lengthscale=learnable_lengthscale,
                         block_elements=block_elements, device=device, dtype=dtype)

    def _prepare(self, X: Tensor, Y: Tensor, same: bool) -> tuple[Tensor, Tensor, Any]:
        # Note [centring trick] (lamods.distances), once for all the row blocks, on the
        # finite rows only (a NaN row must not reach the other rows' distances), and
        # Note [power-of-two scaling]: x' = (x - c) / s, and l' = l / s (exact)
        frame = ScaledFrame.of(X, *(() if same else (Y,)))
        Xs = frame.apply(X)
        return Xs, (Xs if same else frame.apply(Y)), frame

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        l = self.lengthscale.to(Xb.dtype)  # noqa: E741
        if ctx is not None:  # l' = l / s, on the scaled points
            # (one scale: a 0-dim tensor, which elementwise ops treat as a fast scalar)
            l = l / (ctx.s.reshape(()) if ctx.s.numel() == 1 else ctx.s)  # noqa: E741
        sq = sq_distances(Xb, Y, center=False, diag_offset=diag_offset)
        # 1 / (2 l^2), finite even where l^2 underflows (then every distinct pair gives 0)
        half_inv = 0.5 / (l * l).clamp_min(torch.finfo(Xb.dtype).tiny)
        if not (torch.is_grad_enabled() and (sq.requires_grad or l.requires_grad)):
            return sq.mul_(-half_inv).exp_()  # in place: one (rows, m) buffer
        return torch.exp(-sq * half_inv)  # k = exp(-||x - y||^2 / (2 l^2))


class LaplacianKernel(_LengthscaleKernel):
    r"""Laplacian kernel :math:`k(x, y) = \exp(-\|x - y\|_1 / l)`.

    Args:
        lengthscale: :math:`l > 0` (scikit-learn's ``gamma = 1/l``).
        learnable_lengthscale: make :math:`\log l` an ``nn.Parameter``.

    Examples::

        >>> LaplacianKernel(2.0)(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.3679]])
    """

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        work = compute_dtype(Xb.dtype)  # cdist has no half-precision kernel: float32
        l = self.lengthscale.to(work)  # noqa: E741
        dist = torch.cdist(Xb.to(work), Y.to(work), p=1.0)  # ||x - y||_1, exact differences
        return torch.exp(-dist / l).to(Xb.dtype)  # k = exp(-||x - y||_1 / l)


class PolynomialKernel(Kernel):
    r"""Polynomial kernel :math:`k(x, y) = (\gamma \langle x, y \rangle + c_0)^p`.

    Args:
        degree: :math:`p`, a positive int.
        gamma: :math:`\gamma > 0`; None uses :math:`1/d` (scikit-learn's default).
        coef0: :math:`c_0`.

    Examples::

        >>> PolynomialKernel(degree=2, gamma=1.0, coef0=1.0)(torch.tensor([[1.0, 2.0]]))
        tensor([[36.]])
    """

    def __init__(self, degree: int = 3, gamma: float | None = None, coef0: float = 1.0, *,
                 block_elements: int = BLOCK_ELEMENTS) -> None:
        super().__init__(block_elements=block_elements)
        self.degree = check_positive_int("PolynomialKernel", "degree", degree)
        if gamma is not None:
            check_positive("PolynomialKernel", "gamma", gamma)
        self.gamma = gamma
        self.coef0 = float(coef0)

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        gamma = 1.0 / Xb.shape[-1] if self.gamma is None else self.gamma
        return (gamma * (Xb @ Y.mT) + self.coef0) ** self.degree  # (g <x, y> + c0)^p

    def extra_repr(self) -> str:
        return f"degree={self.degree}, gamma={self.gamma}, coef0={self.coef0}"


class LinearKernel(Kernel):
    r"""Linear kernel :math:`k(x, y) = \langle x, y \rangle`.

    Examples::

        >>> LinearKernel()(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([[11.]])
    """

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        return Xb @ Y.mT  # k = <x, y>


def _pow2_rows(X: Tensor) -> Tensor:
    """Each row divided by a power of two near its largest |entry| (1 for a zero or
    non-finite row): exact, and the row's norm is then representable."""
    if X.shape[-1] == 0:
        return X
    peak = X.detach().abs().amax(-1, keepdim=True)
    return X / pow2_at_least(peak.to(compute_dtype(peak.dtype))).to(X.dtype)


class CosineKernel(Kernel):
    r"""Cosine similarity :math:`k(x, y) = \langle x, y \rangle / (\|x\| \|y\|)`.

    A zero row has similarity 0 with everything (as scikit-learn's ``cosine_similarity``).

    Examples::

        >>> CosineKernel()(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.7071]])
    """

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None, ctx: Any = None) -> Tensor:
        # <x, y> / (|x| |y|) through unit rows (zero rows stay zero); each row is first
        # divided by a power of two near its largest entry (exact), so |x| neither
        # overflows nor underflows: the cosine is scale invariant, and so is this
        return F.normalize(_pow2_rows(Xb), dim=-1) @ F.normalize(_pow2_rows(Y), dim=-1).mT


_KERNELS: dict[str, type[Kernel]] = {
    "rbf": RBFKernel,
    "laplacian": LaplacianKernel,
    "polynomial": PolynomialKernel,
    "linear": LinearKernel,
    "cosine": CosineKernel,
}


def make_kernel(kernel: str | Kernel, name: str = "make_kernel", **kernel_params: Any) -> Kernel:
    """A kernel module from a name (``"rbf"``, ``"laplacian"``, ``"polynomial"``,
    ``"linear"``, ``"cosine"``) and its parameters, or ``kernel`` itself if a module.

    Examples::

        >>> make_kernel("rbf", lengthscale=2.0)
        RBFKernel(lengthscale=2)
    """
    if isinstance(kernel, Kernel):
        if kernel_params:
            raise ValueError(f"{name}: expected no kernel parameters with a kernel module, "
                             f"got {sorted(kernel_params)}")
        return kernel
    if not isinstance(kernel, str) or kernel not in _KERNELS:
        raise ValueError(f"{name}: expected kernel to be a Kernel module or one of "
                         f"{sorted(_KERNELS)}, got {kernel!r}")
    return _KERNELS[kernel](**kernel_params)
