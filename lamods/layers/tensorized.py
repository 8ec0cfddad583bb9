r"""Tensor-factorized linear layers: the weight matrix reshaped as a 3-way tensor and kept in
Tucker or CP form.

An ``nn.Linear(I_1 I_2, O)`` weight :math:`W \in \mathbb{R}^{O \times I_1 I_2}` read as the
tensor :math:`\mathcal{W} \in \mathbb{R}^{O \times I_1 \times I_2}` (the input
:math:`x \in \mathbb{R}^{I_1 I_2}` as the matrix :math:`X \in \mathbb{R}^{I_1 \times I_2}`,
row-major, e.g. an image's rows and columns), so :math:`y_o = \sum_{a,b} \mathcal{W}_{o,a,b}
X_{a,b} + b_o`:

- **Tucker** (:class:`TuckerLinear`), :math:`\mathcal{W} = \mathcal{G} \times_1 U_0 \times_2
  U_1 \times_3 U_2`, core :math:`\mathcal{G} \in \mathbb{R}^{r_0 \times r_1 \times r_2}`:

  .. math:: y = U_0\, G_{(1)} \operatorname{vec}(U_1^T X U_2) + b,

  :math:`O r_0 + I_1 r_1 + I_2 r_2 + r_0 r_1 r_2 (+ O)` parameters;
- **CP** (:class:`CPLinear`), :math:`\mathcal{W} = \sum_r \lambda_r\, a_r \circ b_r \circ c_r`:

  .. math:: y = A \big(\lambda \odot \operatorname{diag}(B^T X C)\big) + b,

  :math:`R (O + I_1 + I_2 + 1) (+ O)` parameters,

against :math:`r (O + I_1 I_2 + 1)` for the matrix rank-:math:`r` layer
(:class:`~lamods.LowRankLinear`). ``from_linear`` fits the factors to a trained layer's
weight (:func:`~lamods.decomp.tensor.hooi` / :func:`~lamods.decomp.tensor.cp_als`);
autograd differentiates the forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lamods._precision import autocast_dtype, cast_all
from lamods._validation import check_features, check_like, check_positive_int
from lamods.decomp.tensor import cp_als, cp_reconstruct, hooi, tucker_reconstruct

__all__ = ["CPLinear", "TuckerLinear"]


def _in_shape(name: str, in_shape: object) -> tuple[int, int]:
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) != 2:
        raise ValueError(f"{name}: expected in_shape to be a pair (I_1, I_2), got {in_shape!r}")
    return (check_positive_int(name, "in_shape[0]", in_shape[0]),
            check_positive_int(name, "in_shape[1]", in_shape[1]))


def _check_linear(name: str, layer: object, in_shape: tuple[int, int]) -> nn.Linear:
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{name}.from_linear: expected nn.Linear, got {type(layer).__name__}")
    if layer.in_features != in_shape[0] * in_shape[1]:
        raise ValueError(f"{name}.from_linear: expected in_shape with I_1 * I_2 = in_features "
                         f"= {layer.in_features}, got {tuple(in_shape)}")
    return layer


class _Tensorized(nn.Module):
    """What both layers share: the input check, the reshape and the bias."""

    name = ""

    def _init_common(self, in_shape: Sequence[int], out_features: int, bias: bool,
                     factory: dict) -> None:
        self.in_shape = _in_shape(self.name, in_shape)
        self.in_features = self.in_shape[0] * self.in_shape[1]
        self.out_features = check_positive_int(self.name, "out_features", out_features)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)

    def _reset_bias(self) -> None:
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _prepare(self, x: Tensor, *params: Tensor | None) -> list[Tensor | None]:
        """Check ``x``; cast it and ``params`` to the autocast dtype under autocast; return
        ``x`` reshaped to ``(*, I_1, I_2)`` followed by the params."""
        check_features(self.name, x, self.in_features)
        check_like(self.name, x, params[0])
        dtype = autocast_dtype(x)
        if dtype is not None:
            x, *params = cast_all(dtype, x, *params)
        return [x.reshape(*x.shape[:-1], *self.in_shape), *params]

    def weight_tensor(self) -> Tensor:
        """The dense weight as the tensor ``(O, I_1, I_2)``."""
        raise NotImplementedError

    @property
    def weight(self) -> Tensor:
        """The dense weight ``(O, I_1 I_2)`` (computed from the factors)."""
        return self.weight_tensor().reshape(self.out_features, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the dense weight and a copy of the bias."""
        w = self.weight.detach()
        new = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new


