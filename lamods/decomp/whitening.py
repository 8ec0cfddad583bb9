r"""Differentiable whitening layers: ZCA and PCA whitening with batch or running statistics.

With batch mean :math:`\mu` and covariance :math:`C = \frac1N \sum (x - \mu)(x - \mu)^T`:

.. math::
    \text{ZCA:}\quad y = (x - \mu)(C + \epsilon I)^{-1/2}, \qquad
    \text{PCA:}\quad y = (x - \mu) U_k (\Lambda_k + \epsilon I)^{-1/2},

where :math:`C = U \Lambda U^T` (eigenvalues descending). ZCA whitening
(Bell & Sejnowski 1997; "Decorrelated Batch Normalization", Huang et al.,
CVPR 2018) is the whitening closest to the input and is a spectral function
of :math:`C`, so its gradient is well defined for every spectrum; it uses
:func:`~lamods.decomp.inv_sqrtm`, whose backward is exact even for repeated
eigenvalues. PCA whitening depends on the individual eigenvectors, which are
not differentiable where eigenvalues repeat; it uses the stable
:func:`~lamods.decomp.eigh` (finite, bounded gradients there).

Like batch normalization: in training mode (or with
``track_running_stats=False``) the layer whitens with the batch statistics and
backpropagates through them; it updates ``running_mean`` and ``running_cov``
(unbiased, :math:`N/(N-1)`) with ``momentum``; in eval mode it whitens with the
running statistics, a fixed affine map.

NaN (Note [NaN policy] in :mod:`lamods.base`): a batch's statistics mix all its rows,
so in training mode (and with ``track_running_stats=False``) a batch with a NaN or
infinite row, or whose covariance overflows the dtype, raises ``ValueError`` and the
running statistics stay as they were; where that check cannot run (while
``torch.compile`` traces) such a batch still leaves them unchanged: the update is
masked by the statistics' finiteness, with no synchronisation. In eval mode the layer
is a fixed affine map: a NaN row gives NaN in its own output row only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lamods._precision import compute_dtype
from lamods._validation import (
    check_features,
    check_finite_rows,
    check_like,
    check_positive_int,
    is_traced,
)
from lamods.decomp.eigh import eigh
from lamods.decomp.matfun import inv_sqrtm

__all__ = ["PCAWhitening", "ZCAWhitening"]


class _Whitening(nn.Module):
    """Shared statistics handling; subclasses give :meth:`_whitening_matrix`."""

    def __init__(self, num_features: int, eps: float, momentum: float,
                 track_running_stats: bool, device: torch.device | str | None,
                 dtype: torch.dtype | None) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(name, "num_features", num_features)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{name}: expected eps to be a float >= 0, got {eps!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0 <= momentum <= 1:
            raise ValueError(f"{name}: expected momentum in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_cov", torch.eye(num_features, **factory))
        self.register_buffer("num_batches_tracked",
                             torch.zeros((), dtype=torch.long, device=device))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_cov.copy_(torch.eye(self.num_features, dtype=self.running_cov.dtype,
                                         device=self.running_cov.device))
        self.num_batches_tracked.zero_()

    def _whitening_matrix(self, C: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        check_features(name, x, self.num_features)
        check_like(name, x, self.running_mean)
        d = self.num_features
        work_dtype = compute_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            if self.training or not self.track_running_stats:
                x2 = x.reshape(-1, d).to(work_dtype)
                N = x2.shape[0]
                if N < 2:
                    raise ValueError(f"{name}: expected at least 2 samples per batch in "
                                     f"training mode, got {N} (input shape {tuple(x.shape)})")
                mean = x2.mean(0)
                xc = x2 - mean
                # C = (1/N) sum (x - mu)(x - mu)^T
                C = xc.mT @ xc / N
                C = (C + C.mT) / 2
                # finite statistics, in the dtype they are stored in (one synchronisation)
                ok = (torch.isfinite(mean.detach().to(x.dtype)).all()
                      & torch.isfinite(C.detach().to(x.dtype)).all())
                if not is_traced(x2) and not bool(ok):
                    check_finite_rows(name, x, "the batch",
                                      hint="; the running statistics were left unchanged")
                    big = float(x2.detach().abs().amax())
                    raise ValueError(
                        f"{name}: expected a batch whose covariance fits in {x.dtype}, got "
                        f"entries up to {big:.3g} (the covariance overflows); scale the input. "
                        "The running statistics were left unchanged")
                if self.training and self.track_running_stats:
                    with torch.no_grad():
                        m = self.momentum
                        unbiased = C.detach() * (N / (N - 1))
                        new_mean = self.running_mean * (1 - m) + m * mean.detach().to(x.dtype)
                        new_cov = self.running_cov * (1 - m) + m * unbiased.to(x.dtype)
                        # masked, so a bad batch never reaches them (even unchecked)
                        self.running_mean.copy_(torch.where(ok, new_mean, self.running_mean))
                        self.running_cov.copy_(torch.where(ok, new_cov, self.running_cov))
                        self.num_batches_tracked.add_(ok.to(torch.long))
            else:
                mean = self.running_mean.to(work_dtype)
                C = self.running_cov.to(work_dtype)
            W = self._whitening_matrix(C)
        xc = x.to(work_dtype) - mean
        if torch.is_autocast_enabled(x.device.type):
            return xc @ W  # autocast picks the matmul's dtype, as for nn.Linear
        return (xc @ W).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"track_running_stats={self.track_running_stats}")


class ZCAWhitening(_Whitening):
    r"""ZCA whitening :math:`y = (x - \mu)(C + \epsilon I)^{-1/2}` with a differentiable covariance.

    In training mode :math:`\mu, C` are the batch statistics (gradients flow
    through them, exact for any spectrum via :func:`~lamods.decomp.inv_sqrtm`)
    and running statistics are updated; in eval mode the running ones are used.

    Args:
        num_features: ``d``, the size of the last dimension.
        eps: ridge :math:`\epsilon` added to the covariance's eigenvalues.
        momentum: weight of the new batch in the running statistics.
        track_running_stats: keep running statistics (else always use the batch's).

    Shape:
        - Input: :math:`(*, d)`; in training mode all leading entries form the batch (at least 2).
        - Output: :math:`(*, d)`.

    Attributes:
        running_mean: :math:`(d)`, initialised to 0.
        running_cov: :math:`(d, d)`, initialised to the identity.
        num_batches_tracked: scalar int64.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> layer = ZCAWhitening(3, eps=0.0, dtype=torch.float64)
        >>> x = torch.randn(500, 3, dtype=torch.float64) @ torch.tensor(
        ...     [[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]], dtype=torch.float64)
        >>> y = layer(x)
        >>> torch.allclose(y.T @ y / 500, torch.eye(3, dtype=torch.float64))
        True
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 track_running_stats: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, track_running_stats, device, dtype)

    def _whitening_matrix(self, C: Tensor) -> Tensor:
        # W = (C + eps I)^(-1/2)
        return inv_sqrtm(C, self.eps, validate=False)


