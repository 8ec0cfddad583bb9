"""What every task shares: a network from the config, optimizer and scheduler from the config,
one ``step`` per batch that each subclass writes, and logging under ``{stage}/{name}``.

A task built from configs (``net``, ``optimizer``, ``scheduler`` given as ``_target_``
mappings, as :func:`experiments.train.build` does) saves them as its hyperparameters, so
``Task.load_from_checkpoint(path)`` rebuilds it with nothing else: the network from its
config, then the checkpoint's weights (fitted buffers included). Checkpoints are loaded with
``torch.load(weights_only=True)``, and the ``_target_`` of a saved config must lie in
:data:`SAFE_TARGETS` (the experiments' networks, lamods, ``torch.nn``, ``torch.optim``): a
checkpoint is data, never code to run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
#: module prefixes a saved ``_target_`` may name (networks, optimizers, schedulers)
SAFE_TARGETS = ("lamods.", "experiments.models.", "torch.nn.", "torch.optim.")
#: checkpoint key naming the task class that saved it
TASK_CLASS_KEY = "task_class"


def _plain(config: Any) -> Any:
    """A config (``DictConfig`` or mapping) as plain, resolved Python containers."""
    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return {k: _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    return config


def check_targets(config: Any, where: str, allowed: tuple[str, ...] = SAFE_TARGETS) -> None:
    """Raise unless every ``_target_`` in ``config`` starts with one of ``allowed``.

    Examples::

        >>> check_targets({"_target_": "torch.nn.Linear", "in_features": 2}, "net")
        >>> check_targets({"_target_": "os.system", "_args_": ["ls"]}, "net")
        Traceback (most recent call last):
        ...
        ValueError: net: refusing _target_ 'os.system': a saved config may only name ...
    """
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not str(target).startswith(allowed):
            raise ValueError(f"{where}: refusing _target_ {str(target)!r}: a saved config may "
                             f"only name objects under {', '.join(allowed)}")
        for key, value in config.items():
            check_targets(value, f"{where}.{key}", allowed)
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_targets(value, f"{where}[{i}]", allowed)


def _build(config: Any, what: str) -> Any:
    check_targets(config, what)
    return instantiate(config)


class Task(pl.LightningModule):
    """A LightningModule around any ``net``; subclasses define the loss and metrics.

    A subclass implements :meth:`step` (loss of one batch, metrics updated and logged), sets
    :attr:`monitor` / :attr:`monitor_mode`, the validation metric that picks the best
    checkpoint, and calls :meth:`save_task_hyperparameters` with its own options. Everything
    else (optimizers, the train/val/test loops, the parameter count, reloading) lives here,
    so a new task is one small file.

    Args:
        net: the model (a ``lamods`` module or any ``nn.Module``), or its config (a mapping
            with ``_target_``), which is then instantiated here and saved in checkpoints.
        optimizer: ``params -> Optimizer``, or its config (``_partial_: true``).
        scheduler: ``optimizer -> LRScheduler`` or its config, or ``None``; stepped per epoch.
    """

    #: the logged validation metric that selects the best checkpoint
    monitor: str = "val/loss"
    #: ``"min"`` or ``"max"``: which direction of :attr:`monitor` is better
    monitor_mode: str = "min"

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.configs: dict[str, Any] = {}
        if isinstance(net, Mapping) or OmegaConf.is_config(net):
            self.configs["net"] = _plain(net)
            net = _build(self.configs["net"], f"{name}: net")
        if not isinstance(net, nn.Module):
            raise TypeError(f"{name}: expected net to be an nn.Module or its config, got "
                            f"{type(net).__name__}" + (
                                " (a checkpoint of a task built around a module, not a config, "
                                "needs load_from_checkpoint(path, net=...))" if net is None
                                else ""))
        for key, value in (("optimizer", optimizer), ("scheduler", scheduler)):
            if isinstance(value, Mapping) or OmegaConf.is_config(value):
                self.configs[key] = _plain(value)
        self.net = net
        self.optimizer_factory = (_build(self.configs["optimizer"], f"{name}: optimizer")
                                  if "optimizer" in self.configs else optimizer)
        self.scheduler_factory = (_build(self.configs["scheduler"], f"{name}: scheduler")
                                  if "scheduler" in self.configs else scheduler)

    def save_task_hyperparameters(self, **options: Any) -> None:
        """Save the configs given to :class:`Task` and the subclass's ``options`` as the
        hyperparameters (plain values only: checkpoints load with ``weights_only=True``)."""
        hparams = {key: self.configs.get(key) for key in ("net", "optimizer", "scheduler")}
        hparams.update(_plain(options))
        self.save_hyperparameters(hparams, logger=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @property
    def n_params(self) -> int:
        """Number of trainable parameters of ``net``."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def step(self, batch: Any, stage: str) -> Tensor:
        """Loss of one ``batch`` in ``stage`` (``train``, ``val`` or ``test``); logs metrics."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(f"{type(self).__name__}: no optimizer to train with (built for "
                               "evaluation only); pass optimizer=...")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TASK_CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = None, hparams_file: Any = None,
        strict: bool | None = None, weights_only: bool = True, **kwargs: Any,
    ) -> Task:
        """Rebuild a trained task from a checkpoint of :func:`experiments.train.train`.

        ``Task.load_from_checkpoint(path)`` builds the task class that saved the checkpoint
        (``ClassificationTask``, ``RatingTask``, ...); a subclass builds itself. The network,
        optimizer and scheduler come from the saved configs, the weights from the checkpoint,
        loaded with ``weights_only=True``; ``kwargs`` override saved hyperparameters.
        """
        if not weights_only:
            raise ValueError(f"{cls.__name__}.load_from_checkpoint: checkpoints are loaded with "
                             "weights_only=True only (a checkpoint must not run code)")
        target = cls
        if cls is Task:
            saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            target = task_class(saved.get(TASK_CLASS_KEY), checkpoint_path)
        return super(Task, target).load_from_checkpoint(
            checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict,
            weights_only=True, **kwargs)


def task_class(name: str | None, where: Any = "checkpoint") -> type[Task]:
    """The :class:`Task` subclass named ``module.QualName`` (only ``experiments.tasks``)."""
    if not name:
        raise ValueError(f"{where}: no {TASK_CLASS_KEY!r} in the checkpoint; call "
                         "load_from_checkpoint on the task class itself, e.g. "
                         "ClassificationTask.load_from_checkpoint(path)")
    module, _, qualname = str(name).rpartition(".")
    if not module.startswith("experiments.tasks"):
        raise ValueError(f"{where}: refusing task class {name!r}: expected one under "
                         "experiments.tasks")
    cls = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"{where}: {name!r} is not an experiments Task")
    return cls
