r"""Classification: cross-entropy on logits, accuracy from torchmetrics.

Loss over a batch of logits :math:`z_n \in \mathbb R^C` and labels :math:`y_n`:
:math:`\ell = -\frac1N \sum_n \log \operatorname{softmax}(z_n)_{y_n}`;
accuracy :math:`\frac1N \sum_n 1[\arg\max_c z_{nc} = y_n]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from experiments.tasks.base import OptimizerFactory, SchedulerFactory, Task


class ClassificationTask(Task):
    """Train any ``net`` that maps ``(N, features)`` to logits ``(N, num_classes)``.

    Logs ``{stage}/loss`` and ``{stage}/acc`` for ``stage`` in ``train``, ``val``, ``test``
    (epoch means, synchronised across DDP processes). The best checkpoint has the
    highest ``val/acc``.

    Args:
        net: the classifier, or its config (see :class:`~experiments.tasks.base.Task`).
        optimizer: ``params -> Optimizer`` or its config (``_partial_: true``).
        scheduler: ``optimizer -> LRScheduler`` or its config, or ``None``.
        num_classes: number of classes ``C``.

    Examples::

        >>> import torch
        >>> task = ClassificationTask(nn.Linear(4, 3), torch.optim.SGD, num_classes=3)
        >>> task(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        *,
        num_classes: int,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if num_classes < 2:
            raise ValueError(f"ClassificationTask: expected num_classes >= 2, got {num_classes}")
        self.save_task_hyperparameters(num_classes=num_classes)
        self.num_classes = num_classes
        # one metric object per stage, so their states never mix ("train" is taken by
        # nn.Module.train, hence the suffix)
        self.acc = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro")
             for stage in ("train", "val", "test")}
        )

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        if logits.shape != (len(y), self.num_classes):
            raise ValueError(
                f"ClassificationTask: expected logits of shape ({len(y)}, {self.num_classes}), "
                f"got {tuple(logits.shape)}"
            )
        loss = F.cross_entropy(logits, y)
        acc = self.acc[f"{stage}_acc"]
        acc(logits.detach(), y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=on_step,
                 sync_dist=True, batch_size=len(y))
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(y))
        return loss