class TuckerLinear(_Tensorized):
    r"""Linear layer whose weight, read as an ``(O, I_1, I_2)`` tensor, is in Tucker form.

    :math:`y = U_0\, G_{(1)} \operatorname{vec}(U_1^T X U_2) + b`, with :math:`X` the input
    reshaped to ``in_shape`` (module docstring); :math:`O r_0 + I_1 r_1 + I_2 r_2 + r_0 r_1 r_2`
    weight parameters.

    Args:
        in_shape: ``(I_1, I_2)``; ``in_features = I_1 I_2``.
        out_features: ``O``.
        ranks: ``(r_0, r_1, r_2)``, each at most its mode's size.
        bias: learn an additive bias.

    Shape:
        - Input: :math:`(*, I_1 I_2)`.
        - Output: :math:`(*, O)`.

    Attributes:
        core: :math:`(r_0, r_1, r_2)`; ``factor0`` :math:`(O, r_0)`, ``factor1``
            :math:`(I_1, r_1)`, ``factor2`` :math:`(I_2, r_2)`; ``bias`` :math:`(O)`.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> dense = nn.Linear(64, 32)
        >>> layer = TuckerLinear.from_linear(dense, (8, 8), (32, 8, 8))  # full ranks: exact
        >>> x = torch.randn(5, 64)
        >>> torch.allclose(layer(x), dense(x), atol=1e-5)
        True
        >>> TuckerLinear((8, 8), 32, (8, 4, 4)).n_weight_params   # vs 32 * 64 = 2048
        448
    """

    name = "TuckerLinear"

    def __init__(self, in_shape: Sequence[int], out_features: int, ranks: Sequence[int],
                 bias: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self._init_common(in_shape, out_features, bias, factory)
        if not isinstance(ranks, (tuple, list)) or len(ranks) != 3:
            raise ValueError(f"TuckerLinear: expected ranks (r_0, r_1, r_2), got {ranks!r}")
        sizes = (self.out_features, *self.in_shape)
        for n, (r, size) in enumerate(zip(ranks, sizes)):
            check_positive_int("TuckerLinear", f"ranks[{n}]", r)
            if r > size:
                raise ValueError(f"TuckerLinear: expected ranks[{n}] <= {size}, got {r}")
        self.ranks = tuple(int(r) for r in ranks)
        self.core = nn.Parameter(torch.empty(*self.ranks, **factory))
        self.factor0 = nn.Parameter(torch.empty(self.out_features, self.ranks[0], **factory))
        self.factor1 = nn.Parameter(torch.empty(self.in_shape[0], self.ranks[1], **factory))
        self.factor2 = nn.Parameter(torch.empty(self.in_shape[1], self.ranks[2], **factory))
        self.reset_parameters()

    @property
    def n_weight_params(self) -> int:
        """:math:`O r_0 + I_1 r_1 + I_2 r_2 + r_0 r_1 r_2`."""
        return (self.core.numel() + self.factor0.numel() + self.factor1.numel()
                + self.factor2.numel())

    def reset_parameters(self) -> None:
        """Orthonormal factors and a core scaled so the dense weight has ``nn.Linear``'s
        variance, :math:`1/(3 I_1 I_2)` per entry."""
        for U in (self.factor0, self.factor1, self.factor2):
            nn.init.orthogonal_(U)
        # W = G x U0 x U1 x U2 with orthonormal U: ||W||_F = ||G||_F; match the variance of
        # U(-1/sqrt(n), 1/sqrt(n)) over O I_1 I_2 entries
        std = math.sqrt(self.out_features / (3 * self.core.numel()))
        nn.init.normal_(self.core, std=std)
        self._reset_bias()

    def weight_tensor(self) -> Tensor:
        return tucker_reconstruct(self.core, [self.factor0, self.factor1, self.factor2])

    def forward(self, x: Tensor) -> Tensor:
        X, core, u0, u1, u2, bias = self._prepare(x, self.core, self.factor0, self.factor1,
                                                  self.factor2, self.bias)
        # Z = U_1^T X U_2: (*, r_1, r_2)
        Z = u1.mT @ X @ u2
        # y = U_0 G_(1) vec(Z) + b
        y = Z.flatten(-2) @ core.reshape(self.ranks[0], -1).mT @ u0.mT
        return y if bias is None else y + bias

    def extra_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_features={self.out_features}, "
                f"ranks={self.ranks}, bias={self.bias is not None}")

    @classmethod
    def from_linear(cls, layer: nn.Linear, in_shape: Sequence[int], ranks: Sequence[int],
                    *, n_iter: int = 20) -> TuckerLinear:
        """The Tucker form of ``layer``'s weight by HOOI (:func:`~lamods.decomp.tensor.hooi`),
        in float64, cast back; the bias copied."""
        in_shape = _in_shape("TuckerLinear", in_shape)
        _check_linear("TuckerLinear", layer, in_shape)
        w = layer.weight.detach()
        new = cls(in_shape, layer.out_features, ranks, layer.bias is not None,
                  device=w.device, dtype=w.dtype)
        with torch.no_grad():
            core, factors, _ = hooi(w.double().reshape(layer.out_features, *in_shape),
                                    list(new.ranks), n_iter=n_iter)
            new.core.copy_(core)
            for p, U in zip((new.factor0, new.factor1, new.factor2), factors):
                p.copy_(U)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new


