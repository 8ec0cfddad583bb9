"""Activation functions with their derivatives written out, for hand-written backprop.

Each :class:`Activation` gives ``sigma(z)`` and ``sigma'(z)``. Where the derivative
can be read off the output ``a = sigma(z)`` alone (ReLU, leaky ReLU, tanh,
sigmoid, identity), the backward pass keeps only ``a`` and never stores ``z``;
GELU needs ``z``.

==============  ===============================  =======================================
name            sigma(z)                         sigma'(z)
==============  ===============================  =======================================
identity        z                                1
relu            max(z, 0)                        1[z > 0]  = 1[a > 0]
leaky_relu      z if z > 0 else s z   (s >= 0)   1 if z > 0 else s  (z > 0 iff a > 0)
tanh            tanh z                           1 - tanh^2 z       = 1 - a^2
sigmoid         1 / (1 + e^-z)                   sigma(z)(1 - sigma(z)) = a (1 - a)
gelu            z Phi(z)                         Phi(z) + z phi(z)
==============  ===============================  =======================================

``Phi`` and ``phi`` are the standard normal CDF and density (exact GELU, as
``torch.nn.GELU(approximate="none")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid", "gelu")

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation and its derivative.

    Attributes:
        name: one of :data:`ACTIVATIONS`.
        negative_slope: slope ``s`` for ``z <= 0`` (leaky_relu only), ``s >= 0``.
        needs_input: True when ``sigma'`` needs the pre-activation ``z``, False
            when it can be computed from the output ``a`` alone.
    """

    name: str
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(
                f"Activation: expected one of {', '.join(ACTIVATIONS)}, got {self.name!r}"
            )
        if self.name == "leaky_relu" and not (self.negative_slope >= 0):
            raise ValueError(
                "Activation: expected negative_slope >= 0 for leaky_relu (the derivative is "
                f"read off the output's sign), got {self.negative_slope}"
            )

    @property
    def needs_input(self) -> bool:
        return self.name == "gelu"

    def __call__(self, z: Tensor) -> Tensor:
        """sigma(z), out of place."""
        name = self.name
        if name == "identity":
            return z
        if name == "relu":
            return torch.relu(z)
        if name == "leaky_relu":
            return F.leaky_relu(z, self.negative_slope)
        if name == "tanh":
            return torch.tanh(z)
        if name == "sigmoid":
            return torch.sigmoid(z)
        return F.gelu(z)

    def apply_(self, z: Tensor) -> Tensor:
        """sigma(z), in place on ``z`` where the activation allows it (no autograd)."""
        name = self.name
        if name == "identity":
            return z
        if name == "relu":
            return z.relu_()
        if name == "leaky_relu":
            return F.leaky_relu_(z, self.negative_slope)
        if name == "tanh":
            return z.tanh_()
        if name == "sigmoid":
            return z.sigmoid_()
        return F.gelu(z)

    def derivative(self, z: Tensor | None, a: Tensor) -> Tensor | None:
        """sigma'(z), from ``a = sigma(z)`` (or ``z`` for GELU); None means 1.

        Written in differentiable torch ops so the backward that uses it can be
        differentiated again.
        """
        name = self.name
        if name == "identity":
            return None
        if name == "relu":
            # 1[z > 0] = 1[a > 0]
            return (a > 0).to(a.dtype)
        if name == "leaky_relu":
            # 1 if z > 0 else s
            return torch.full_like(a, self.negative_slope).masked_fill_(a > 0, 1.0)
        if name == "tanh":
            # 1 - tanh^2 z = 1 - a^2
            return 1 - a * a
        if name == "sigmoid":
            # sigma (1 - sigma) = a (1 - a)
            return a * (1 - a)
        assert z is not None, "gelu's derivative needs the pre-activation z"
        # Phi(z) + z phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2, phi(z) = exp(-z^2/2) / sqrt(2 pi)
        cdf = 0.5 * (1 + torch.erf(z * _INV_SQRT2))
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return cdf + z * pdf

    def mul_derivative_(self, delta: Tensor, z: Tensor | None, a: Tensor) -> Tensor:
        """delta * sigma'(z), overwriting ``delta`` where it can (no autograd: the fast path)."""
        name = self.name
        if name == "identity":
            return delta
        if name == "relu":
            # delta * 1[a > 0], as one masking pass: threshold_backward(delta, a, 0) keeps
            # delta where a > 0 and writes 0 elsewhere. (A boolean mask with masked_fill_
            # or where is several times slower on CPU.)
            return torch.ops.aten.threshold_backward(delta, a, 0.0)
        return delta.mul_(self.derivative(z, a))

    def to_module(self) -> nn.Module:
        """The equivalent ``torch.nn`` module."""
        return {
            "identity": nn.Identity,
            "relu": nn.ReLU,
            "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid,
            "gelu": nn.GELU,
        }.get(self.name, lambda: nn.LeakyReLU(self.negative_slope))()

    @classmethod
    def from_module(cls, module: nn.Module) -> Activation:
        """The activation of an ``nn`` module: ReLU, LeakyReLU, Tanh, Sigmoid, GELU, Identity."""
        if isinstance(module, nn.Identity):
            return cls("identity")
        if isinstance(module, nn.ReLU):
            return cls("relu")
        if isinstance(module, nn.LeakyReLU):
            return cls("leaky_relu", module.negative_slope)
        if isinstance(module, nn.Tanh):
            return cls("tanh")
        if isinstance(module, nn.Sigmoid):
            return cls("sigmoid")
        if isinstance(module, nn.GELU) and module.approximate == "none":
            return cls("gelu")
        raise ValueError(
            "Activation: expected one of nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, "
            f"nn.GELU(approximate='none'), got {module!r}"
        )
