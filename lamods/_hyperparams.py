r"""Positive hyperparameters stored as logarithms, kept exact across dtypes.

A positive hyperparameter :math:`\theta` (a lengthscale, a ridge :math:`\alpha`) is
stored as :math:`\log\theta`: a parameter when learnable and a buffer otherwise,
so :math:`\theta = \exp(\log\theta)` stays positive under any gradient step.

Note [exact hyperparameters]: the Python float the user gave is remembered. When
a fit moves the module to the data's dtype (:meth:`lamods.base.Estimator._adopt`),
an untouched hyperparameter is rebuilt from that float in the new dtype, rather
than cast from its rounded float32 value, so a float64 fit uses exactly
:math:`\log\theta` in float64 (as scikit-learn would). A trained value is cast.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lamods._validation import check_positive


def register_log_positive(module: nn.Module, arg: str, value: float, learnable: bool,
                          name: str, **factory: Any) -> None:
    """Store ``log(value)`` as ``module.log_<arg>`` (an ``nn.Parameter`` if learnable)."""
    check_positive(name, arg, value)
    raw = torch.tensor(math.log(value), **factory)
    if learnable:
        module.register_parameter(f"log_{arg}", nn.Parameter(raw))
    else:
        module.register_buffer(f"log_{arg}", raw)
    inits = module.__dict__.setdefault("_log_inits", {})
    inits[arg] = float(value)


def retype_hyperparameters(root: nn.Module, dtype: torch.dtype,
                           device: torch.device | str | None = None) -> None:
    """Note [exact hyperparameters]: rebuild untouched ``log_<arg>`` tensors in ``dtype``
    (on ``device``; None keeps each tensor's)."""
    for module in root.modules():
        for arg, value in module.__dict__.get("_log_inits", {}).items():
            t: Tensor = getattr(module, f"log_{arg}")
            if t.dtype == dtype:
                continue
            untouched = bool(t.detach().cpu() == torch.tensor(math.log(value), dtype=t.dtype))
            if not untouched:
                continue  # a trained value: the module's .to() casts it
            new = torch.tensor(math.log(value), dtype=dtype,
                               device=t.device if device is None else device)
            if isinstance(t, nn.Parameter):
                t.data = new
            else:
                module._buffers[f"log_{arg}"] = new