class CPLinear(_Tensorized):
    r"""Linear layer whose weight, read as an ``(O, I_1, I_2)`` tensor, is a rank-``R`` CP sum.

    :math:`\mathcal{W} = \sum_r \lambda_r\, a_r \circ b_r \circ c_r`,
    :math:`y = A (\lambda \odot \operatorname{diag}(B^T X C)) + b` (module docstring);
    :math:`R (O + I_1 + I_2 + 1)` weight parameters.

    Args:
        in_shape: ``(I_1, I_2)``; ``in_features = I_1 I_2``.
        out_features: ``O``.
        rank: ``R``.
        bias: learn an additive bias.

    Shape:
        - Input: :math:`(*, I_1 I_2)`.
        - Output: :math:`(*, O)`.

    Attributes:
        weights: :math:`(R)`; ``factor0`` :math:`(O, R)`, ``factor1`` :math:`(I_1, R)`,
            ``factor2`` :math:`(I_2, R)`; ``bias`` :math:`(O)`.

    Examples::

        >>> layer = CPLinear((8, 8), 32, 6)
        >>> layer(torch.randn(5, 64)).shape, layer.n_weight_params   # 6 * (32 + 8 + 8 + 1)
        (torch.Size([5, 32]), 294)
    """

    name = "CPLinear"

    def __init__(self, in_shape: Sequence[int], out_features: int, rank: int,
                 bias: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self._init_common(in_shape, out_features, bias, factory)
        self.rank = check_positive_int("CPLinear", "rank", rank)
        self.weights = nn.Parameter(torch.empty(rank, **factory))
        self.factor0 = nn.Parameter(torch.empty(self.out_features, rank, **factory))
        self.factor1 = nn.Parameter(torch.empty(self.in_shape[0], rank, **factory))
        self.factor2 = nn.Parameter(torch.empty(self.in_shape[1], rank, **factory))
        self.reset_parameters()

    @property
    def n_weight_params(self) -> int:
        """:math:`R (O + I_1 + I_2 + 1)`."""
        return self.rank * (self.out_features + self.in_shape[0] + self.in_shape[1] + 1)

    def reset_parameters(self) -> None:
        """Unit-norm random factor columns and weights giving the dense weight ``nn.Linear``'s
        variance, :math:`1/(3 I_1 I_2)` per entry (in expectation)."""
        for U in (self.factor0, self.factor1, self.factor2):
            nn.init.normal_(U)
            with torch.no_grad():
                U /= U.norm(dim=0).clamp_min(1e-12)
        # E ||W||_F^2 = sum_r lambda_r^2 (random unit columns, nearly orthogonal terms)
        std = math.sqrt(self.out_features / (3 * self.rank))
        nn.init.normal_(self.weights, std=std)
        self._reset_bias()

    def weight_tensor(self) -> Tensor:
        return cp_reconstruct(self.weights, [self.factor0, self.factor1, self.factor2])

    def forward(self, x: Tensor) -> Tensor:
        X, lam, a, b_, c, bias = self._prepare(x, self.weights, self.factor0, self.factor1,
                                               self.factor2, self.bias)
        # z_r = b_r^T X c_r = diag(B^T X C)_r: (*, R)
        z = ((X @ c) * b_).sum(-2)
        # y = A (lambda * z) + b
        y = (z * lam) @ a.mT
        return y if bias is None else y + bias

    def extra_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}")

    @classmethod
    def from_linear(cls, layer: nn.Linear, in_shape: Sequence[int], rank: int, *,
                    n_iter: int = 200, seed: int | None = 0) -> CPLinear:
        """The rank-``rank`` CP form of ``layer``'s weight by ALS
        (:func:`~lamods.decomp.tensor.cp_als`), in float64, cast back; the bias copied."""
        in_shape = _in_shape("CPLinear", in_shape)
        _check_linear("CPLinear", layer, in_shape)
        w = layer.weight.detach()
        new = cls(in_shape, layer.out_features, rank, layer.bias is not None,
                  device=w.device, dtype=w.dtype)
        with torch.no_grad():
            weights, factors, _, _ = cp_als(w.double().reshape(layer.out_features, *in_shape),
                                            rank, n_iter=n_iter, tol=1e-9, seed=seed)
            new.weights.copy_(weights)
            for p, U in zip((new.factor0, new.factor1, new.factor2), factors):
                p.copy_(U)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new
