"""lamods: differentiable linear-algebra modules for PyTorch.

Public API::

    from lamods import ManualLinear, ManualMLP
    from lamods.layers import ...      # nn.Modules used inside networks
    from lamods import testing         # gradient-check helpers
"""

from lamods.layers import ManualLinear, ManualMLP

__version__ = "0.1.0"

__all__ = ["ManualLinear", "ManualMLP", "__version__"]
