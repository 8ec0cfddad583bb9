r"""Low-rank linear layers: a factorised affine map and a LoRA-style adapter.

:class:`LowRankLinear` replaces the dense weight :math:`W \in \mathbb{R}^{m \times n}`
(``m = out_features``, ``n = in_features``) of an affine layer by three factors,

.. math::
    y = x V \operatorname{diag}(s) U^T + b, \qquad
    U \in \mathbb{R}^{m \times r},\ s \in \mathbb{R}^{r},\ V \in \mathbb{R}^{n \times r},

with :math:`r (m + n + 1)` weight parameters instead of :math:`m n` and
:math:`r (m + n)` multiply-adds per input row instead of :math:`m n`; it pays
when :math:`r < m n / (m + n + 1)` (about ``min(m, n) / 2`` for a square layer).

Note [Eckart-Young]: with the SVD :math:`W = \sum_i \sigma_i u_i v_i^T`
(:math:`\sigma_1 \ge \sigma_2 \ge \dots`), the truncation
:math:`W_r = \sum_{i \le r} \sigma_i u_i v_i^T` is the best rank-r approximation in
both the Frobenius and the spectral norm (Eckart and Young, 1936; Mirsky, 1960):

.. math::
    \|W - W_r\|_F^2 = \sum_{i > r} \sigma_i^2, \qquad \|W - W_r\|_2 = \sigma_{r+1}.

:meth:`LowRankLinear.from_linear` starts from :math:`W_r`; ``energy=e`` picks the
smallest ``r`` with :math:`\sum_{i \le r} \sigma_i^2 \ge e \sum_i \sigma_i^2`, i.e. a
relative Frobenius error of at most :math:`\sqrt{1 - e}`.

Note [parametrisation]: we keep the three SVD factors ``U, s, V`` rather than
two factors ``B A`` (``B = U diag(s)``). Why:

- the conversion from and to a dense layer is the SVD itself: ``from_linear``
  stores ``(U_r, s_r, V_r)`` as they come, and ``s`` shows the spectrum the
  layer keeps (with ``orthonormal=True`` it *is* the spectrum during training);
- ``orthonormal=True`` (``torch.nn.utils.parametrizations.orthogonal`` on ``U`` and
  ``V``) needs the scale outside the orthonormal factors;
- the cost is ``r`` parameters and ``r`` multiplications per row more than
  ``B A``: negligible next to :math:`r (m + n)`.

How it trains: ``U diag(s) V^T`` and ``B A`` are the same function class. Under
plain SGD the three-factor form rescales the step along each direction
(the update of ``W`` through ``U`` and ``V`` grows with :math:`s_i^2`, through a
balanced ``B A`` with :math:`s_i`); adaptive optimisers (Adam) normalise each
parameter's step, which removes most of that difference; prefer Adam/AdamW
for either.

Note [initialisation]: ``reset_parameters`` draws ``U`` and ``V`` with orthonormal
columns (QR of a Gaussian matrix, signs fixed so the draw is Haar) and sets
every :math:`s_i = \sqrt{m / (3 r)}`, so :math:`\|U \operatorname{diag}(s) V^T\|_F^2 = m/3`,
the expected squared Frobenius norm of ``nn.Linear``'s default weight: outputs
have the same scale as ``nn.Linear``'s for the same input. The bias is drawn as
``nn.Linear`` draws it.

:class:`LowRankAdapter` (LoRA, Hu et al. 2021) leaves a dense layer frozen and
learns a low-rank update,

.. math::
    y = x W^T + b + \frac{\alpha}{r}\, x A^T B^T, \qquad
    A \in \mathbb{R}^{r \times n},\ B \in \mathbb{R}^{m \times r}.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

from lamods._validation import check_features, check_finite, check_like, check_positive_int
from lamods.decomp import svd

__all__ = ["LowRankAdapter", "LowRankLinear", "energy_rank", "lowrank_linear"]


# ---------------------------------------------------------------------------
# Validation and the truncated SVD shared with lamods.layers.surgery
# ---------------------------------------------------------------------------
def check_rank(name: str, rank: object, in_features: int, out_features: int) -> int:
    """Return ``rank`` if it is an int in ``[1, min(in_features, out_features)]``, else raise."""
    check_positive_int(name, "rank", rank)
    limit = min(in_features, out_features)
    if rank > limit:
        raise ValueError(
            f"{name}: expected rank <= min(in_features, out_features) = {limit}, got {rank}"
        )
    return rank


def check_energy(name: str, energy: object) -> float:
    """Return ``energy`` as a float if it lies in ``(0, 1]``, else raise."""
    if isinstance(energy, bool) or not isinstance(energy, Real) or not 0 < energy <= 1:
        raise ValueError(f"{name}: expected energy in (0, 1], got {energy!r}")
    return float(energy)


def check_rank_or_energy(name: str, rank: object, energy: object) -> None:
    """Exactly one of ``rank`` and ``energy`` must be given."""
    if (rank is None) == (energy is None):
        got = "both" if rank is not None else "neither"
        raise ValueError(
            f"{name}: expected exactly one of rank and energy, got {got} "
            f"(rank={rank!r}, energy={energy!r})"
        )


def energy_rank(singular_values: Tensor, energy: float) -> int:
    r"""Smallest ``r`` with :math:`\sum_{i \le r} \sigma_i^2 \ge e \sum_i \sigma_i^2`.

    Args:
        singular_values: ``(k,)``, in descending order.
        energy: the fraction ``e`` in ``(0, 1]`` of the squared singular values to keep.

    Examples::

        >>> energy_rank(torch.tensor([3.0, 2.0, 1.0]), 0.9)  # 9/14 < 0.9 <= 13/14
        2
        >>> energy_rank(torch.tensor([3.0, 0.0]), 1.0)
        1
    """
    name = "energy_rank"
    energy = check_energy(name, energy)
    if not isinstance(singular_values, Tensor) or singular_values.dim() != 1 \
            or singular_values.numel() == 0 or not singular_values.is_floating_point():
        got = (f"shape {tuple(singular_values.shape)}, dtype {singular_values.dtype}"
               if isinstance(singular_values, Tensor) else type(singular_values).__name__)
        raise ValueError(f"{name}: expected singular_values as a non-empty 1-D floating "
                         f"tensor, got {got}")
    s = singular_values.detach().to(torch.float64)
    check_finite(name, s, "singular_values")
    if bool((s < 0).any()) or bool((s[1:] > s[:-1]).any()):
        raise ValueError(f"{name}: expected non-negative singular_values in descending order, "
                         f"got {singular_values.tolist()[:8]}")
    power = s.square().cumsum(0)
    total = power[-1]
    if total <= 0:
        return 1
    # power / total ends in exactly 1.0, so energy = 1 stops at the numerical rank
    kept = power / total
    return int((kept < energy).sum()) + 1


def weight_svd(name: str, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``(U, S, Vh)`` of a detached weight with :func:`lamods.decomp.svd`.

    Computed in at least float32 and returned in ``weight``'s dtype; signs follow
    :func:`lamods.decomp.svd`'s convention, so the result is the same run to run.
    """
    w = weight.detach()
    check_finite(name, w, "weight")
    with torch.no_grad():
        return tuple(svd(w, validate=False))


