"""``nn.Module`` layers used inside networks."""

from lamods.layers.activations import ACTIVATIONS, Activation
from lamods.layers.manual import ManualLinear, ManualMLP, linear, mlp

__all__ = ["ACTIVATIONS", "Activation", "ManualLinear", "ManualMLP", "linear", "mlp"]