class PCAWhitening(_Whitening):
    r"""PCA whitening :math:`y = (x - \mu) U_k (\Lambda_k + \epsilon I)^{-1/2}`.

    With :math:`C = U \Lambda U^T`, it projects onto the top ``n_components``
    principal axes (eigenvalues descending, signs by the largest-|entry| rule)
    and scales each to unit variance. Statistics as in :class:`ZCAWhitening`; gradients through the
    stable :func:`~lamods.decomp.eigh`.

    Args:
        num_features: ``d``.
        n_components: ``k <= d`` output features (None: ``d``).
        eps: ridge added to the eigenvalues.
        momentum: weight of the new batch in the running statistics.
        track_running_stats: keep running statistics.

    Shape:
        - Input: :math:`(*, d)`; output :math:`(*, k)`.

    Attributes:
        running_mean: :math:`(d)`.
        running_cov: :math:`(d, d)`.
        num_batches_tracked: scalar int64.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> layer = PCAWhitening(4, n_components=2, eps=0.0, dtype=torch.float64)
        >>> y = layer(torch.randn(300, 4, dtype=torch.float64))
        >>> y.shape
        torch.Size([300, 2])
        >>> torch.allclose(y.T @ y / 300, torch.eye(2, dtype=torch.float64))
        True
    """

    def __init__(self, num_features: int, n_components: int | None = None, eps: float = 1e-5,
                 momentum: float = 0.1, track_running_stats: bool = True,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, track_running_stats, device, dtype)
        k = num_features if n_components is None else n_components
        check_positive_int(type(self).__name__, "n_components", k)
        if k > num_features:
            raise ValueError(f"PCAWhitening: expected n_components <= num_features = "
                             f"{num_features}, got {k}")
        self.n_components = k

    def _whitening_matrix(self, C: Tensor) -> Tensor:
        L, U = eigh(C, validate=False)
        k = self.n_components
        L, U = L[-k:].flip(-1), U[:, -k:].flip(-1)
        # W = U_k (Lambda_k + eps I)^(-1/2)
        return U / (L.clamp_min(0) + self.eps).sqrt()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_components={self.n_components}"