def _random_orthonormal(n: int, r: int, device: Any, dtype: torch.dtype) -> Tensor:
    """``(n, r)`` with orthonormal columns, Haar-distributed (QR with the signs of diag R)."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    Q, R = torch.linalg.qr(torch.randn(n, r, device=device, dtype=work))
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1
    return (Q * signs).to(dtype)


# ---------------------------------------------------------------------------
# LowRankLinear
# ---------------------------------------------------------------------------
def lowrank_linear(x: Tensor, U: Tensor, S: Tensor, V: Tensor,
                   bias: Tensor | None = None) -> Tensor:
    r"""Functional form of :class:`LowRankLinear`: :math:`y = x V \operatorname{diag}(s) U^T + b`.

    Args:
        x: ``(*, n)``.
        U: ``(m, r)``.
        S: ``(r,)``.
        V: ``(n, r)``.
        bias: ``(m,)`` or None.

    Returns:
        ``(*, m)``. Costs :math:`r (n + m + 1)` multiplications per row; autograd does the
        backward (twice differentiable). Under autocast both products run in the autocast dtype.
    """
    # h = x V                                       (*, r)
    h = F.linear(x, V.mT)
    # y = (h * s) U^T + b                           (*, m)
    return F.linear(h * S, U, bias)


class LowRankLinear(nn.Module):
    r"""Affine layer with a rank-``r`` weight: :math:`y = x V \operatorname{diag}(s) U^T + b`.

    The weight :math:`W = U \operatorname{diag}(s) V^T` is never formed: the input is
    projected to ``r`` dimensions, scaled and lifted, :math:`r (H_{in} + H_{out})`
    multiply-adds per row instead of :math:`H_{in} H_{out}`. Why three factors and
    not two: module docstring, Note [parametrisation]. Build one from a trained
    ``nn.Linear`` with :meth:`from_linear` (truncated SVD, the best rank-``r``
    approximation: Note [Eckart-Young]); go back with :meth:`to_linear`.

    Args:
        in_features: size of each input sample, :math:`H_{in}`.
        out_features: size of each output sample, :math:`H_{out}`.
        rank: ``r``, between 1 and ``min(in_features, out_features)``.
        bias: if False, the layer learns no additive bias.
        orthonormal: keep ``U`` and ``V`` with orthonormal columns during training, with
            ``torch.nn.utils.parametrizations.orthogonal`` (Householder map). ``s`` then
            stays the layer's singular values (up to sign). The parameters become
            ``parametrizations.U.original`` / ``parametrizations.V.original`` (and
            ``state_dict`` keys follow; the diagonal of each ``original`` holds the
            columns' signs and gets no gradient); each forward pays for building ``U``
            and ``V`` (:math:`O((m + n) r^2)`). Default False: the factors are free.

    Shape:
        - Input: :math:`(*, H_{in})`, any number of leading dimensions.
        - Output: :math:`(*, H_{out})`.

    Attributes:
        U: :math:`(H_{out}, r)`, orthonormal columns at initialisation.
        S: :math:`(r)`, every entry :math:`\sqrt{H_{out} / (3 r)}` at initialisation
            (Note [initialisation]).
        V: :math:`(H_{in}, r)`, orthonormal columns at initialisation.
        bias: :math:`(H_{out})`, :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H_{in}`.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> layer = LowRankLinear(784, 512, rank=32)
        >>> layer(torch.randn(16, 784)).shape
        torch.Size([16, 512])
        >>> sum(p.numel() for p in layer.parameters())  # 32 * (784 + 512 + 1) + 512
        42016
        >>> dense = nn.Linear(64, 48, dtype=torch.float64)
        >>> low = LowRankLinear.from_linear(dense, energy=0.9)
        >>> low.rank < 48
        True
        >>> s = torch.linalg.svdvals(dense.weight.detach())
        >>> err = torch.linalg.matrix_norm(dense.weight.detach() - low.dense_weight().detach())
        >>> torch.allclose(err, s[low.rank:].square().sum().sqrt())  # Eckart-Young
        True
    """

    __constants__ = ["in_features", "out_features", "rank"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        orthonormal: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_positive_int("LowRankLinear", "in_features", in_features)
        self.out_features = check_positive_int("LowRankLinear", "out_features", out_features)
        self.rank = check_rank("LowRankLinear", rank, in_features, out_features)
        self.orthonormal = bool(orthonormal)
        self.U = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.S = nn.Parameter(torch.empty(rank, **factory))
        self.V = nn.Parameter(torch.empty(in_features, rank, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if self.orthonormal:
            orthogonal(self, "U", orthogonal_map="householder")
            orthogonal(self, "V", orthogonal_map="householder")

    def reset_parameters(self) -> None:
        """Orthonormal ``U``, ``V``, constant ``s`` (module docstring), ``nn.Linear``'s bias."""
        p = self.S
        U = _random_orthonormal(self.out_features, self.rank, p.device, p.dtype)
        V = _random_orthonormal(self.in_features, self.rank, p.device, p.dtype)
        S = torch.full_like(p, math.sqrt(self.out_features / (3 * self.rank)))
        self.set_factors(U, S, V)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def set_factors(self, U: Tensor, S: Tensor, V: Tensor) -> None:
        """Copy ``U`` ``(out, r)``, ``S`` ``(r,)`` and ``V`` ``(in, r)`` into the layer (no grad).

        With ``orthonormal=True``, ``U`` and ``V`` must have orthonormal columns.
        """
        with torch.no_grad():
            for name, value in (("U", U), ("V", V)):
                if parametrize.is_parametrized(self, name):
                    setattr(self, name, value.to(self.S))
                else:
                    getattr(self, name).copy_(value)
            self.S.copy_(S)

    def forward(self, x: Tensor) -> Tensor:
        check_features("LowRankLinear", x, self.in_features)
        check_like("LowRankLinear", x, self.S)
        return lowrank_linear(x, self.U, self.S, self.V, self.bias)

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"rank={self.rank}, bias={self.bias is not None}")
        return s + (", orthonormal=True" if self.orthonormal else "")

    def dense_weight(self) -> Tensor:
        r""":math:`W = U \operatorname{diag}(s) V^T`, ``(out, in)``, differentiable."""
        return (self.U * self.S) @ self.V.mT

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        rank: int | None = None,
        energy: float | None = None,
        *,
        orthonormal: bool = False,
    ) -> LowRankLinear:
        r"""The rank-``r`` truncated SVD of ``linear``'s weight, bias copied.

        The best rank-``r`` approximation in Frobenius and spectral norm (Note
        [Eckart-Young]): the weight error is :math:`\sqrt{\sum_{i>r} \sigma_i^2}` in
        Frobenius norm and :math:`\sigma_{r+1}` in spectral norm. At full rank,
        ``to_linear()`` gives back ``linear`` to rounding.

        Args:
            linear: the dense layer (not modified).
            rank: ``r``, between 1 and ``min(in_features, out_features)``.
            energy: instead of ``rank``: the fraction in ``(0, 1]`` of
                :math:`\sum_i \sigma_i^2` to keep; the smallest such rank is used
                (:func:`energy_rank`). Give exactly one of ``rank`` and ``energy``.
            orthonormal: as in the constructor.
        """
        name = "LowRankLinear.from_linear"
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name}: expected an nn.Linear, got {type(linear).__name__}")
        check_rank_or_energy(name, rank, energy)
        if rank is not None:
            check_rank(name, rank, linear.in_features, linear.out_features)
        else:
            check_energy(name, energy)
        U, S, Vh = weight_svd(name, linear.weight)
        r = rank if rank is not None else energy_rank(S, energy)
        return cls._from_svd(linear, U, S, Vh, r, orthonormal=orthonormal)

    @classmethod
    def _from_svd(cls, linear: nn.Linear, U: Tensor, S: Tensor, Vh: Tensor, rank: int, *,
                  orthonormal: bool = False) -> LowRankLinear:
        """A layer from the first ``rank`` triplets of ``linear.weight``'s SVD ``(U, S, Vh)``."""
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, rank, linear.bias is not None,
                  orthonormal=orthonormal, device=w.device, dtype=w.dtype)
        new.set_factors(U[:, :rank], S[:rank], Vh[:rank].mT)
        if linear.bias is not None:
            with torch.no_grad():
                new.bias.copy_(linear.bias)
        return new

    def to_linear(self) -> nn.Linear:
        r"""A new ``nn.Linear`` with weight :math:`U \operatorname{diag}(s) V^T` and this bias."""
        with torch.no_grad():
            w = self.dense_weight()
            new = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                            device=w.device, dtype=w.dtype)
            new.weight.copy_(w)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new


# ---------------------------------------------------------------------------
# LowRankAdapter
# ---------------------------------------------------------------------------
_ADAPTER_INITS = ("zero", "svd")


class LowRankAdapter(nn.Module):
    r"""LoRA: a frozen ``nn.Linear`` plus a trained rank-``r`` update,
    :math:`y = x W^T + b + \frac{\alpha}{r} x A^T B^T`.

    The base layer's parameters are frozen (``requires_grad=False``); only ``A``
    and ``B`` train, :math:`r (H_{in} + H_{out})` parameters. :meth:`merge` folds
    the update into the base weight, :math:`W \leftarrow W + \frac{\alpha}{r} B A`
    (the forward is then the base alone, as fast as ``nn.Linear``); :meth:`unmerge`
    subtracts it again. Both are exact up to one rounding of the weight's dtype.
    Whether the update is merged travels in ``state_dict`` (as extra state).
    Merging is for inference: while merged, ``A`` and ``B`` get no gradient.

    Args:
        base: the ``nn.Linear`` to adapt. It is kept (not copied) and frozen;
            ``init="svd"`` overwrites its weight (see below).
        rank: ``r``, between 1 and ``min(in_features, out_features)``.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
            None (default) means ``alpha = rank`` (scale 1). Keeping ``alpha`` fixed
            while changing ``rank`` keeps the learning rate meaningful (LoRA's rule).
        init: ``"zero"`` (LoRA): ``A`` as ``nn.Linear`` initialises a weight,
            :math:`\mathcal{U}(-1/\sqrt{H_{in}}, 1/\sqrt{H_{in}})`, ``B = 0``, so the
            layer starts equal to ``base``. ``"svd"`` (PiSSA, Meng et al. 2024):
            with :math:`W = U \operatorname{diag}(\sigma) V^T`,
            :math:`B = U_r \operatorname{diag}(\sqrt{\sigma_r r / \alpha})`,
            :math:`A = \operatorname{diag}(\sqrt{\sigma_r r / \alpha}) V_r^T`, and the
            base weight (in place) becomes the residual :math:`W - \frac{\alpha}{r} B A`;
            the output is unchanged (to rounding) and training moves the
            principal subspace.

    Shape:
        - Input: :math:`(*, H_{in})`.
        - Output: :math:`(*, H_{out})`.

    Attributes:
        base: the frozen ``nn.Linear``.
        A: :math:`(r, H_{in})`.
        B: :math:`(H_{out}, r)`.
        scaling: :math:`\alpha / r`.
        merged: whether the update is currently folded into ``base.weight``.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> base = nn.Linear(64, 32, dtype=torch.float64)
        >>> lora = LowRankAdapter(base, rank=4, alpha=8)
        >>> x = torch.randn(10, 64, dtype=torch.float64)
        >>> torch.equal(lora(x), base(x))  # B = 0 at initialisation
        True
        >>> [n for n, p in lora.named_parameters() if p.requires_grad]
        ['A', 'B']
        >>> _ = nn.init.normal_(lora.B)
        >>> y = lora(x)
        >>> lora.merge()
        >>> torch.allclose(lora(x), y)
        True
        >>> lora.unmerge()
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float | None = None,
        init: str = "zero",
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"LowRankAdapter: expected base to be an nn.Linear, got {type(base).__name__}"
            )
        self.rank = check_rank("LowRankAdapter", rank, base.in_features, base.out_features)
        if alpha is None:
            alpha = float(rank)
        if (isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(alpha)
                or alpha <= 0):
            raise ValueError(
                f"LowRankAdapter: expected alpha to be a positive number, got {alpha!r}"
            )
        if init not in _ADAPTER_INITS:
            raise ValueError(
                f"LowRankAdapter: expected init to be one of {_ADAPTER_INITS}, got {init!r}"
            )
        self.alpha = float(alpha)
        self.init = init
        self.merged = False
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.zeros(rank, base.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def reset_parameters(self) -> None:
        """Re-draw ``A`` and zero ``B`` (``"zero"``), or redo the SVD split (``"svd"``).

        For ``"svd"`` the current update is first folded back into the base weight,
        so resetting never changes the layer's output (to rounding).
        """
        if self.merged:
            raise RuntimeError("LowRankAdapter: expected an unmerged adapter; call unmerge() first")
        if self.init == "zero":
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            nn.init.zeros_(self.B)
            return
        with torch.no_grad():
            weight = self.base.weight
            full = weight + self.delta_weight()
            U, S, Vh = weight_svd("LowRankAdapter", full)
            root = (S[: self.rank] / self.scaling).sqrt()
            # B = U_r diag(sqrt(s_r / scale)), A = diag(sqrt(s_r / scale)) V_r^T
            self.B.copy_(U[:, : self.rank] * root)
            self.A.copy_(root.unsqueeze(-1) * Vh[: self.rank])
            # the base keeps the residual W - scale * B A
            weight.copy_(full - self.delta_weight())

    def delta_weight(self) -> Tensor:
        r"""The update :math:`\frac{\alpha}{r} B A`, ``(out, in)``, differentiable."""
        return (self.B @ self.A) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        check_features("LowRankAdapter", x, self.in_features)
        check_like("LowRankAdapter", x, self.base.weight)
        # x W^T + b
        y = F.linear(x, self.base.weight, self.base.bias)
        if self.merged:
            return y
        # + (alpha / r) (x A^T) B^T
        return y + F.linear(F.linear(x, self.A) * self.scaling, self.B)

    def merge(self) -> None:
        r"""Fold the update into the base: :math:`W \leftarrow W + \frac{\alpha}{r} B A`."""
        if self.merged:
            raise RuntimeError("LowRankAdapter: expected an unmerged adapter, got a merged one")
        with torch.no_grad():
            self.base.weight.add_(self.delta_weight())
        self.merged = True

    def unmerge(self) -> None:
        r"""Take the update out of the base again: :math:`W \leftarrow W - \frac{\alpha}{r} B A`."""
        if not self.merged:
            raise RuntimeError("LowRankAdapter: expected a merged adapter, got an unmerged one")
        with torch.no_grad():
            self.base.weight.sub_(self.delta_weight())
        self.merged = False

    def to_linear(self) -> nn.Linear:
        r"""A new ``nn.Linear`` with weight :math:`W + \frac{\alpha}{r} B A` (``W`` if merged)."""
        base = self.base
        with torch.no_grad():
            w = base.weight if self.merged else base.weight + self.delta_weight()
            new = nn.Linear(self.in_features, self.out_features, base.bias is not None,
                            device=w.device, dtype=w.dtype)
            new.weight.copy_(w)
            if base.bias is not None:
                new.bias.copy_(base.bias)
        return new

    def get_extra_state(self) -> dict[str, bool]:
        return {"merged": self.merged}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self.merged = bool(state["merged"])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha:g}, init={self.init!r}, merged={self.merged}")
