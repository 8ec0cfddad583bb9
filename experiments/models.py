"""The experiments' networks: plain-torch references, a head on kernel features, a small CNN.

``configs/model/*.yaml`` build them by ``_target_`` (a saved task rebuilds them from its
checkpoint the same way, :data:`experiments.tasks.base.SAFE_TARGETS`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from experiments.resolvers import mlp_sizes
from lamods.layers import ManualConv2d, NystromFeatures, RandomFourierFeatures

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


#: feature maps of :func:`kernel_classifier_net`
METHODS = ("rff", "nystrom", "deep", "linear")


def kernel_classifier_net(
    method: str, in_features: int, n_features: int, num_classes: int, *,
    lengthscale: float = 1.0, hidden: int | Sequence[int] = (), activation: str = "relu",
    deep_sizes: Sequence[int] = (), deep_lengthscale: float = 1.0, seed: int | None = None,
) -> nn.Sequential:
    """``nn.Sequential(features, head)`` for ``model=kernel_classifier`` (``method`` in
    :data:`METHODS`; the head is :func:`~experiments.models.sequential_mlp`).

    Examples::

        >>> import torch
        >>> net = kernel_classifier_net("rff", 64, 128, 10, seed=0)
        >>> net(torch.rand(2, 64)).shape
        torch.Size([2, 10])
        >>> kernel_classifier_net("linear", 64, 128, 10)[1][0].in_features
        64
    """
    if method == "rff":
        features: nn.Module = RandomFourierFeatures(in_features, n_features, lengthscale,
                                                    seed=seed)
    elif method == "nystrom":
        features = NystromFeatures(in_features, n_features, "rbf", lengthscale=lengthscale,
                                   seed=seed)
    elif method == "deep":
        sizes = list(deep_sizes)
        if not sizes or sizes[0] != in_features:
            raise ValueError(f"kernel_classifier_net: expected deep_sizes starting at "
                             f"in_features={in_features}, got {sizes}")
        features = nn.Sequential(
            sequential_mlp(sizes, activation),
            RandomFourierFeatures(sizes[-1], n_features, deep_lengthscale,
                                  learnable_lengthscale=True, seed=seed))
    elif method == "linear":
        features = nn.Identity()
    else:
        raise ValueError(f"kernel_classifier_net: expected method in {METHODS}, got {method!r}")
    width = in_features if method == "linear" else n_features
    head = sequential_mlp(mlp_sizes(width, list(hidden) if not isinstance(hidden, int)
                                    else hidden, num_classes), activation)
    return nn.Sequential(features, head)


#: the convolution layers :func:`small_cnn` builds with
CONVS: dict[str, type[nn.Module]] = {"manual": ManualConv2d, "torch": nn.Conv2d}


def small_cnn(
    conv: str, in_features: int, image_shape: Sequence[int], channels: Sequence[int],
    num_classes: int, kernel_size: int = 3, activation: str = "relu",
) -> nn.Sequential:
    """A small CNN on flat images: unflatten to ``image_shape`` ``(C, H, W)``, then per width in
    ``channels`` a ``kernel_size`` convolution (padding ``k // 2``; stride 1 for the first,
    2 after) and the activation, then flatten and one linear layer to the logits.

    ``conv="manual"`` builds the convolutions as :class:`lamods.ManualConv2d` (im2col + one
    matmul, hand-written backward), ``"torch"`` as ``nn.Conv2d``; both draw their weights in
    the same order, so under the same seed the two networks start identical.

    Examples::

        >>> import torch
        >>> net = small_cnn("manual", 64, [1, 8, 8], [4, 8], 10)
        >>> net(torch.rand(2, 64)).shape
        torch.Size([2, 10])
        >>> _ = torch.manual_seed(0); a = small_cnn("manual", 64, [1, 8, 8], [4], 10)
        >>> _ = torch.manual_seed(0); b = small_cnn("torch", 64, [1, 8, 8], [4], 10)
        >>> x = torch.rand(3, 64)
        >>> torch.allclose(a(x), b(x), atol=1e-6)
        True
    """
    if conv not in CONVS:
        raise ValueError(f"small_cnn: expected conv in {tuple(CONVS)}, got {conv!r}")
    shape = [int(v) for v in image_shape]
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] != in_features:
        raise ValueError(f"small_cnn: expected image_shape (C, H, W) with C*H*W = in_features "
                         f"= {in_features}, got {list(image_shape)}")
    if not channels:
        raise ValueError("small_cnn: expected at least one width in channels, got []")
    if activation not in ACTIVATION_MODULES:
        raise ValueError(f"small_cnn: expected activation one of "
                         f"{', '.join(ACTIVATION_MODULES)}, got {activation!r}")
    layers: list[nn.Module] = [nn.Unflatten(-1, tuple(shape))]
    c, h, w = shape
    for i, width in enumerate(channels):
        stride = 1 if i == 0 else 2
        layers += [CONVS[conv](c, int(width), kernel_size, stride=stride,
                               padding=kernel_size // 2),
                   ACTIVATION_MODULES[activation]()]
        c = int(width)
        h = (h + 2 * (kernel_size // 2) - kernel_size) // stride + 1
        w = (w + 2 * (kernel_size // 2) - kernel_size) // stride + 1
    layers += [nn.Flatten(-3), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)
