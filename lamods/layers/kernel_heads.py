r"""Fitted kernel modules: Nystrom features and a closed-form kernel ridge head.

- :class:`NystromFeatures`: :math:`\varphi(x) = K(x, L)\, K(L, L)^{-1/2}` from ``m``
  landmarks, an explicit feature map whose inner products approximate the kernel.
- :class:`KernelRidgeHead` / :func:`kernel_ridge`: :math:`f(x) = K(x, X)(K + \alpha I)^{-1} Y`,
  differentiable with respect to its inputs and hyperparameters.
- :class:`NystromKernelRidge`: kernel ridge restricted to ``m`` centres, solved FALKON's
  way (preconditioned conjugate gradient, the ``n x m`` kernel streamed in row blocks):
  millions of points in :math:`O(nm)` time per iteration and :math:`O(m^2)` memory.

Both stand on :class:`lamods.base.Estimator` (``fit`` returns ``self``, NumPy
input, the fitted dtype follows the data, ``get_params`` / ``clone``).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lamods._distributed import all_reduce_sum, is_distributed
from lamods._hyperparams import register_log_positive, retype_hyperparameters
from lamods._lloyd import center_scale, lloyd
from lamods._matmul import at_b
from lamods._random import check_randomness, generator_device, make_generator
from lamods._validation import (
    as_float_tensor,
    check_choice,
    check_data,
    check_features,
    check_positive,
    check_positive_int,
    check_stream_batch,
    check_stream_target,
    check_streamable,
)
from lamods.base import Estimator
from lamods.cg import cg_core
from lamods.decomp import eigh
from lamods.exceptions import ConvergenceWarning, NotPSDError
from lamods.layers._kernel_stream import KnmStream, accumulation_dtype
from lamods.layers.kernels import Kernel, make_kernel

__all__ = ["KernelRidgeHead", "NystromFeatures", "NystromKernelRidge", "kernel_ridge"]


def _kernel_module(name: str, kernel: str | Kernel, kernel_params: dict[str, Any] | None,
                   extra: dict[str, Any], device: torch.device | str | None,
                   dtype: torch.dtype | None) -> tuple[Kernel, dict[str, Any] | None]:
    """The kernel module, and the kernel parameters to remember (``kernel_params`` merged
    with keyword arguments; the given dict itself when there are none, for ``clone``)."""
    if kernel_params is not None and not isinstance(kernel_params, dict):
        raise TypeError(f"{name}: expected kernel_params to be a dict or None, "
                        f"got {type(kernel_params).__name__}")
    params = kernel_params if not extra else {**(kernel_params or {}), **extra}
    module = make_kernel(kernel, name, **(params or {}))
    if dtype is not None:  # Note [exact hyperparameters]: no float32 rounding on the way
        retype_hyperparameters(module, dtype, device)
    return module.to(device=device, dtype=dtype), params


class NystromFeatures(Estimator):
    r"""Nystrom features :math:`\varphi(x) = K(x, L)\, K(L, L)^{-1/2}` (Williams and Seeger, 2001).

    ``fit(X)`` samples ``n_landmarks`` rows of ``X`` without replacement as the
    landmarks :math:`L` (``landmarks="random"``), or uses them to start
    ``kmeans_iter`` Lloyd iterations (:mod:`lamods._lloyd`) and takes the cluster
    centers (``landmarks="kmeans"``, closer to the data's spread, so a better
    approximation for the same :math:`m`), and computes :math:`K(L, L)^{-1/2}`
    through the stable :func:`~lamods.decomp.eigh`, with eigenvalues clamped at 0 and a jitter
    :math:`\epsilon` added: :math:`U \operatorname{diag}((\lambda + \epsilon)^{-1/2}) U^T`.
    Then :math:`\varphi(x)^T \varphi(y) = K(x, L) K(L, L)^{-1} K(L, y) \approx k(x, y)`,
    exact when the landmarks are all the points. Buffers ``landmarks_`` and
    ``normalization_`` hold the fitted state (fitting runs without autograd; the
    features are differentiable in ``x``).

    Streaming: this fit is no sum over rows (it picks landmarks, and
    :math:`K(L, L)^{-1/2}` depends on them alone), so there is no ``partial_fit``: fit it on
    one batch (its landmarks come from that batch, k-means included) or on a sample of the
    stream. What does sum over rows, a ridge on these features or Nystrom kernel ridge
    (:math:`K_{mn} K_{nm}`, :math:`K_{mn} Y`), streams and all-reduces in
    :meth:`NystromKernelRidge.partial_fit`, which fixes its centres by the first batch or a
    given ``centers=`` (a ridge on :math:`\varphi(X)` streams in
    :meth:`lamods.RidgeRegression.partial_fit`).

    Args:
        in_features: :math:`d`.
        n_landmarks: number of landmarks :math:`m`.
        kernel: a :class:`~lamods.layers.Kernel` module or a name (see
            :func:`~lamods.layers.make_kernel`).
        landmarks: ``"random"`` (rows of ``X``) or ``"kmeans"`` (k-means centers).
        kmeans_iter: most Lloyd iterations with ``landmarks="kmeans"``.
        jitter: :math:`\epsilon` relative to the mean of :math:`\operatorname{diag} K(L, L)`;
            None uses the square root of the dtype's machine epsilon.
        seed, generator: randomness of the landmark choice (at most one).
        kernel_params: parameters of a kernel given by name, e.g. ``{"lengthscale": 2.0}``;
            keyword arguments (``lengthscale=2.0``) are merged into it.
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - ``fit(X)``: :math:`(N, d)`.
        - ``forward``: :math:`(*, d) \to (*, m)`.

    Examples::

        >>> X = torch.randn(50, 3, dtype=torch.float64)
        >>> ny = NystromFeatures(3, 50, "rbf", lengthscale=2.0, seed=0).fit(X)
        >>> Phi = ny(X)
        >>> torch.allclose(Phi @ Phi.T, ny.kernel_module(X), atol=1e-6)
        True
    """

    _FITTED = ("landmarks_", "normalization_")
    _FITTED_SHAPES = {"landmarks_": ("m", "d"), "normalization_": ("m", "m")}
    _FIT_CALL = "fit(X)"
    _DERIVED = {"kernel": ("kernel_module",), "kernel_params": ("kernel_module",)}

    def __init__(self, in_features: int, n_landmarks: int, kernel: str | Kernel = "rbf", *,
                 landmarks: str = "random", kmeans_iter: int = 10,
                 jitter: float | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None,
                 kernel_params: dict[str, Any] | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **kwargs: Any) -> None:
        super().__init__(device=device, dtype=dtype)
        name = "NystromFeatures"
        self.in_features = check_positive_int(name, "in_features", in_features)
        self.n_landmarks = check_positive_int(name, "n_landmarks", n_landmarks)
        check_choice(name, "landmarks", landmarks, ("random", "kmeans"))
        self.landmarks = landmarks
        self.kmeans_iter = check_positive_int(name, "kmeans_iter", kmeans_iter)
        if jitter is not None:
            check_positive(name, "jitter", jitter)
        self.jitter = jitter
        check_randomness(name, seed, generator)
        self.seed, self.generator = seed, generator
        self.kernel_module, self.__dict__["kernel_params"] = _kernel_module(
            name, kernel, kernel_params, kwargs, device, dtype)
        self.__dict__["kernel"] = kernel  # as given (not registered twice)

    def _known_dims(self) -> dict[str, int]:
        return {"m": self.n_landmarks, "d": self.in_features}

    @torch.no_grad()
    def fit(self, X: object, y: object = None) -> NystromFeatures:
        """Pick landmarks (rows of ``X`` or k-means centers), compute :math:`K(L, L)^{-1/2}`."""
        name = "NystromFeatures.fit"
        X = self._fit_input("fit", X)
        check_features(name, X, self.in_features)
        n = X.shape[0]
        if n < self.n_landmarks:
            raise ValueError(f"{name}: expected at least n_landmarks={self.n_landmarks} rows, "
                             f"got {n}")
        gen = make_generator(name, self.seed, self.generator)
        idx = torch.randperm(n, generator=gen, device=generator_device(gen))
        L = X[idx[:self.n_landmarks].to(X.device)].clone()
        if self.landmarks == "kmeans":
            # centred and scaled, as k-means (Note [k-means scaling] in lamods._lloyd)
            Xs, x_sq, frame = center_scale(X)
            L = frame.back(lloyd(Xs, x_sq, frame.apply(L), self.kmeans_iter, 0.0, name=name)[0])
        K = self.kernel_module(L)
        lam, U = eigh(K, validate=False)
        eps = self.jitter if self.jitter is not None else math.sqrt(torch.finfo(K.dtype).eps)
        eps = eps * max(float(K.diagonal().mean()), torch.finfo(K.dtype).tiny)
        # K(L, L)^(-1/2) = U diag((max(lambda, 0) + eps)^(-1/2)) U^T
        W = (U * (lam.clamp_min(0) + eps).rsqrt().unsqueeze(-2)) @ U.mT
        self.landmarks_, self.normalization_ = L, W
        return self

    def forward(self, x: object) -> Tensor:
        x = self._input("forward", x, width=self.in_features)
        # phi(x) = K(x, L) K(L, L)^(-1/2)
        return self.kernel_module(x, self.landmarks_) @ self.normalization_

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
        kernel: a :class:`~lamods.layers.Kernel`, a name (see
            :func:`~lamods.layers.make_kernel`), or any callable
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
    check_positive(name, "alpha", alpha)
    for what, t in (("X", X), ("Y", Y), ("Xq", Xq)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(t).__name__}")
    A = _fit_dual(name, k, X, Y, alpha)
    check_features(name, Xq, X.shape[-1])
    out = k(Xq, X) @ A  # f(x) = K(x, X) A
    return out.squeeze(-1) if Y.dim() == 1 else out


def _fit_dual(name: str, k: Callable[[Tensor, Tensor], Tensor], X: Tensor, Y: Tensor,
              alpha: float | Tensor) -> Tensor:
    """The dual coefficients :math:`A = (K(X, X) + \\alpha I)^{-1} Y` ``(n, k)``."""
    check_data(name, X)
    if Y.dim() not in (1, 2):
        raise ValueError(f"{name}: expected Y of shape (n_samples,) or (n_samples, n_outputs), "
                         f"got shape {tuple(Y.shape)}")
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"{name}: expected Y with {X.shape[0]} rows (one per row of X), "
                         f"got {Y.shape[0]}")
    Y = as_float_tensor(name, Y, what="Y", dtype=X.dtype)
    check_data(name, Y, what="Y", ndim=Y.dim())
    Y2 = Y.unsqueeze(-1) if Y.dim() == 1 else Y
    return _solve_ridge(name, k(X, X), Y2, alpha)


class KernelRidgeHead(Estimator):
    r"""Kernel ridge regression head: ``fit(X, Y)`` then :math:`f(x) = K(x, X)\, A`.

    ``fit`` solves :math:`(K(X, X) + \alpha I) A = Y` by Cholesky (adding jitter to
    the diagonal, with a warning, if the matrix is not numerically positive
    definite) and keeps ``X_fit_`` (a copy of the training inputs) and ``dual_coef_``
    :math:`A` as buffers. Multi-output: ``Y`` ``(n, k)`` (e.g. one-hot labels) gives
    ``(q, k)`` predictions. ``fit`` runs under autograd when it is enabled, so a loss
    on ``forward`` backpropagates to ``X``, ``Y``, ``alpha`` and the kernel
    hyperparameters (the closed-form solve inside a training step); see also
    :func:`kernel_ridge`.

    Args:
        kernel: a :class:`~lamods.layers.Kernel` module or a name (see
            :func:`~lamods.layers.make_kernel`).
        alpha: ridge :math:`\alpha > 0`, stored as :math:`\log \alpha`
            (Note [exact hyperparameters] in :mod:`lamods._hyperparams`).
        learnable_alpha: make :math:`\log \alpha` an ``nn.Parameter``.
        kernel_params: parameters of a kernel given by name, e.g. ``{"lengthscale": 0.3}``;
            keyword arguments (``lengthscale=0.3``) are merged into it.
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - ``fit(X, Y)``: :math:`(N, d)` and :math:`(N)` or :math:`(N, k)`.
        - ``forward``: :math:`(*, d) \to (*)` or :math:`(*, k)`, following ``Y``.

    Examples::

        >>> X = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None]
        >>> head = KernelRidgeHead("rbf", alpha=1e-6, lengthscale=0.3).fit(X, torch.sin(3 * X))
        >>> bool((head(X) - torch.sin(3 * X)).abs().max() < 1e-3)
        True
    """

    _FITTED = ("X_fit_", "dual_coef_")
    _FITTED_SHAPES = {"X_fit_": ("n", "d"), "dual_coef_": ("n", "k")}
    _FIT_CALL = "fit(X, Y)"
    _DERIVED = {"kernel": ("kernel_module",), "kernel_params": ("kernel_module",)}

    def __init__(self, kernel: str | Kernel = "rbf", alpha: float = 1.0, *,
                 learnable_alpha: bool = False, kernel_params: dict[str, Any] | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(device=device, dtype=dtype)
        name = "KernelRidgeHead"
        self.kernel_module, self.__dict__["kernel_params"] = _kernel_module(
            name, kernel, kernel_params, kwargs, device, dtype)
        self.__dict__["kernel"] = kernel  # as given (not registered twice)
        register_log_positive(self, "alpha", alpha, learnable_alpha, name, device=device,
                              dtype=dtype)
        self.__dict__["alpha_init"] = alpha
        self.learnable_alpha = learnable_alpha
        self._squeeze = False

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep)
        params["alpha"] = self.alpha_init  # the float given (``alpha`` is the live tensor)
        return params

    def set_params(self, **params: Any) -> KernelRidgeHead:
        if "alpha" in params:
            check_positive("KernelRidgeHead", "alpha", params["alpha"])
        super().set_params(**{k: v for k, v in params.items() if k != "alpha"})
        if "alpha" in params:
            self.__dict__["alpha_init"] = params["alpha"]
            register_log_positive(self, "alpha", params["alpha"], self.learnable_alpha,
                                  "KernelRidgeHead", device=self.log_alpha.device,
                                  dtype=self.log_alpha.dtype)
        return self

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def fit(self, X: object, Y: object) -> KernelRidgeHead:
        """Solve :math:`(K(X, X) + \\alpha I) A = Y`; ``Y`` is ``(n,)`` or ``(n, k)``."""
        name = "KernelRidgeHead.fit"
        X = self._fit_input("fit", X)
        Y = self._fit_target("fit", Y, X, what="Y")
        self.dual_coef_ = _fit_dual(name, self.kernel_module, X, Y, self.alpha)
        # a copy: changing the caller's X in place must not change the predictions
        self.X_fit_ = X.clone()
        self._squeeze = Y.dim() == 1
        return self

    def forward(self, x: object) -> Tensor:
        x = self._input("forward", x)
        out = self.kernel_module(x, self.X_fit_) @ self.dual_coef_  # f(x) = K(x, X) A
        return out.squeeze(-1) if self._squeeze else out

    def get_extra_state(self) -> dict[str, bool]:
        return {"squeeze": self._squeeze}  # fitted on 1-D targets: 1-D predictions

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self._squeeze = bool(state.get("squeeze", False))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}"


def _upper_gram(T: Tensor, block: int = 512) -> Tensor:
    r""":math:`T T^T` of an upper-triangular ``T`` ``(m, m)`` in :math:`m^3/3` flops.

    Note [triangular product]: LAPACK's ``lauum`` idea (FALKON computes its preconditioner
    with it): for column blocks :math:`J` of width ``block`` starting at :math:`j_0`,
    :math:`(T T^T)_{:j_1, J} = T_{:j_1, j_0:}\, T_{J, j_0:}^T` (the entries of
    :math:`T_{J, :j_0}` are 0), one product per block, mirrored to the lower triangle:
    a sixth of the :math:`2 m^3` flops of the full product, the largest fixed cost of
    FALKON's preconditioner at ``m = 5000``.
    """
    m = T.shape[0]
    M = T.new_empty(m, m)
    for j0 in range(0, m, block):
        j1 = min(m, j0 + block)
        # rows :j1 of the block column J (rows above j0 and the diagonal block)
        torch.mm(T[:j1, j0:], T[j0:j1, j0:].mT, out=M[:j1, j0:j1])
    M.triu_()  # below the diagonal blocks: not written
    return M.add_(M.triu(1).mT)  # T T^T = triu + triu(1)^T


class NystromKernelRidge(Estimator):
    r"""Nystrom kernel ridge regression solved by FALKON (Rudi, Carratino, Rosasco, NeurIPS 2017).

    With ``m`` centres :math:`C` (rows of ``X`` drawn uniformly without replacement),
    :math:`f(x) = K(x, C)\, \beta` and :math:`\beta` minimises
    :math:`\|K_{nm} \beta - y\|^2 + \alpha\, \beta^T K_{mm} \beta`, i.e.

    .. math:: H \beta = K_{nm}^T y, \qquad H = K_{nm}^T K_{nm} + \alpha K_{mm},

    (:math:`K_{nm} = K(X, C)`, :math:`K_{mm} = K(C, C)`). With all the points as centres it
    is exact kernel ridge, :math:`(K + \alpha I)^{-1} y` (same :math:`\alpha` as
    :class:`KernelRidgeHead`). Note [FALKON preconditioner]: with :math:`T` the upper
    Cholesky factor of :math:`K_{mm}` (:math:`T^T T = K_{mm}`), :math:`\lambda = \alpha / n`
    and :math:`A` that of :math:`T T^T / m + \lambda I`, FALKON solves
    :math:`B^T H B \gamma = B^T K_{nm}^T y` by conjugate gradient (:func:`lamods.cg`) and
    returns :math:`\beta = B \gamma`, :math:`B = T^{-1} A^{-1} / \sqrt n`. Since
    :math:`K_{nm}^T K_{nm} \approx \frac nm K_{mm}^2` (the Nystrom approximation),
    :math:`B^T H B \approx I`: CG needs a few tens of iterations whatever the conditioning
    of the kernel. Each iteration streams :math:`K_{nm}` in blocks of ``block_rows`` rows
    (:math:`v \mapsto \sum_b K_b^T (K_b v)`): the ``n x m`` and ``n x n`` matrices are never
    held, memory is :math:`O(m^2 + \text{block\_rows} \cdot m)`, time :math:`O(n m d)` per
    iteration; for the RBF kernel each block is one fused in-place pass over a preallocated
    buffer (Note [fused RBF pass] in :mod:`lamods.layers._kernel_stream`). The blocks run in
    the data's dtype, and for float32 data the sums over blocks, the CG vectors and the
    preconditioner's factors run in float64 (Note [mixed-precision accumulation]); the
    jitter and the residual floor stay at float32's level, the noise of the blocks.
    Nothing is shared between the pass for :math:`K_{nm}^T y` and the first CG iteration:
    CG's first direction is :math:`B^T K_{nm}^T y` itself, known only once that pass has
    ended. :math:`K_{mm}` gets a jitter :math:`\delta` of :math:`\epsilon\, m` times its
    mean diagonal before the Cholesky factorisation (as FALKON), raised tenfold until it
    succeeds, and the penalty uses that factor, :math:`\alpha \beta^T T^T T \beta =
    \alpha \beta^T (K_{mm} + \delta I) \beta`: the rounding noise of a numerically
    singular :math:`K_{mm}` (a smooth kernel on close centres), amplified by
    :math:`T^{-1}` up to :math:`1/\delta`, would otherwise make :math:`B^T H B` indefinite
    (measured: CG met :math:`p^T A p < 0` on 200 points in :math:`[0, 1]` with 40 centres).

    :meth:`partial_fit` streams batches (and processes) instead: with the centres fixed by
    the first call it sums :math:`K_{nm}^T K_{nm}` and :math:`K_{nm}^T y` over the batches
    and solves the same system directly (Note [streamed Nystrom statistics]).

    Fitting runs without autograd (use :class:`KernelRidgeHead` to differentiate through
    the solve); predictions are differentiable in ``x``.

    Args:
        kernel: a :class:`~lamods.layers.Kernel` module or a name (see
            :func:`~lamods.layers.make_kernel`).
        alpha: ridge :math:`\alpha > 0` (as :class:`KernelRidgeHead`: :math:`(K + \alpha I)`).
        n_centers: number of centres :math:`m` (at most the number of rows).
        maxiter: most CG iterations (FALKON runs a fixed number; 20 is typical).
        rtol: None (default): run ``maxiter`` CG iterations, as FALKON does (the
            preconditioned system is well conditioned when ``n_centers`` is large enough for
            ``alpha``, and a few tens of iterations reach the statistical accuracy). A float:
            stop earlier once the preconditioned residual is ``rtol`` of the right-hand side,
            and warn (:class:`~lamods.exceptions.ConvergenceWarning`) if ``maxiter`` comes
            first.
        block_rows: rows of :math:`K_{nm}` per block (None: 256 for the RBF kernel, a
            cache-sized block, Note [fused RBF pass]; about :math:`2^{22} / m` otherwise).
        seed: randomness of the centre choice.
        kernel_params: parameters of a kernel given by name; keyword arguments are merged.
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - ``fit(X, y)``: :math:`(N, d)` and :math:`(N)` or :math:`(N, k)`.
        - ``forward``/``predict``: :math:`(*, d) \to (*)` or :math:`(*, k)`, following ``y``.

    Attributes:
        centers_: :math:`(m, d)`; coef_: :math:`(m, k)` the coefficients :math:`\beta`;
        n_iter_: CG iterations taken (0 after ``partial_fit``); gram_ :math:`(m, m)`,
        cross_ :math:`(m, k)`, n_samples_seen_: the statistics :math:`K_{nm}^T K_{nm}`,
        :math:`K_{nm}^T y` and :math:`n` of ``partial_fit`` (empty and 0 after ``fit``).

    Examples::

        >>> X = torch.linspace(0, 1, 200, dtype=torch.float64)[:, None]
        >>> model = NystromKernelRidge("rbf", 1e-6, n_centers=40, seed=0, lengthscale=0.3)
        >>> model = model.fit(X, torch.sin(3 * X[:, 0]))
        >>> bool((model(X) - torch.sin(3 * X[:, 0])).abs().max() < 1e-3)
        True
    """

    _FITTED = ("centers_", "coef_", "gram_", "cross_")
    _FITTED_SHAPES = {"centers_": ("m", "d"), "coef_": ("m", "k"), "gram_": ("m", "m"),
                      "cross_": ("m", "k")}
    _FIT_CALL = "fit(X, y)"
    _DERIVED = {"kernel": ("kernel_module",), "kernel_params": ("kernel_module",)}

    def __init__(self, kernel: str | Kernel = "rbf", alpha: float = 1.0, *,
                 n_centers: int = 1000, maxiter: int = 20, rtol: float | None = None,
                 block_rows: int | None = None, seed: int | None = None,
                 kernel_params: dict[str, Any] | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **kwargs: Any) -> None:
        super().__init__(device=device, dtype=dtype)
        name = "NystromKernelRidge"
        self.alpha = check_positive(name, "alpha", alpha)
        self.n_centers = check_positive_int(name, "n_centers", n_centers)
        self.maxiter = check_positive_int(name, "maxiter", maxiter)
        if rtol is not None:
            check_positive(name, "rtol", rtol)
        self.rtol = rtol
        if block_rows is not None:
            check_positive_int(name, "block_rows", block_rows)
        self.block_rows = block_rows
        check_randomness(name, seed)
        self.seed = seed
        self.kernel_module, self.__dict__["kernel_params"] = _kernel_module(
            name, kernel, kernel_params, kwargs, device, dtype)
        self.__dict__["kernel"] = kernel  # as given (not registered twice)
        self.register_buffer("n_iter_", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("n_samples_seen_", torch.zeros((), dtype=torch.int64,
                                                            device=device))
        self._squeeze = False

    def _known_dims(self) -> dict[str, int]:
        return {"m": self.n_centers}

    def _blocks(self, n: int, m: int) -> int:
        return self.block_rows if self.block_rows is not None else max(1, 2 ** 22 // m)

    def _preconditioner(self, name: str, C: Tensor, n: int,
                        pass_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """FALKON's factors ``(T, A)`` (Note [FALKON preconditioner]) in the accumulation
        dtype (float64 for float32 data), with the jitter of the kernel pass's dtype."""
        acc = accumulation_dtype(pass_dtype)
        kern = self.kernel_module
        if acc != pass_dtype:  # K_mm in float64: a copy of the kernel with exact parameters
            kern = copy.deepcopy(kern)
            retype_hyperparameters(kern, acc, C.device)
            kern = kern.to(dtype=acc)
        C = C.to(acc)
        m = C.shape[0]
        # m x m float64 matrices are 200 MB at m = 5000: at most three live at once, the
        # rest in place. kern(C, C) is exactly symmetric (Y is X).
        Kmm = kern(C, C)
        # the noise level is that of the float32 kernel blocks when the pass runs in float32
        eps = torch.finfo(pass_dtype).eps
        jitter = eps * m * max(float(Kmm.diagonal().mean()), torch.finfo(acc).tiny)
        added = 0.0
        for _ in range(8):
            # Note [FALKON preconditioner]: T^T T = K_mm + jitter I (upper Cholesky factor)
            Kmm.diagonal().add_(jitter - added)
            added = jitter
            L, info = torch.linalg.cholesky_ex(Kmm)
            if not bool(info):
                break
            jitter *= 10
        else:
            raise NotPSDError(f"{name}: expected a positive semi-definite kernel matrix of the "
                              f"centres, got a failed Cholesky factorisation even with jitter "
                              f"{jitter:.3g}")
        del Kmm
        T = L.mT
        lam = self.alpha / n
        # A^T A = T T^T / m + lambda I
        M = _upper_gram(T)
        M.div_(m).diagonal().add_(lam)
        LA, info = torch.linalg.cholesky_ex(M)
        del M
        if bool(info):
            raise NotPSDError(f"{name}: expected T T^T / m + lambda I positive definite, got a "
                              f"failed Cholesky factorisation (alpha={self.alpha:g})")
        return T, LA.mT

    @staticmethod
    def _b_maps(T: Tensor, A: Tensor, n: int) -> tuple[Callable[[Tensor], Tensor],
                                                        Callable[[Tensor], Tensor]]:
        """:math:`B` and :math:`B^T` of Note [FALKON preconditioner]."""
        sqrt_n = n ** 0.5

        def B(g: Tensor) -> Tensor:  # B g = T^{-1} A^{-1} g / sqrt(n)
            v = torch.linalg.solve_triangular(A, g, upper=True)
            return torch.linalg.solve_triangular(T, v, upper=True) / sqrt_n

        def Bt(w: Tensor) -> Tensor:  # B^T w = A^{-T} T^{-T} w / sqrt(n)
            v = torch.linalg.solve_triangular(T.mT, w, upper=False)
            return torch.linalg.solve_triangular(A.mT, v, upper=False) / sqrt_n
        return B, Bt

    def _clear_stream(self, ref: Tensor) -> None:
        """Drop the streaming statistics (``fit`` replaces them)."""
        self.gram_, self.cross_ = ref.new_empty(0), ref.new_empty(0)
        self.n_samples_seen_ = torch.zeros((), dtype=torch.int64, device=ref.device)

    @torch.no_grad()
    def fit(self, X: object, y: object) -> NystromKernelRidge:
        r"""Draw the centres and solve :math:`H \beta = K_{nm}^T y` by FALKON (class docstring)."""
        name = "NystromKernelRidge.fit"
        X = self._fit_input("fit", X)
        y = self._fit_target("fit", y, X)
        Y = y.unsqueeze(-1) if y.dim() == 1 else y
        n, m = X.shape[0], self.n_centers
        if m > n:
            raise ValueError(f"{name}: expected n_centers <= n_samples = {n}, got {m}")
        gen = make_generator(name, self.seed)
        idx = torch.randperm(n, generator=gen, device=generator_device(gen))[:m].to(X.device)
        C = X[idx].clone()
        T, A = self._preconditioner(name, C, n, X.dtype)
        B, Bt = self._b_maps(T, A, n)
        # Note [fused RBF pass], Note [mixed-precision accumulation]: K_nm streamed in row
        # blocks in X's dtype, sums and CG vectors in T's (float64 for float32 data)
        stream = KnmStream(self.kernel_module, X, C, self.block_rows)

        def H(v: Tensor) -> Tensor:  # H v = K_nm^T (K_nm v) + alpha T^T T v
            return stream.gram_products(v) + self.alpha * at_b(T, T @ v)

        rhs = Bt(stream.cross(Y))
        # rtol None: maxiter iterations, or fewer where the residual reaches the rounding
        # level of the kernel pass (10 u; past it, p^T A p is rounding noise and may come
        # out <= 0)
        floor = 10 * torch.finfo(X.dtype).eps
        gamma, it, ok, rel = cg_core(lambda g: Bt(H(B(g))), rhs,
                                     rtol=floor if self.rtol is None else self.rtol,
                                     maxiter=self.maxiter, name=name)
        if not ok and self.rtol is not None:
            warnings.warn(f"{name}: conjugate gradient stopped at maxiter={self.maxiter} with a "
                          f"relative residual {rel:.3g} above rtol={self.rtol:g}; raise maxiter "
                          f"or n_centers", ConvergenceWarning, stacklevel=2)
        self.centers_ = C
        self.coef_ = B(gamma).to(X.dtype)  # beta = B gamma
        self.n_iter_ = torch.tensor(it, dtype=torch.int64, device=X.device)
        self._clear_stream(X)
        self._squeeze = y.dim() == 1
        return self

    @torch.no_grad()
    def partial_fit(self, X: object, y: object, *,
                    centers: object = None) -> NystromKernelRidge:
        r"""Update the fit with one batch ``X`` ``(n_batch, d)``, ``y`` ``(n_batch[, k])``.

        Note [streamed Nystrom statistics]: the normal equations :math:`(K_{nm}^T K_{nm} + \alpha
        T^T T) \beta = K_{nm}^T y` depend on the data only through the sums over rows :math:`G =
        K_{nm}^T K_{nm}` ``(m, m)`` and :math:`R = K_{nm}^T y` ``(m, k)`` (and the count :math:`n`),
        once the centres are fixed. The first call fixes them: ``centers`` when given (``(n_centers,
        d)``), else ``n_centers`` rows of the first batch drawn with ``seed`` (so the first batch
        needs at least ``n_centers`` rows, and the centres cover only it: pass ``centers`` drawn
        from all the data when the batches differ in kind); under torch.distributed rank 0's centres
        (given or drawn from its first batch) are broadcast to every rank. Every call adds its
        batch's :math:`G_b, R_b, n_b` (all-reduced across ranks when a process group is initialised,
        Note [distributed statistics] in :mod:`lamods._distributed`: every rank calls
        ``partial_fit`` the same number of times) into the buffers ``gram_``, ``cross_``,
        ``n_samples_seen_`` and re-solves the equations directly (not by CG), in FALKON's variables:
        :math:`W \gamma = B^T R` with :math:`W = B^T (G + \alpha T^T T) B` ``(m, m)`` (close to the
        identity, so its Cholesky factorisation is accurate), and :math:`\beta = B \gamma`
        (Note [FALKON preconditioner]). So after all the batches, ``coef_`` is the exact
        solution of the system ``fit`` solves by CG on their concatenation with the same
        centres, to rounding. Memory :math:`O(m^2)`; each call costs :math:`O(n_b m^2)` for
        :math:`G_b` and :math:`O(m^3)` for the solve, so it suits ``m`` up to a few thousand
        (``fit`` streams :math:`O(n m)` per CG iteration instead).

        Raises:
            RuntimeError: on a module fitted by ``fit`` (it keeps no statistics).
            NotPSDError: :math:`W` is not numerically positive definite.
        """
        name = "NystromKernelRidge.partial_fit"
        seen = int(self.n_samples_seen_)
        check_streamable(name, fresh=seen == 0, fitted=self.coef_.numel() > 0)
        X = self._fit_input("partial_fit", X, adopt=seen == 0)
        y = self._fit_target("partial_fit", y, X)
        Y = y.unsqueeze(-1) if y.dim() == 1 else y
        if seen == 0:
            C = self._first_centers(name, X, centers)
        else:
            if centers is not None:
                raise ValueError(f"{name}: expected centers only on the first call (it fixes "
                                 f"them), got centers after {seen} samples")
            check_stream_batch(name, X, self.centers_)
            check_stream_target(name, y, self.cross_.shape[1], self._squeeze)
            C = self.centers_
        m, k = C.shape[0], Y.shape[1]
        G, R = KnmStream(self.kernel_module, X, C, self.block_rows).statistics(Y)
        # Note [streamed Nystrom statistics]: one all-reduce of [G_b, R_b, n_b]
        stats = all_reduce_sum(torch.cat([G.flatten(), R.flatten(), G.new_tensor([X.shape[0]])]))
        n = seen + int(stats[-1].round())
        G, R = stats[:m * m].view(m, m), stats[m * m:-1].view(m, k)
        if seen > 0:
            G, R = G + self.gram_, R + self.cross_
        T, A = self._preconditioner(name, C, n, X.dtype)
        B, Bt = self._b_maps(T, A, n)
        H = G.to(T.dtype) + self.alpha * (T.mT @ T)  # G + alpha T^T T
        W = Bt(Bt(H).mT)  # B^T H B (H symmetric)
        Lw, info = torch.linalg.cholesky_ex((W + W.mT) / 2)
        if bool(info):
            raise NotPSDError(f"{name}: expected B^T (G + alpha T^T T) B positive definite, got "
                              f"a failed Cholesky factorisation (alpha={self.alpha:g}, "
                              f"n={n}); raise alpha")
        self.centers_ = C
        self.coef_ = B(torch.cholesky_solve(Bt(R.to(T.dtype)), Lw)).to(X.dtype)  # beta = B gamma
        self.gram_, self.cross_ = G.to(X.dtype), R.to(X.dtype)
        self.n_samples_seen_ = torch.tensor(n, dtype=torch.int64, device=X.device)
        self.n_iter_ = torch.zeros((), dtype=torch.int64, device=X.device)
        self._squeeze = y.dim() == 1
        return self

    def _first_centers(self, name: str, X: Tensor, centers: object) -> Tensor:
        """The centres the first ``partial_fit`` fixes (Note [streamed Nystrom statistics])."""
        m = self.n_centers
        if centers is not None:
            C = as_float_tensor(name, centers, what="centers", dtype=X.dtype, device=X.device)
            if C.shape != (m, X.shape[1]):
                raise ValueError(f"{name}: expected centers of shape (n_centers, n_features) "
                                 f"= ({m}, {X.shape[1]}), got {tuple(C.shape)}")
            check_data(name, C, what="centers")
            C = C.clone()
        elif is_distributed() and dist.get_rank() != 0:
            C = X.new_empty(m, X.shape[1])  # filled by rank 0's broadcast below
        else:
            if X.shape[0] < m:
                raise ValueError(f"{name}: expected a first batch of at least n_centers={m} "
                                 f"rows (the centres are drawn from it), got {X.shape[0]}; "
                                 f"pass centers=")
            gen = make_generator(name, self.seed)
            idx = torch.randperm(X.shape[0], generator=gen, device=generator_device(gen))
            C = X[idx[:m].to(X.device)].clone()
        if is_distributed():
            dist.broadcast(C, src=0)  # every rank streams against rank 0's centres
        return C

    def predict(self, X: object) -> Tensor:
        r""":math:`f(x) = K(x, C)\, \beta` for ``X`` ``(*, d)``, in row blocks."""
        X = self._input("predict", X)
        flat = X.reshape(-1, X.shape[-1])
        m = self.centers_.shape[0]
        rows = self._blocks(flat.shape[0], m)
        parts = [self.kernel_module(flat[i:i + rows], self.centers_) @ self.coef_
                 for i in range(0, flat.shape[0], rows)]
        out = torch.cat(parts) if parts else flat.new_zeros(0, self.coef_.shape[1])
        out = out.reshape(*X.shape[:-1], self.coef_.shape[1])
        return out.squeeze(-1) if self._squeeze else out

    def forward(self, X: Tensor) -> Tensor:
        return self.predict(X)

    def get_extra_state(self) -> dict[str, bool]:
        return {"squeeze": self._squeeze}  # fitted on 1-D targets: 1-D predictions

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self._squeeze = bool(state.get("squeeze", False))

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha!r}, n_centers={self.n_centers}, maxiter={self.maxiter}, "
                f"rtol={self.rtol!r}")
