"""``nn.Module`` layers used inside networks."""

from lamods.layers.activations import ACTIVATIONS, Activation
from lamods.layers.lowrank import LowRankAdapter, LowRankLinear, energy_rank, lowrank_linear
from lamods.layers.manual import ManualLinear, ManualMLP, linear, mlp
from lamods.layers.surgery import (
    AdapterReport,
    CompressionReport,
    LayerAdapter,
    LayerCompression,
    add_adapters,
    compress,
    merge_adapters,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AdapterReport",
    "CompressionReport",
    "LayerAdapter",
    "LayerCompression",
    "LowRankAdapter",
    "LowRankLinear",
    "ManualLinear",
    "ManualMLP",
    "add_adapters",
    "compress",
    "energy_rank",
    "linear",
    "lowrank_linear",
    "merge_adapters",
    "mlp",
]
