"""OmegaConf resolvers used by the YAML files in ``configs/``.

Registered once, when :mod:`experiments` is imported (before any config is composed).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

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
    values = list(hidden) if isinstance(hidden, (list, tuple, ListConfig)) else [hidden]
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in values):
        raise ValueError(f"mlp_sizes: expected the hidden width(s) (model.hidden, ...) to be a "
                         f"positive int or a list of them, got {hidden!r}")
    return [int(in_features), *values, int(out_features)]


#: this process's run id: the process id and 4 random hex digits, drawn once
_RUN_ID = f"{os.getpid()}-{secrets.token_hex(2)}"


def run_id() -> str:
    """A suffix that no other process shares: two runs started in the same second get two
    run directories (``outputs/DATE/HH-MM-SS_RUNID``). The same value for the whole process."""
    return _RUN_ID


def run_dir(ckpt_path: str | None, default: str) -> str:
    """The run directory: the one ``ckpt_path`` was saved in when it is a run's checkpoint
    (``<run dir>/checkpoints/*.ckpt``), so a resumed run keeps its directory; else ``default``.

    Examples::

        >>> run_dir("outputs/2024-01-01/10-00-00_1-ab/checkpoints/last.ckpt", "outputs/new")
        'outputs/2024-01-01/10-00-00_1-ab'
        >>> run_dir(None, "outputs/new"), run_dir("elsewhere/model.ckpt", "outputs/new")
        ('outputs/new', 'outputs/new')
    """
    if ckpt_path:
        path = Path(str(ckpt_path))
        if path.parent.name == "checkpoints":
            return str(path.parent.parent)
    return default


def register_resolvers() -> None:
    """Register every resolver above with OmegaConf (idempotent)."""
    for name, fn in (("mlp_sizes", mlp_sizes), ("run_id", run_id), ("run_dir", run_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
