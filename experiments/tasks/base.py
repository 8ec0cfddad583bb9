"""What every task shares: a network from the config, optimizer and scheduler from the config,
one ``step`` per batch that each subclass writes, and logging under ``{stage}/{name}``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class Task(pl.LightningModule):
    """A LightningModule around any ``net``; subclasses define the loss and metrics.

    A subclass implements :meth:`step` (loss of one batch, metrics updated and logged) and
    sets :attr:`monitor` / :attr:`monitor_mode`, the validation metric that picks the best
    checkpoint. Everything else (optimizers, the train/val/test loops, the parameter
    count) lives here, so a new task is one small file.

    Args:
        net: the model (a ``lamods`` module or any ``nn.Module``).
        optimizer: ``params -> Optimizer``, e.g. a config with ``_partial_: true``.
        scheduler: ``optimizer -> LRScheduler`` or ``None``; stepped once per epoch.
    """

    #: the logged validation metric that selects the best checkpoint
    monitor: str = "val/loss"
    #: ``"min"`` or ``"max"``: which direction of :attr:`monitor` is better
    monitor_mode: str = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"{type(self).__name__}: expected net to be an nn.Module, got "
                            f"{type(net).__name__}")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

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
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor},
        }
