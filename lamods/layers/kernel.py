r"""Kernels, random Fourier features, Nystrom features and a kernel ridge head.

The kernel trick: a positive-definite kernel is an inner product of feature maps,
:math:`k(x, y) = \langle \varphi(x), \varphi(y) \rangle`. The modules here give
the exact Gram matrix (:class:`RBFKernel` and friends), two explicit
approximations of :math:`\varphi` that scale linearly in the number of points
(:class:`RandomFourierFeatures`, :class:`NystromFeatures`), and a closed-form
kernel ridge regression head (:class:`KernelRidgeHead`, :func:`kernel_ridge`)
that is differentiable with respect to its inputs and hyperparameters.

- :class:`RBFKernel`: :math:`\exp(-\|x-y\|^2 / (2 l^2))`
  (scikit-learn's ``rbf_kernel`` with ``gamma = 1/(2 l^2)``).
- :class:`LaplacianKernel`: :math:`\exp(-\|x-y\|_1 / l)` (``gamma = 1/l``).
- :class:`PolynomialKernel`: :math:`(\gamma \langle x, y\rangle + c_0)^p`.
- :class:`LinearKernel`: :math:`\langle x, y \rangle`.
- :class:`CosineKernel`: :math:`\langle x, y \rangle / (\|x\| \|y\|)` (0 for a zero row).

Every kernel maps ``X (*, n, d)`` and ``Y (*, m, d)`` (batch dimensions
broadcast) to the Gram matrix ``(*, n, m)``, computed in row blocks of ``X`` so
that no intermediate holds more than about ``block_elements`` entries. With
``Y`` omitted (or ``Y is X``) the Gram matrix is exactly symmetric and the RBF
squared distances are clamped at 0, so the RBF Gram matrix is PSD up to rounding.

Positive hyperparameters (``lengthscale``, ``alpha``) are stored as their
logarithm, a parameter when learnable and a buffer otherwise:
:math:`l = \exp(\log l)` stays positive under any gradient step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamods._checks import check_features, check_finite, check_like, check_positive_int

__all__ = [
    "CosineKernel",
    "Kernel",
    "KernelRidgeHead",
    "LaplacianKernel",
    "LinearKernel",
    "NystromFeatures",
    "PolynomialKernel",
    "RBFKernel",
    "RandomFourierFeatures",
    "kernel_ridge",
    "make_kernel",
]

#: default budget (entries) of one row block's intermediate tensors
BLOCK_ELEMENTS = 1 << 24


def _check_positive(name: str, arg: str, value: object) -> None:
    """Raise unless ``value`` is a positive finite number (or a tensor of them)."""
    if isinstance(value, Tensor):
        if not bool((value > 0).all()) or not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: expected {arg} > 0, got {value}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf):
        raise ValueError(f"{name}: expected {arg} > 0, got {value!r}")


def _check_pair(name: str, X: object, Y: object) -> None:
    """Check ``X (*, n, d)`` and ``Y (*, m, d)``: floating tensors of equal width."""
    if not isinstance(X, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor X, got {type(X).__name__}")
    if X.dim() < 2:
        raise ValueError(f"{name}: expected X of shape (*, n, d), got shape {tuple(X.shape)}")
    check_features(name, X, X.shape[-1])
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
    against all of ``Y`` (both already in the compute dtype).

    Args:
        block_elements: the largest number of entries one row block's
            intermediates may hold (``(rows, m)`` for distances).
    """

    def __init__(self, *, block_elements: int = BLOCK_ELEMENTS) -> None:
        super().__init__()
        self.block_elements = check_positive_int(type(self).__name__, "block_elements",
                                                 block_elements)

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
        raise NotImplementedError

    def _prepare(self, X: Tensor, Y: Tensor, same: bool) -> tuple[Tensor, Tensor]:
        """Transform ``X`` and ``Y`` once before the blocks (identity by default)."""
        return X, Y

    def _positive(self, arg: str, value: float, learnable: bool,
                  factory: dict[str, Any]) -> None:
        """Store ``log(value)`` as parameter ``log_<arg>`` (learnable) or buffer."""
        _check_positive(type(self).__name__, arg, value)
        raw = torch.tensor(math.log(value), **factory)
        if learnable:
            self.register_parameter(f"log_{arg}", nn.Parameter(raw))
        else:
            self.register_buffer(f"log_{arg}", raw)

    def forward(self, X: Tensor, Y: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        same = Y is None or Y is X
        Y = X if Y is None else Y
        _check_pair(name, X, Y)
        if X.device != Y.device or X.dtype != Y.dtype:
            raise TypeError(f"{name}: expected X and Y with the same device and dtype, got "
                            f"{X.device}/{X.dtype} and {Y.device}/{Y.dtype}")
        X, Y = self._prepare(X, Y, same)
        m = Y.shape[-2]
        batch = math.prod(torch.broadcast_shapes(X.shape[:-2], Y.shape[:-2]))
        rows = max(1, self.block_elements // max(1, batch * m))  # (rows, m) per block
        n = X.shape[-2]
        if same and X.dim() == 2 and rows < n and not (torch.is_grad_enabled() and any(
                t.requires_grad for t in (X, *self.parameters()))):
            return self._symmetric_blocks(X, rows)
        if rows >= n:
            K = self._block(X, Y, 0 if same else None)
        else:
            K = torch.cat([self._block(X[..., s:s + rows, :], Y, s if same else None)
                           for s in range(0, n, rows)], dim=-2)
        if same:
            K = 0.5 * (K + K.mT)  # exactly symmetric: K = (K + K^T) / 2
        return K

    def _symmetric_blocks(self, X: Tensor, rows: int) -> Tensor:
        """``K(X, X)`` without autograd from its upper block rows (half the work), mirrored."""
        n = X.shape[-2]
        K = X.new_empty(n, n)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            B = self._block(X[s:e], X[s:], 0)  # K[s:e, s:]
            D = B[:, :e - s]
            K[s:e, s:e] = 0.5 * (D + D.mT)  # exactly symmetric diagonal block
            K[s:e, e:] = B[:, e - s:]
            K[e:, s:e] = B[:, e - s:].mT
        return K


def _diag_mask(Xb: Tensor, m: int, offset: int) -> Tensor:
    """Boolean ``(rows, m)`` mask of the entries ``(i, offset + i)``."""
    r = torch.arange(Xb.shape[-2], device=Xb.device)
    c = torch.arange(m, device=Xb.device)
    return c[None, :] == (r[:, None] + offset)


class _LengthscaleKernel(Kernel):
    """A stationary kernel with one positive lengthscale :math:`l` (stored as :math:`\\log l`)."""

    def __init__(self, lengthscale: float = 1.0, *, learnable_lengthscale: bool = False,
                 block_elements: int = BLOCK_ELEMENTS, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(block_elements=block_elements)
        self._positive("lengthscale", lengthscale, learnable_lengthscale,
                       {"device": device, "dtype": dtype})

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    def extra_repr(self) -> str:
        return f"lengthscale={self.lengthscale.item():.4g}"


class RBFKernel(_LengthscaleKernel):
    r"""Gaussian kernel :math:`k(x, y) = \exp(-\|x - y\|^2 / (2 l^2))`.

    Squared distances are :math:`\|x\|^2 + \|y\|^2 - 2\langle x, y\rangle` after
    centring both on the mean of ``X`` (less cancellation), clamped at 0 (rounding
    can make them negative); on the diagonal of ``kernel(X)`` they are exactly 0.

    Args:
        lengthscale: :math:`l > 0`.
        learnable_lengthscale: make :math:`\log l` an ``nn.Parameter``.
        block_elements: memory budget of one row block (see :class:`Kernel`).

    Examples::

        >>> k = RBFKernel(lengthscale=1.0)
        >>> k(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        tensor([[1.0000, 0.3679],
                [0.3679, 1.0000]])
    """

    def _prepare(self, X: Tensor, Y: Tensor, same: bool) -> tuple[Tensor, Tensor]:
        # distances are translation invariant: centring on X's mean avoids the
        # cancellation of ||x||^2 + ||y||^2 - 2<x, y> for data far from the origin
        c = X.detach().mean(dim=-2, keepdim=True)
        Xc = X - c
        return Xc, (Xc if same else Y - c)

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
        l = self.lengthscale.to(Xb.dtype)  # noqa: E741
        if not (torch.is_grad_enabled() and (Xb.requires_grad or Y.requires_grad
                                             or l.requires_grad)):
            # same formula without autograd: in place, one (rows, m) buffer
            K = Xb @ Y.mT
            K.mul_(-2).add_(Xb.square().sum(-1, keepdim=True)).add_(
                Y.square().sum(-1).unsqueeze(-2)).clamp_min_(0)
            if diag_offset is not None:
                K.diagonal(diag_offset, dim1=-2, dim2=-1).zero_()
            return K.mul_(-0.5 / (l * l)).exp_()
        # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>, clamped at 0
        sq = (Xb.square().sum(-1, keepdim=True) + Y.square().sum(-1).unsqueeze(-2)
              - 2 * Xb @ Y.mT).clamp_min(0)
        if diag_offset is not None:
            sq = sq.masked_fill(_diag_mask(Xb, Y.shape[-2], diag_offset), 0.0)
        return torch.exp(-sq / (2 * l * l))  # k = exp(-||x - y||^2 / (2 l^2))


class LaplacianKernel(_LengthscaleKernel):
    r"""Laplacian kernel :math:`k(x, y) = \exp(-\|x - y\|_1 / l)`.

    Args:
        lengthscale: :math:`l > 0` (scikit-learn's ``gamma = 1/l``).
        learnable_lengthscale: make :math:`\log l` an ``nn.Parameter``.

    Examples::

        >>> LaplacianKernel(2.0)(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.3679]])
    """

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
        l = self.lengthscale.to(Xb.dtype)  # noqa: E741
        dist = torch.cdist(Xb, Y, p=1.0)  # ||x - y||_1, exact differences
        return torch.exp(-dist / l)  # k = exp(-||x - y||_1 / l)


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
            _check_positive("PolynomialKernel", "gamma", gamma)
        self.gamma = gamma
        self.coef0 = float(coef0)

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
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

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
        return Xb @ Y.mT  # k = <x, y>


class CosineKernel(Kernel):
    r"""Cosine similarity :math:`k(x, y) = \langle x, y \rangle / (\|x\| \|y\|)`.

    A zero row has similarity 0 with everything (as scikit-learn's ``cosine_similarity``).

    Examples::

        >>> CosineKernel()(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.7071]])
    """

    def _block(self, Xb: Tensor, Y: Tensor, diag_offset: int | None) -> Tensor:
        # <x, y> / (|x| |y|) through unit rows (zero rows stay zero)
        return F.normalize(Xb, dim=-1) @ F.normalize(Y, dim=-1).mT


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


# ---------------------------------------------------------------------------
# Random Fourier features
# ---------------------------------------------------------------------------
def _rng(name: str, seed: int | None,
         generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError(f"{name}: expected at most one of generator and seed, got both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{name}: expected seed to be an int, got {seed!r}")
        return torch.Generator().manual_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: expected generator to be a torch.Generator, "
                        f"got {type(generator).__name__}")
    return generator


class RandomFourierFeatures(nn.Module):
    r"""Random Fourier features of the RBF kernel (Rahimi and Recht, 2007).

    .. math::
        z(x) = \sqrt{2/D}\, \cos(x W^T / l + b), \qquad
        W_{ij} \sim \mathcal N(0, 1), \quad b_i \sim U(0, 2\pi),

    so :math:`E[z(x)^T z(y)] = \exp(-\|x-y\|^2 / (2 l^2))` with error
    :math:`O(1/\sqrt D)`. ``orthogonal=True`` draws orthogonal random features
    (Yu et al., 2016): blocks of :math:`d` rows of :math:`Q` from the QR of a
    Gaussian matrix, each row scaled by an independent chi-distributed norm
    (the norm of a fresh Gaussian vector), which lowers the variance.

    ``W`` and ``b`` are buffers (drawn on the CPU in float64 from ``seed`` or
    ``generator``, then cast), so ``state_dict`` and ``.to()`` carry them.

    Args:
        in_features: :math:`d`.
        n_features: :math:`D`, the output width.
        lengthscale: :math:`l > 0`.
        orthogonal: draw orthogonal random features.
        learnable_lengthscale: make :math:`\log l` an ``nn.Parameter``.
        seed, generator: randomness (at most one); neither uses torch's global generator.

    Examples::

        >>> rff = RandomFourierFeatures(3, 4096, lengthscale=1.0, seed=0)
        >>> x = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
        >>> z = rff(x)
        >>> z.shape
        torch.Size([2, 4096])
        >>> bool(abs(z[0] @ z[1] - math.exp(-0.25)) < 0.05)
        True
    """

    def __init__(self, in_features: int, n_features: int, lengthscale: float = 1.0, *,
                 orthogonal: bool = False, learnable_lengthscale: bool = False,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = "RandomFourierFeatures"
        self.in_features = check_positive_int(name, "in_features", in_features)
        self.n_features = check_positive_int(name, "n_features", n_features)
        _check_positive(name, "lengthscale", lengthscale)
        self.orthogonal = bool(orthogonal)
        self.seed = seed
        gen = _rng(name, seed, generator)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        d, D = in_features, n_features
        gdev = gen.device if gen is not None else torch.device("cpu")
        opts = {"generator": gen, "device": gdev, "dtype": torch.float64}
        if orthogonal:
            blocks = []
            for _ in range(-(-D // d)):
                Q, _ = torch.linalg.qr(torch.randn(d, d, **opts))
                norms = torch.randn(d, d, **opts).norm(dim=1)  # chi(d)-distributed row norms
                blocks.append(norms[:, None] * Q)
            W = torch.cat(blocks)[:D]
        else:
            W = torch.randn(D, d, **opts)  # W_ij ~ N(0, 1)
        b = torch.rand(D, **opts) * (2 * math.pi)  # b ~ U(0, 2 pi)
        self.register_buffer("weight", W.to(**factory))
        self.register_buffer("bias", b.to(**factory))
        raw = torch.tensor(math.log(lengthscale), **factory)
        if learnable_lengthscale:
            self.log_lengthscale = nn.Parameter(raw)
        else:
            self.register_buffer("log_lengthscale", raw)

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    def forward(self, x: Tensor) -> Tensor:
        check_features("RandomFourierFeatures", x, self.in_features)
        check_like("RandomFourierFeatures", x, self.weight)
        l = self.lengthscale.to(x.dtype)  # noqa: E741
        # z(x) = sqrt(2/D) cos(x W^T / l + b)
        return math.sqrt(2.0 / self.n_features) * torch.cos(x @ self.weight.mT / l + self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_features={self.n_features}, "
                f"lengthscale={self.lengthscale.item():.4g}, orthogonal={self.orthogonal}")


# ---------------------------------------------------------------------------
# Fitted modules
# ---------------------------------------------------------------------------
class _Fitted(nn.Module):
    """Shape-changing fitted buffers that load from any fitted ``state_dict``."""

    _FITTED: tuple[str, ...] = ()
    _fit_call = "fit(X)"

    def _check_fitted(self, method: str) -> None:
        if not self.is_fitted():
            name = type(self).__name__
            raise RuntimeError(f"{name}.{method}: this {name} is not fitted yet; call "
                               f"{self._fit_call} first, or load a fitted state_dict")

    def is_fitted(self) -> bool:
        return self._buffers[self._FITTED[0]].shape[0] > 0  # type: ignore[union-attr]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        for buf in self._FITTED:
            key = prefix + buf
            if key in state_dict:
                old = self._buffers[buf]
                assert old is not None
                self._buffers[buf] = torch.empty(state_dict[key].shape, dtype=old.dtype,
                                                 device=old.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_fit_data(self, method: str, X: object, reference: Tensor) -> Tensor:
        name = f"{type(self).__name__}.{method}"
        if not isinstance(X, Tensor) or X.dim() != 2:
            got = f"shape {tuple(X.shape)}" if isinstance(X, Tensor) else type(X).__name__
            raise ValueError(f"{name}: expected X of shape (n_samples, n_features), got {got}")
        check_features(name, X, X.shape[-1])
        check_like(name, X, reference, what="the module's")
        check_finite(name, X, "X")
        return X


class NystromFeatures(_Fitted):
    r"""Nystrom features :math:`\varphi(x) = K(x, L)\, K(L, L)^{-1/2}` (Williams and Seeger, 2001).

    ``fit(X)`` samples ``n_landmarks`` rows of ``X`` without replacement as the
    landmarks :math:`L` (``landmarks="random"``), or uses them to start
    ``kmeans_iter`` Lloyd iterations of :class:`~lamods.classic.KMeans` and takes
    the cluster centers (``landmarks="kmeans"``, closer to the data's spread, so a
    better approximation for the same :math:`m`), and computes :math:`K(L, L)^{-1/2}`
    through the stable :func:`~lamods.decomp.eigh`, with eigenvalues clamped at 0 and a jitter
    :math:`\epsilon` added: :math:`U \operatorname{diag}((\lambda + \epsilon)^{-1/2}) U^T`.
    Then :math:`\varphi(x)^T \varphi(y) = K(x, L) K(L, L)^{-1} K(L, y) \approx k(x, y)`,
    exact when the landmarks are all the points. Buffers ``landmarks_`` and
    ``normalization_`` hold the fitted state (fitting runs without autograd; the
    features are differentiable in ``x``).

    Args:
        in_features: :math:`d`.
        n_landmarks: number of landmarks :math:`m`.
        kernel: a :class:`Kernel` module or a name (see :func:`make_kernel`).
        landmarks: ``"random"`` (rows of ``X``) or ``"kmeans"`` (k-means centers).
        kmeans_iter: most Lloyd iterations with ``landmarks="kmeans"``.
        jitter: :math:`\epsilon` relative to the mean of :math:`\operatorname{diag} K(L, L)`;
            None uses the square root of the dtype's machine epsilon.
        seed, generator: randomness of the landmark choice (at most one).
        **kernel_params: parameters of a kernel given by name, e.g. ``lengthscale=``.

    Examples::

        >>> X = torch.randn(50, 3, dtype=torch.float64)
        >>> ny = NystromFeatures(3, 50, "rbf", lengthscale=2.0, seed=0, dtype=torch.float64).fit(X)
        >>> Phi = ny(X)
        >>> torch.allclose(Phi @ Phi.T, RBFKernel(2.0, dtype=torch.float64)(X), atol=1e-6)
        True
    """

    _FITTED = ("landmarks_", "normalization_")

    def __init__(self, in_features: int, n_landmarks: int, kernel: str | Kernel = "rbf", *,
                 landmarks: str = "random", kmeans_iter: int = 10,
                 jitter: float | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **kernel_params: Any) -> None:
        super().__init__()
        name = "NystromFeatures"
        self.in_features = check_positive_int(name, "in_features", in_features)
        self.n_landmarks = check_positive_int(name, "n_landmarks", n_landmarks)
        if landmarks not in ("random", "kmeans"):
            raise ValueError(f"{name}: expected landmarks to be 'random' or 'kmeans', "
                             f"got {landmarks!r}")
        self.landmarks = landmarks
        self.kmeans_iter = check_positive_int(name, "kmeans_iter", kmeans_iter)
        if jitter is not None:
            _check_positive(name, "jitter", jitter)
        self.jitter = jitter
        self.kernel = make_kernel(kernel, name, **kernel_params).to(device=device, dtype=dtype)
        _rng(name, seed, generator)
        self.seed, self.generator = seed, generator
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("landmarks_", torch.empty(0, in_features, **factory))
        self.register_buffer("normalization_", torch.empty(0, 0, **factory))

    @torch.no_grad()
    def fit(self, X: Tensor, y: object = None) -> NystromFeatures:
        """Pick landmarks (rows of ``X`` or k-means centers), compute :math:`K(L, L)^{-1/2}`."""
        from lamods.decomp import eigh

        X = self._check_fit_data("fit", X, self.landmarks_)
        check_features("NystromFeatures.fit", X, self.in_features)
        n = X.shape[0]
        if n < self.n_landmarks:
            raise ValueError(f"NystromFeatures.fit: expected at least n_landmarks="
                             f"{self.n_landmarks} rows, got {n}")
        gen = _rng("NystromFeatures", self.seed, self.generator)
        gdev = gen.device if gen is not None else torch.device("cpu")
        idx = torch.randperm(n, generator=gen, device=gdev)[:self.n_landmarks].to(X.device)
        L = X[idx].clone()
        if self.landmarks == "kmeans":
            from lamods.classic import KMeans

            km = KMeans(self.n_landmarks, init=L, max_iter=self.kmeans_iter,
                        device=X.device, dtype=X.dtype)
            L = km.fit(X).cluster_centers_
        K = self.kernel(L)
        lam, U = eigh(K, validate=False)
        eps = self.jitter if self.jitter is not None else math.sqrt(torch.finfo(K.dtype).eps)
        eps = eps * max(float(K.diagonal().mean()), torch.finfo(K.dtype).tiny)
        # K(L, L)^(-1/2) = U diag((max(lambda, 0) + eps)^(-1/2)) U^T
        W = (U * (lam.clamp_min(0) + eps).rsqrt().unsqueeze(-2)) @ U.mT
        self.landmarks_, self.normalization_ = L, W
        return self

    def forward(self, x: Tensor) -> Tensor:
        self._check_fitted("forward")
        check_features("NystromFeatures", x, self.in_features)
        check_like("NystromFeatures", x, self.landmarks_)
        return self.kernel(x, self.landmarks_) @ self.normalization_  # K(x, L) K(L, L)^(-1/2)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_landmarks={self.n_landmarks}, "
                f"landmarks={self.landmarks!r}")


def _solve_ridge(name: str, K: Tensor, Y: Tensor, alpha: Tensor | float) -> Tensor:
    r"""Solve :math:`(K + \alpha I) A = Y` by Cholesky, adding jitter (and warning) if not PD."""
    n = K.shape[-1]
    eye = torch.eye(n, dtype=K.dtype, device=K.device)
    M = K + alpha * eye  # K + alpha I
    C, info = torch.linalg.cholesky_ex(M)
    if bool(info.any()):
        scale = max(float(M.diagonal(dim1=-2, dim2=-1).abs().mean()), 1.0)
        jitter = scale * math.sqrt(torch.finfo(K.dtype).eps)
        for _ in range(8):
            C, info = torch.linalg.cholesky_ex(M + jitter * eye)
            if not bool(info.any()):
                break
            jitter *= 10
        else:
            raise RuntimeError(f"{name}: expected K + alpha I to be positive definite, got a "
                               f"failed Cholesky even with jitter {jitter:.3g}")
        warnings.warn(f"{name}: K + alpha I is not numerically positive definite; added "
                      f"jitter {jitter:.3g} to its diagonal", RuntimeWarning, stacklevel=3)
    return torch.cholesky_solve(Y, C)  # A = (K + alpha I)^{-1} Y


def _check_alpha(name: str, alpha: object) -> None:
    _check_positive(name, "alpha", alpha)


def kernel_ridge(X: Tensor, Y: Tensor, Xq: Tensor,
                 kernel: str | Kernel | Callable[[Tensor, Tensor], Tensor] = "rbf",
                 alpha: float | Tensor = 1.0, **kernel_params: Any) -> Tensor:
    r"""Kernel ridge regression predictions :math:`K(X_q, X)\, (K(X, X) + \alpha I)^{-1} Y`.

    Differentiable with respect to ``X``, ``Y``, ``Xq``, ``alpha`` (a tensor) and the
    kernel's hyperparameters (autograd through the Cholesky factor and solve).

    Args:
        X: training inputs ``(n, d)``.
        Y: targets ``(n,)`` or ``(n, k)``.
        Xq: query inputs ``(q, d)``.
        kernel: a :class:`Kernel`, a name (see :func:`make_kernel`), or any callable
            ``kernel(A, B) -> (len(A), len(B))``.
        alpha: ridge :math:`\alpha > 0`, a float or a tensor.
        **kernel_params: parameters of a kernel given by name, e.g. ``lengthscale=``.

    Returns:
        predictions ``(q,)`` or ``(q, k)``, following ``Y``.

    Examples::

        >>> X = torch.tensor([[0.0], [1.0], [2.0]])
        >>> kernel_ridge(X, torch.tensor([0.0, 1.0, 2.0]), X, "linear", alpha=1e-6)
        tensor([0.0000, 1.0000, 2.0000])
    """
    name = "kernel_ridge"
    k = kernel if callable(kernel) and not isinstance(kernel, str) and not kernel_params \
        else make_kernel(kernel, name, **kernel_params)  # type: ignore[arg-type]
    _check_alpha(name, alpha)
    A = _fit_dual(name, k, X, Y, alpha)
    check_features(name, Xq, X.shape[-1])
    out = k(Xq, X) @ A  # f(x) = K(x, X) A
    return out.squeeze(-1) if Y.dim() == 1 else out


def _fit_dual(name: str, k: Callable[[Tensor, Tensor], Tensor], X: Tensor, Y: Tensor,
              alpha: float | Tensor) -> Tensor:
    if not isinstance(X, Tensor) or X.dim() != 2:
        got = f"shape {tuple(X.shape)}" if isinstance(X, Tensor) else type(X).__name__
        raise ValueError(f"{name}: expected X of shape (n_samples, n_features), got {got}")
    if not isinstance(Y, Tensor) or Y.dim() not in (1, 2):
        got = f"shape {tuple(Y.shape)}" if isinstance(Y, Tensor) else type(Y).__name__
        raise ValueError(f"{name}: expected Y of shape (n_samples,) or (n_samples, n_outputs), "
                         f"got {got}")
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"{name}: expected Y with {X.shape[0]} rows (one per row of X), "
                         f"got {Y.shape[0]}")
    check_finite(name, X, "X")
    check_finite(name, Y, "Y")
    Y2 = Y.unsqueeze(-1) if Y.dim() == 1 else Y
    return _solve_ridge(name, k(X, X), Y2.to(X.dtype), alpha)


class KernelRidgeHead(_Fitted):
    r"""Kernel ridge regression head: ``fit(X, Y)`` then :math:`f(x) = K(x, X)\, A`.

    ``fit`` solves :math:`(K(X, X) + \alpha I) A = Y` by Cholesky (adding jitter to
    the diagonal, with a warning, if the matrix is not numerically positive
    definite) and keeps ``X_fit_`` and ``dual_coef_`` :math:`A` as buffers.
    Multi-output: ``Y`` ``(n, k)`` (e.g. one-hot labels) gives ``(q, k)`` predictions.
    ``fit`` runs under autograd when it is enabled, so a loss on ``forward``
    backpropagates to ``X``, ``Y``, ``alpha`` and the kernel hyperparameters
    (the closed-form solve inside a training step); see also :func:`kernel_ridge`.

    Args:
        kernel: a :class:`Kernel` module or a name (see :func:`make_kernel`).
        alpha: ridge :math:`\alpha > 0`, stored as :math:`\log \alpha`.
        learnable_alpha: make :math:`\log \alpha` an ``nn.Parameter``.
        **kernel_params: parameters of a kernel given by name, e.g. ``lengthscale=``.

    Examples::

        >>> X = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None]
        >>> head = KernelRidgeHead("rbf", alpha=1e-6, lengthscale=0.3, dtype=torch.float64)
        >>> head = head.fit(X, torch.sin(3 * X))
        >>> bool((head(X) - torch.sin(3 * X)).abs().max() < 1e-3)
        True
    """

    _FITTED = ("X_fit_", "dual_coef_")
    _fit_call = "fit(X, Y)"

    def __init__(self, kernel: str | Kernel = "rbf", alpha: float = 1.0, *,
                 learnable_alpha: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, **kernel_params: Any) -> None:
        super().__init__()
        name = "KernelRidgeHead"
        _check_alpha(name, alpha)
        self.kernel = make_kernel(kernel, name, **kernel_params).to(device=device, dtype=dtype)
        factory = {"device": device, "dtype": dtype}
        raw = torch.tensor(math.log(alpha), **factory)
        if learnable_alpha:
            self.log_alpha = nn.Parameter(raw)
        else:
            self.register_buffer("log_alpha", raw)
        self.register_buffer("X_fit_", torch.empty(0, 0, **factory))
        self.register_buffer("dual_coef_", torch.empty(0, 0, **factory))
        self._squeeze = False

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def fit(self, X: Tensor, Y: Tensor) -> KernelRidgeHead:
        """Solve :math:`(K(X, X) + \\alpha I) A = Y`; ``Y`` is ``(n,)`` or ``(n, k)``."""
        X = self._check_fit_data("fit", X, self.log_alpha)
        alpha = self.alpha.to(X.dtype)
        self.dual_coef_ = _fit_dual("KernelRidgeHead.fit", self.kernel, X, Y, alpha)
        self.X_fit_ = X
        self._squeeze = Y.dim() == 1
        return self

    def forward(self, x: Tensor) -> Tensor:
        self._check_fitted("forward")
        check_features("KernelRidgeHead", x, self.X_fit_.shape[-1])
        check_like("KernelRidgeHead", x, self.X_fit_)
        out = self.kernel(x, self.X_fit_) @ self.dual_coef_  # f(x) = K(x, X) A
        return out.squeeze(-1) if self._squeeze else out

    def get_extra_state(self) -> dict[str, bool]:
        return {"squeeze": self._squeeze}  # fitted on 1-D targets: 1-D predictions

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self._squeeze = bool(state.get("squeeze", False))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}"
