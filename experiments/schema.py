"""Typed configs: a structured-config schema (a dataclass) for every option of the trainer,
data, optimizer and model groups, and the checks :func:`validate` makes before training.

Each option's YAML starts from its schema (``defaults: [/schema/GROUP/NAME@_here_, _self_]``),
registered here in Hydra's ConfigStore when :mod:`experiments` is imported. Composing the
config then fails, before anything is built, on

- a wrong type: ``trainer.max_epochs=ten`` -> ``Value 'ten' of type 'str' could not be
  converted to Integer, full_key: trainer.max_epochs``;
- an unknown key, added or misspelt: ``+model.hiden=64`` -> ``Key 'hiden' not in
  'ManualMLPModel', full_key: model.hiden``.

:func:`validate` then resolves every interpolation (a value that only a resolver can check,
like ``model.hidden=abc``, fails there with the key named), checks the top-level keys and
that ``trainer=gpu`` has a CUDA device. Errors are :class:`ConfigError`; the entry points
print them as one message, without a traceback.

A new option: its dataclass here (subclassing its group's base), one ``_store`` line below,
and ``- /schema/GROUP/NAME@_here_`` first in its YAML's defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config that cannot run: the message names the key, what was expected and the value."""


# --------------------------------------------------------------------------- trainer
@dataclass
class TrainerConf:
    """``pytorch_lightning.Trainer`` arguments (Lightning's defaults where the YAML is silent)."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int = 30
    min_epochs: int | None = None
    max_steps: int = -1
    deterministic: Any = None
    benchmark: bool | None = None
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    default_root_dir: str | None = None
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    detect_anomaly: bool = False


# --------------------------------------------------------------------------- data
@dataclass
class DataConf:
    """What every data module takes (:class:`experiments.data.base.SplitDataModule`)."""

    _target_: str = MISSING
    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False
    seed: int = 0


@dataclass
class ArrayDataConf(DataConf):
    in_features: int = MISSING
    num_classes: int = MISSING


@dataclass
class DigitsData(ArrayDataConf):
    val_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class DiabetesData(DigitsData):
    pass


@dataclass
class SyntheticData(DigitsData):
    n_samples: int = 1000
    separation: float = 3.0
    noise: float = 1.0


@dataclass
class MNISTData(ArrayDataConf):
    root: str = "~/.cache/lamods/data"
    download: bool = True
    limit_train: int | None = None
    val_fraction: float = 0.1


@dataclass
class MovieLensData(DataConf):
    root: str = "~/.cache/lamods/data"
    download: bool = True
    verify: bool = True
    variant: str = "100k"
    split: str = "random"
    val_fraction: float = 0.05
    test_fraction: float = 0.2
    n_folds: int = 5
    fold: int = 0


# --------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConf:
    """A ``torch.optim`` optimizer built with ``_partial_: true`` (the task gives the params)."""

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class SGDOptimizer(OptimizerConf):
    momentum: float = 0.0
    nesterov: bool = False


# --------------------------------------------------------------------------- model
@dataclass
class ModelConf:
    """A model option: its own keys (``hidden``, ...) and ``net``, the network's config."""

    net: Any = MISSING


@dataclass
class MLPModel(ModelConf):
    # one width or a list of widths (checked by the ${mlp_sizes:...} resolver)
    hidden: Any = 128
    activation: str = "relu"


@dataclass
class ManualMLPModel(MLPModel):
    pass


@dataclass
class TorchMLPModel(MLPModel):
    pass


@dataclass
class ZCAMLPModel(MLPModel):
    eps: float = 1e-2
    momentum: float = 0.1


@dataclass
class PCAClassifierModel(MLPModel):
    n_components: int = 32
    solver: str = "auto"
    whiten: bool = False


@dataclass
class RandprojClassifierModel(MLPModel):
    method: str = "gaussian"
    out_features: int = 32
    methods: dict[str, str] = field(default_factory=dict)


@dataclass
class KernelClassifierModel(MLPModel):
    method: str = "rff"
    n_features: int = 256
    lengthscale: float = 3.0
    deep_hidden: Any = 128
    deep_width: int = 32
    deep_lengthscale: float = 1.0


@dataclass
class CNNModel(ModelConf):
    # experiments.models.small_cnn: image_shape (C, H, W) of the flat input, conv widths
    image_shape: Any = field(default_factory=lambda: [1, 8, 8])
    channels: Any = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    activation: str = "relu"


@dataclass
class MFModel(ModelConf):
    n_factors: int = 50


SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {"trainer": TrainerConf},
    "data": {"digits": DigitsData, "diabetes": DiabetesData, "synthetic": SyntheticData,
             "mnist": MNISTData, "movielens": MovieLensData},
    "optimizer": {"optimizer": OptimizerConf, "sgd": SGDOptimizer},
    "model": {"manual_mlp": ManualMLPModel, "torch_mlp": TorchMLPModel, "zca_mlp": ZCAMLPModel,
              "pca_classifier": PCAClassifierModel, "randproj_classifier": RandprojClassifierModel,
              "kernel_classifier": KernelClassifierModel, "mf": MFModel,
              "manual_cnn": CNNModel, "torch_cnn": CNNModel},
}


def register_schemas() -> None:
    """Store every schema as ``schema/GROUP/NAME`` in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


# --------------------------------------------------------------------------- startup checks
#: top-level keys and the types they must have
TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "name": (str,), "seed": (int,), "test": (bool,), "plots": (bool,),
    "torch_threads": (int, type(None)), "ckpt_path": (str, type(None)),
    "fit_modules": (str,),
}
#: top-level keys with a fixed set of values
TOP_LEVEL_CHOICES: dict[str, tuple[str, ...]] = {"fit_modules": ("memory", "stream")}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def validate(cfg: DictConfig) -> None:
    """Check ``cfg`` before anything is built; raise :class:`ConfigError` naming the key.

    Resolves every interpolation (resolver errors name the key that failed), checks the
    top-level keys' types, and that a CUDA accelerator has a CUDA device.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"config error at {key or '?'}: {err.msg if hasattr(err, 'msg') else err}"
                          ) from None
    assert isinstance(resolved, dict)
    for group in SCHEMAS:
        node = cfg.get(group)
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is None or not dataclasses.is_dataclass(schema):
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        unknown = [key for key in node if key not in known]
        if unknown:
            raise ConfigError(
                f"config error at {group}.{unknown[0]}: unknown key for this {group} "
                f"({schema.__name__}); expected one of {', '.join(sorted(known))}")
    for key, types in TOP_LEVEL.items():
        value = resolved.get(key)
        if key not in resolved:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(f"config error at {key}: expected {_type_name(types)}, got "
                              f"{value!r} ({type(value).__name__})")
    for key, choices in TOP_LEVEL_CHOICES.items():
        if key in resolved and resolved[key] not in choices:
            raise ConfigError(f"config error at {key}: expected one of "
                              f"{', '.join(map(repr, choices))}, got {resolved[key]!r}")
    check_accelerator(resolved.get("trainer") or {})


def check_accelerator(trainer: dict[str, Any]) -> None:
    """``trainer=gpu`` (accelerator gpu or cuda) needs a CUDA device: say to use ``trainer=cpu``."""
    accelerator = str(trainer.get("accelerator", "cpu")).lower()
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"config error at trainer.accelerator: expected a CUDA device for "
                f"accelerator={accelerator!r} (trainer=gpu), but torch.cuda.is_available() is "
                f"False on this machine (torch {torch.__version__}). Use trainer=cpu, or install "
                "a CUDA build of torch on a machine with an NVIDIA GPU.")
