"""The one way a report trains more models: the same experiment again, a few keys changed.

A report that compares settings (PCA's ``k``, a projection's method and ``k``, a kernel's
number of features) trains the experiment once more per setting with
:func:`train_variant`: the run's own config with those keys replaced, in a sub-directory of
the run, through :func:`experiments.train.train` (so through the one
:func:`~experiments.train.make_trainer`), with no report, no ``last.ckpt`` and a quiet console
(no progress bar or model summary; one summary line per variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def variant_config(cfg: DictConfig, output_dir: str | Path, label: str,
                   overrides: dict[str, Any]) -> DictConfig:
    """``cfg`` with ``overrides`` (dotted keys -> values), named ``"<name> <label>"``, writing
    into ``output_dir``, without report, resume or ``last.ckpt``.

    Interpolations are kept, so values derived from a changed key follow it (``model.net``
    from ``model.hidden``, ...).
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(tree, dict)
    for key, value in overrides.items():
        _set(tree, key, value)
    tree["name"] = f"{cfg.name} {label}"
    tree["report"] = None
    tree["ckpt_path"] = None
    _set(tree, "paths.output_dir", str(output_dir))
    if isinstance(tree.get("callbacks"), dict):
        tree["callbacks"].pop("last_checkpoint", None)
    return OmegaConf.create(tree)


def train_variant(cfg: DictConfig, output_dir: str | Path, label: str,
                  **overrides: Any) -> dict[str, Any]:
    """Train and test the experiment with ``overrides`` in ``output_dir``; return its metrics.

    Keyword names are dotted config keys with ``__`` for the dots, or pass a dict:
    ``train_variant(cfg, out, "k=8", **{"model.n_components": 8})``.
    """
    from experiments.train import train

    keys = {key.replace("__", "."): value for key, value in overrides.items()}
    return train(variant_config(cfg, output_dir, label, keys), quiet=True)
