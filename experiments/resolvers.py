"""OmegaConf resolvers used by the YAML files in ``configs/``.

Registered once, when :mod:`experiments` is imported (before any config is composed).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import ListConfig, OmegaConf


def mlp_sizes(in_features: int, hidden: int | Sequence[int], out_features: int) -> list[int]:
    """Layer widths ``[in, *hidden, out]`` for an MLP; ``hidden`` is one width or a list.

    Used as ``sizes: ${mlp_sizes:${data.in_features},${model.hidden},${data.num_classes}}``.

    Examples::

        >>> mlp_sizes(64, 128, 10)
        [64, 128, 10]
        >>> mlp_sizes(784, [256, 128], 10)
        [784, 256, 128, 10]
    """
    if isinstance(hidden, (list, tuple, ListConfig)):
        widths = [int(h) for h in hidden]
    else:
        widths = [int(hidden)]
    return [int(in_features), *widths, int(out_features)]


def register_resolvers() -> None:
    """Register every resolver above with OmegaConf (idempotent)."""
    if not OmegaConf.has_resolver("mlp_sizes"):
        OmegaConf.register_new_resolver("mlp_sizes", mlp_sizes)
