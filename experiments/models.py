"""Plain-torch networks that lamods modules are compared against in experiments."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

#: hidden activations by name, the same names ``lamods.ManualMLP`` takes
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def sequential_mlp(
    sizes: Sequence[int], activation: str = "relu", bias: bool = True
) -> nn.Sequential:
    """``nn.Sequential(nn.Linear, act, ..., nn.Linear)`` with widths ``sizes`` (logits out).

    Layers are created in the same order as ``lamods.ManualMLP(sizes)`` creates its
    parameters, so under the same torch seed both start from identical weights.

    Examples::

        >>> sequential_mlp([64, 32, 10], "tanh")
        Sequential(
          (0): Linear(in_features=64, out_features=32, bias=True)
          (1): Tanh()
          (2): Linear(in_features=32, out_features=10, bias=True)
        )
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sequential_mlp: expected at least two sizes [in, ..., out], got {sizes}")
    if activation not in ACTIVATION_MODULES:
        raise ValueError(
            f"sequential_mlp: expected activation one of {', '.join(ACTIVATION_MODULES)}, "
            f"got {activation!r}"
        )
    modules: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(nn.Linear(n_in, n_out, bias=bias))
        if i < len(sizes) - 2 and activation != "identity":
            modules.append(ACTIVATION_MODULES[activation]())
    return nn.Sequential(*modules)
