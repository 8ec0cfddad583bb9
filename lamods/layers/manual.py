r"""Linear layers and multi-layer perceptrons with hand-written backpropagation.

The forward and backward passes here are written out as the textbooks write
them, inside ``torch.autograd.Function``\ s, instead of being derived by autograd.

Linear layer, :math:`y = x W^T + b`, with upstream gradient :math:`g = \partial L/\partial y`:

.. math::
    \frac{\partial L}{\partial x} = g W, \qquad
    \frac{\partial L}{\partial W} = g^T x, \qquad
    \frac{\partial L}{\partial b} = \textstyle\sum_n g_n

(sums over every leading batch dimension).

Multi-layer perceptron, :math:`z^{(l)} = a^{(l-1)} W^{(l)T} + b^{(l)}`,
:math:`a^{(l)} = \sigma(z^{(l)})`, :math:`a^{(0)} = x`, backpropagation:

.. math::
    \delta^{(L)} = \frac{\partial L}{\partial a^{(L)}} \odot \sigma'(z^{(L)}), \qquad
    \delta^{(l)} = (\delta^{(l+1)} W^{(l+1)}) \odot \sigma'(z^{(l)}),

.. math::
    \frac{\partial L}{\partial W^{(l)}} = \delta^{(l)T} a^{(l-1)}, \qquad
    \frac{\partial L}{\partial b^{(l)}} = \textstyle\sum_n \delta^{(l)}_n, \qquad
    \frac{\partial L}{\partial x} = \delta^{(1)} W^{(1)}.

Note [double backward]: ``_LinearFn.backward`` is made of differentiable ops,
so autograd differentiates it again (``gradgradcheck``). ``_MLPFn`` keeps only
the post-activations (and pre-activations for GELU), computed without a graph;
when a second derivative is asked for (``create_graph=True``), its backward
first recomputes the forward pass from the saved inputs under autograd and then
runs the same delta recursion out of place, so double backward is exact too.

Note [torch.func]: both Functions use the ``setup_context`` style with
``generate_vmap_rule = True``, so ``torch.func.grad``, ``vjp`` and ``vmap``
work. Forward-mode AD (``torch.func.jvp``, ``jacfwd``) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lamods._precision import autocast_dtype, cast_all
from lamods._validation import check_features, check_like, check_positive_int
from lamods.layers.activations import Activation

__all__ = ["ManualLinear", "ManualMLP", "linear", "mlp"]


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------
class _LinearFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # x: (*, in), weight: (out, in), bias: (out,) -> (*, out)
        x2 = x.reshape(-1, weight.shape[1])
        # y = x W^T + b
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        out_features, in_features = weight.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # dL/dx = g W
            grad_x = g @ weight
        g2 = g.reshape(-1, out_features)
        if ctx.needs_input_grad[1]:
            # dL/dW = g^T x, summed over every leading batch dimension
            grad_w = g2.t() @ x.reshape(-1, in_features)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # dL/db = sum_n g_n
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Functional form of :class:`ManualLinear`: ``y = x W^T + b`` with the hand-written backward.

    Args:
        x: input of shape ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.
    """
    dtype = autocast_dtype(x)
    if dtype is None:
        return _LinearFn.apply(x, weight, bias)
    x, weight, bias = cast_all(dtype, x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _LinearFn.apply(x, weight, bias)


class ManualLinear(nn.Module):
    r"""Affine layer :math:`y = x W^T + b` whose backward pass is written by hand.

    A drop-in for :class:`torch.nn.Linear` (same parameters, same initialisation
    for the same seed, same ``state_dict`` keys). The backward computes
    :math:`\partial L/\partial x = g W`, :math:`\partial L/\partial W = g^T x`,
    :math:`\partial L/\partial b = \sum g` itself, in differentiable ops, so
    double backward works.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: if False, the layer learns no additive bias.

    Shape:
        - Input: :math:`(*, H_{in})`, any number of leading dimensions.
        - Output: :math:`(*, H_{out})`.

    Attributes:
        weight: :math:`(H_{out}, H_{in})`, initialised from
            :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H_{in}`.
        bias: :math:`(H_{out})`, same distribution.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> layer = ManualLinear(20, 30)
        >>> layer(torch.randn(128, 20)).shape
        torch.Size([128, 30])
        >>> ref = layer.to_linear()
        >>> x = torch.randn(4, 20)
        >>> torch.allclose(layer(x), ref(x))
        True
    """

    __constants__ = ["in_features", "out_features"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_positive_int("ManualLinear", "in_features", in_features)
        self.out_features = check_positive_int("ManualLinear", "out_features", out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise exactly as ``nn.Linear`` does (same draws for the same seed)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        check_features("ManualLinear", x, self.in_features)
        check_like("ManualLinear", x, self.weight)
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> ManualLinear:
        """A ManualLinear holding copies of ``layer``'s weight and bias (exactly equal)."""
        if not isinstance(layer, nn.Linear):
            raise TypeError(
                f"ManualLinear.from_linear: expected nn.Linear, got {type(layer).__name__}"
            )
        w = layer.weight
        new = cls(layer.in_features, layer.out_features, layer.bias is not None,
                  device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding copies of this layer's weight and bias (exactly equal)."""
        w = self.weight
        new = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new


# ---------------------------------------------------------------------------
# Multi-layer perceptron
# ---------------------------------------------------------------------------
def _mlp_forward(
    x2: Tensor,
    params: Sequence[Tensor | None],
    hidden: Activation,
    output: Activation,
    inplace: bool,
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Run the layers on ``x2`` (2-D); return post-activations a^(0..L) and the z^(l) kept.

    z^(l) is kept only where sigma' needs it (GELU). With ``inplace`` the
    activation overwrites z^(l) (no graph is recorded: the fast path).
    """
    n_layers = len(params) // 2
    acts: list[Tensor] = [x2]
    zs: list[Tensor | None] = []
    a = x2
    for i in range(n_layers):
        weight, bias = params[2 * i], params[2 * i + 1]
        act = hidden if i < n_layers - 1 else output
        # z^(l) = a^(l-1) W^(l)T + b^(l)
        z = torch.addmm(bias, a, weight.t()) if bias is not None else a @ weight.t()
        zs.append(z if act.needs_input else None)
        # a^(l) = sigma(z^(l))
        a = act.apply_(z) if inplace and not act.needs_input else act(z)
        acts.append(a)
    return acts, zs


def _mlp_backward(
    g2: Tensor,
    params: Sequence[Tensor | None],
    acts: Sequence[Tensor],
    zs: Sequence[Tensor | None],
    hidden: Activation,
    output: Activation,
    needs: Sequence[bool],
    inplace: bool,
) -> tuple[Tensor | None, list[Tensor | None]]:
    """The delta recursion. ``needs[0]`` is for x, ``needs[1 + k]`` for ``params[k]``."""
    n_layers = len(params) // 2

    def times_derivative(delta: Tensor, act: Activation, l: int, owned: bool) -> Tensor:
        # delta * sigma'(z^(l)); in place only on a tensor this function allocated
        if inplace and owned:
            return act.mul_derivative_(delta, zs[l], acts[l + 1])
        d = act.derivative(zs[l], acts[l + 1])
        return delta if d is None else delta * d

    grads: list[Tensor | None] = [None] * len(params)
    # delta^(L) = dL/da^(L) * sigma'(z^(L))   (g2 is not ours: never modified in place)
    delta = times_derivative(g2, output, n_layers - 1, owned=False)
    grad_x = None
    for i in reversed(range(n_layers)):
        weight, bias = params[2 * i], params[2 * i + 1]
        if needs[1 + 2 * i]:
            # dL/dW^(l) = delta^(l)T a^(l-1)
            grads[2 * i] = delta.t() @ acts[i]
        if bias is not None and needs[2 + 2 * i]:
            # dL/db^(l) = sum_n delta^(l)_n
            grads[2 * i + 1] = delta.sum(0)
        if i > 0:
            # delta^(l-1) = (delta^(l) W^(l)) * sigma'(z^(l-1))
            delta = times_derivative(delta @ weight, hidden, i - 1, owned=True)
        elif needs[0]:
            # dL/dx = delta^(1) W^(1)
            grad_x = delta @ weight
    return grad_x, grads


class _MLPFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(hidden: Activation, output: Activation, x: Tensor, *params: Tensor | None):
        x2 = x.reshape(-1, x.shape[-1])
        acts, zs = _mlp_forward(x2, params, hidden, output, inplace=True)
        y = acts[-1].reshape(*x.shape[:-1], acts[-1].shape[-1])
        # the hidden activations leave as extra outputs so setup_context can save them
        kept = [a for a in acts[1:-1]] + [z for z in zs if z is not None]
        return (y, *kept)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, outputs: tuple) -> None:
        hidden, output, x, *params = inputs
        y, *kept = outputs
        ctx.mark_non_differentiable(*kept)
        ctx.set_materialize_grads(False)
        ctx.hidden, ctx.output = hidden, output
        ctx.n_params = len(params)
        ctx.bias_mask = [p is not None for p in params]
        ctx.save_for_backward(x, y, *[p for p in params if p is not None], *kept)

    @staticmethod
    def backward(ctx: Any, g: Tensor | None, *_unused: Any) -> tuple[Tensor | None, ...]:
        hidden, output = ctx.hidden, ctx.output
        saved = list(ctx.saved_tensors)
        x, y = saved[0], saved[1]
        it = iter(saved[2:])
        params: list[Tensor | None] = [next(it) if m else None for m in ctx.bias_mask]
        kept = list(it)
        n_layers = ctx.n_params // 2
        needs = ctx.needs_input_grad[2:]
        if g is None:
            return (None, None) + (None,) * (1 + ctx.n_params)
        g2 = g.reshape(-1, g.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        if torch.is_grad_enabled():
            # Note [double backward]: recompute under autograd, then differentiate out of place.
            acts, zs = _mlp_forward(x2, params, hidden, output, inplace=False)
            inplace = False
        else:
            hidden_acts, zs_kept = kept[: n_layers - 1], iter(kept[n_layers - 1:])
            acts = [x2, *hidden_acts, y.reshape(-1, y.shape[-1])]
            acts_fn = [hidden] * (n_layers - 1) + [output]
            zs = [next(zs_kept) if act.needs_input else None for act in acts_fn]
            inplace = True
        grad_x, grads = _mlp_backward(g2, params, acts, zs, hidden, output, needs, inplace)
        if grad_x is not None:
            grad_x = grad_x.reshape(x.shape)
        return (None, None, grad_x, *grads)


def mlp(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    activation: str | Activation = "relu",
    output_activation: str | Activation = "identity",
) -> Tensor:
    """Functional form of :class:`ManualMLP` with its hand-written backpropagation.

    Args:
        x: ``(*, weights[0].shape[1])``.
        weights: ``W^(l)`` of shape ``(n_l, n_{l-1})`` for l = 1..L.
        biases: ``b^(l)`` of shape ``(n_l,)`` or None, one per weight.
        activation: hidden activation sigma (a name from
            :data:`lamods.layers.activations.ACTIVATIONS` or an :class:`Activation`).
        output_activation: activation of the last layer (``"identity"`` for logits).
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError(
            f"mlp: expected as many biases as weights (at least one), got {len(weights)} "
            f"weights and {len(biases)} biases"
        )
    hidden = activation if isinstance(activation, Activation) else Activation(activation)
    output = (output_activation if isinstance(output_activation, Activation)
              else Activation(output_activation))
    params: list[Tensor | None] = [t for pair in zip(weights, biases) for t in pair]
    dtype = autocast_dtype(x)
    if dtype is None:
        return _MLPFn.apply(hidden, output, x, *params)[0]
    x, *params = cast_all(dtype, x, *params)
    with torch.autocast(x.device.type, enabled=False):
        return _MLPFn.apply(hidden, output, x, *params)[0]


class ManualMLP(nn.Module):
    r"""Multi-layer perceptron whose whole backward pass is one hand-written backpropagation.

    :math:`a^{(0)} = x`, :math:`a^{(l)} = \sigma(a^{(l-1)} W^{(l)T} + b^{(l)})`, the last layer
    with ``output_activation`` (identity by default, giving logits). The backward
    runs the delta recursion of the module docstring in one ``autograd.Function``:
    it keeps only the post-activations (and GELU's pre-activations), applies the
    activation in place over the pre-activation, and skips the input gradient
    when the input does not require one. Outputs and gradients equal those of
    ``nn.Sequential(nn.Linear, act, ..., nn.Linear)`` with the same weights.

    Args:
        sizes: layer widths ``[n_0, n_1, ..., n_L]``, at least two.
        activation: hidden activation, one of ``identity``, ``relu``,
            ``leaky_relu``, ``tanh``, ``sigmoid``, ``gelu``.
        output_activation: activation after the last layer (default ``identity``).
        bias: whether every layer has a bias.
        negative_slope: slope for ``leaky_relu`` (>= 0).

    Shape:
        - Input: :math:`(*, n_0)`.
        - Output: :math:`(*, n_L)`.

    Attributes:
        layers: ``nn.ModuleList`` of :class:`ManualLinear`, whose parameters the
            fused backward uses (``state_dict`` keys ``layers.{l}.weight``/``bias``).

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> net = ManualMLP([64, 32, 10], activation="tanh")
        >>> logits = net(torch.randn(8, 64))
        >>> logits.shape
        torch.Size([8, 10])
        >>> seq = net.to_sequential()
        >>> x = torch.randn(5, 64)
        >>> torch.allclose(net(x), seq(x), atol=1e-6)
        True
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        output_activation: str = "identity",
        bias: bool = True,
        negative_slope: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"ManualMLP: expected at least two sizes [in, ..., out], got {sizes}"
            )
        for s in sizes:
            check_positive_int("ManualMLP", "every size", s)
        self.sizes = sizes
        self.activation = Activation(activation, negative_slope)
        self.output_activation = Activation(output_activation, negative_slope)
        self.layers = nn.ModuleList(
            ManualLinear(n_in, n_out, bias, device=device, dtype=dtype)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    @property
    def out_features(self) -> int:
        return self.sizes[-1]

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_features("ManualMLP", x, self.in_features)
        check_like("ManualMLP", x, self.layers[0].weight)
        return mlp(
            x,
            [layer.weight for layer in self.layers],
            [layer.bias for layer in self.layers],
            self.activation,
            self.output_activation,
        )

    def extra_repr(self) -> str:
        act = self.activation.name
        if act == "leaky_relu":
            act += f"({self.activation.negative_slope})"
        return (f"sizes={self.sizes}, activation={act}, "
                f"output_activation={self.output_activation.name}")

    def to_sequential(self) -> nn.Sequential:
        """The equivalent ``nn.Sequential(Linear, act, ..., Linear[, out_act])``, weights copied."""
        modules: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            modules.append(layer.to_linear())
            act = self.activation if i < len(self.layers) - 1 else self.output_activation
            if act.name != "identity":
                modules.append(act.to_module())
        return nn.Sequential(*modules)

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> ManualMLP:
        """Convert ``nn.Sequential(nn.Linear, act, ..., nn.Linear[, out_act])``, weights copied.

        Every hidden activation must be the same; all Linears must agree on bias.
        """
        linears: list[nn.Linear] = []
        acts: list[Activation] = []   # the activation after each Linear
        for m in seq:
            if isinstance(m, nn.Linear):
                if len(acts) < len(linears):
                    acts.append(Activation("identity"))
                linears.append(m)
            else:
                a = Activation.from_module(m)
                if len(acts) == len(linears):
                    raise ValueError(
                        "ManualMLP.from_sequential: expected an nn.Linear before each "
                        f"activation, got {m!r} at position {len(acts) + len(linears)}"
                    )
                acts.append(a)
        if not linears:
            raise ValueError("ManualMLP.from_sequential: expected at least one nn.Linear, got none")
        if len(acts) < len(linears):
            acts.append(Activation("identity"))
        hidden = set(acts[:-1]) or {Activation("relu")}
        if len(hidden) != 1:
            raise ValueError(
                "ManualMLP.from_sequential: expected the same activation after every hidden "
                f"Linear, got {[a.name for a in acts[:-1]]}"
            )
        biases = {lin.bias is not None for lin in linears}
        if len(biases) != 1:
            raise ValueError(
                "ManualMLP.from_sequential: expected all Linears with or all without bias"
            )
        for prev, nxt in zip(linears[:-1], linears[1:]):
            if prev.out_features != nxt.in_features:
                raise ValueError(
                    f"ManualMLP.from_sequential: layer widths do not chain: {prev} then {nxt}"
                )
        (h,) = hidden
        out = acts[-1]
        w = linears[0].weight
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        slope = h.negative_slope if h.name == "leaky_relu" else out.negative_slope
        if h.name == "leaky_relu" and out.name == "leaky_relu" and h != out:
            raise ValueError(
                "ManualMLP.from_sequential: expected one negative_slope for leaky_relu"
            )
        new = cls(sizes, h.name, out.name, biases.pop(), slope, device=w.device, dtype=w.dtype)
        for mine, theirs in zip(new.layers, linears):
            with torch.no_grad():
                mine.weight.copy_(theirs.weight)
                if theirs.bias is not None:
                    mine.bias.copy_(theirs.bias)
        return new
