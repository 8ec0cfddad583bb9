r"""Fit-style modules in a network: fit them on the training split before training starts.

A *fit-style* module is a :class:`lamods.Estimator` (PCA, k-means, NMF, Nystrom, kernel
ridge, ...): it learns from data with ``fit(X) -> self`` (``fit(X, y)`` if it takes labels),
says so with ``is_fitted() -> bool``, and keeps what it learned in buffers, so ``state_dict``
and checkpoints carry it (see :mod:`lamods.base`). :func:`experiments.train.build` calls
:func:`fit_modules` right after instantiating the network, so the task, the trainer and the
optimizer only ever see a fitted model; a network without fit-style modules never touches
the data here.

Which modules get fitted, and on what:

- the network itself, if it is fit-style: on the training features;
- the steps of an ``nn.Sequential`` (``PCA -> head``, ``PCA -> Nystrom -> head``): each
  unfitted fit-style step on the output of the steps before it, in order.

Fitted buffers are not parameters, so the optimizer leaves them alone: ``PCA -> head``
trains the head on a frozen PCA. A fit-style module anywhere else is not guessed at: the
hook raises and names it (give the enclosing module a ``fit`` of its own).

Streamed fits (``fit_modules: stream`` in the config): :func:`stream_fit_modules` fits the
same steps with ``partial_fit`` over the batches of the training DataLoader, in every
trainer process (:class:`StreamedFit`, a callback that runs when the trainer sets up, after
torch.distributed is initialised). Under DDP every rank takes its contiguous share of every
batch (:func:`shard_batches`), and the estimators all-reduce their statistics (Note
[distributed statistics] in :mod:`lamods._distributed`), so ``trainer=ddp`` with N
processes fits the state one process fits from the same batches, to rounding; for
estimators whose statistics are plain sums (PCA, ridge) that is also the in-memory fit.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lamods.base import Estimator

log = logging.getLogger(__name__)


def is_fit_style(module: nn.Module) -> bool:
    """Whether ``module`` stands on lamods' estimator base (the fit-style protocol).

    Examples::

        >>> from lamods.decomp import PCA
        >>> is_fit_style(PCA(2)), is_fit_style(nn.Linear(2, 2))
        (True, False)
    """
    return isinstance(module, Estimator)


def split_data(datamodule: pl.LightningDataModule, split: str = "train") -> tuple[Tensor, Tensor]:
    """One split (``train``, ``val`` or ``test``) as ``(features, labels)`` tensors.

    Prepares and sets up the data module, then reads the in-memory tensors of an
    :class:`~experiments.data.ArrayDataModule`, or else the split's loader once, in order.
    """
    datamodule.prepare_data()
    datamodule.setup("fit" if split in ("train", "val") else split)
    dataset = getattr(datamodule, "datasets", {}).get(split)
    if dataset is not None:
        x, y = dataset.tensors
        return x, y
    loader = getattr(datamodule, f"{split}_dataloader")()
    xs, ys = zip(*((x, y) for x, y in loader))
    return torch.cat(xs), torch.cat(ys)


def _fit(module: nn.Module, x: Tensor, y: Tensor, method: str = "fit") -> None:
    fit = getattr(module, method)
    params = list(inspect.signature(fit).parameters)
    if len(params) > 1 and params[1] == "y":
        fit(x, y)
    else:
        fit(x)


def _steps(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The steps to fit in order: the net itself, or the children of an ``nn.Sequential``."""
    if is_fit_style(net):
        return [("", net)]
    if isinstance(net, nn.Sequential):
        return list(net.named_children())
    return []


def _pending(steps: list[tuple[str, nn.Module]]) -> list[str]:
    return [name for name, step in steps if is_fit_style(step) and not step.is_fitted()]


def _unreachable(module: nn.Module, prefix: str = "", top: bool = True) -> list[str]:
    """Unfitted fit-style modules that :func:`fit_modules` cannot feed (a fit-style module
    owns its own submodules, so the search stops at every fit-style module)."""
    found = []
    for name, child in module.named_children():
        full = prefix + name
        if is_fit_style(child):
            if not child.is_fitted() and not (top and isinstance(module, nn.Sequential)):
                found.append(full)
        else:
            found += _unreachable(child, full + ".", top=False)
    return found


def _reachable_pending(who: str, net: nn.Module,
                       advice: str = "") -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The network's steps and the names of its unfitted fit-style ones; raises when an
    unfitted fit-style module sits where no step can reach it."""
    steps = _steps(net)
    hidden = [] if is_fit_style(net) else _unreachable(net)
    if hidden:
        raise ValueError(
            f"{who}: expected unfitted fit-style modules to be the network itself or steps of "
            f"an nn.Sequential, got {', '.join(hidden)} inside {type(net).__name__}{advice}")
    return steps, _pending(steps)


def fit_modules(net: nn.Module, datamodule: pl.LightningDataModule) -> list[str]:
    """Fit the unfitted fit-style modules of ``net`` on ``datamodule``'s training split.

    See the module docstring for which modules and on which inputs. Steps before a
    fit-style step are run in eval mode (no running statistics change) without gradients.
    Returns the names of the fitted modules (``""`` for ``net`` itself); the data is only
    loaded when there is something to fit.

    Examples::

        >>> from lamods.decomp import PCA
        >>> from experiments.data import DigitsDataModule
        >>> net = nn.Sequential(PCA(8), nn.Linear(8, 10))
        >>> fit_modules(net, DigitsDataModule(in_features=64, num_classes=10, seed=0))
        ['0']
        >>> net[0].components_.shape, fit_modules(net, None)
        (torch.Size([8, 64]), [])
    """
    steps, pending = _reachable_pending(
        "fit_modules", net, f"; give {type(net).__name__} a fit(X) method, or fit those "
        "modules before training")
    if not pending:
        return []
    x, y = split_data(datamodule, "train")
    last = pending[-1]
    with torch.no_grad():
        for name, step in steps:
            if name in pending:
                _fit(step, x, y)
                log.info("fitted %s%s on %s training rows", type(step).__name__,
                         f" (net.{name})" if name else "", f"{len(x):,}")
            if name == last:
                break
            was_training = step.training
            x = step.eval()(x)
            step.train(was_training)
    return pending


def shard_batches(batches: Iterable[Any], rank: int = 0,
                  world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's share of every ``(x, y)`` batch: the ``rank``-th of ``world_size``
    contiguous row blocks (``torch.tensor_split``), so at every step the ranks' shares put
    together are the batch, and every rank gets the same number of batches, none empty.

    A last batch with fewer than ``world_size`` rows is merged into the one before it.

    Examples::

        >>> x = torch.arange(10.0)[:, None]
        >>> batches = [(x[:4], x[:4, 0]), (x[4:8], x[4:8, 0]), (x[8:], x[8:, 0])]
        >>> [b[0].flatten().tolist() for b in shard_batches(batches, 1, 3)]
        [[2.0], [6.0, 7.0]]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_batches: expected 0 <= rank < world_size, got rank {rank} "
                         f"of {world_size}")
    held: tuple[Tensor, Tensor] | None = None
    for x, y in batches:
        if held is not None:
            if len(x) < world_size:  # the last batch, too small to share: merge it
                held = (torch.cat([held[0], x]), torch.cat([held[1], y]))
                continue
            yield tuple(part[rank] for part in (torch.tensor_split(held[0], world_size),
                                                torch.tensor_split(held[1], world_size)))
        elif len(x) < world_size:
            raise ValueError(f"shard_batches: expected batches of at least world_size = "
                             f"{world_size} rows (one per process), got a first batch of "
                             f"{len(x)}; use a larger data.batch_size")
        held = (x, y)
    if held is None:
        raise ValueError("shard_batches: expected at least one batch, got none")
    yield tuple(part[rank] for part in (torch.tensor_split(held[0], world_size),
                                        torch.tensor_split(held[1], world_size)))


def stream_fit_modules(net: nn.Module, batches: Iterable[Any], *, rank: int = 0,
                       world_size: int = 1) -> list[str]:
    """Fit the unfitted fit-style modules of ``net`` with ``partial_fit`` over ``batches``.

    The streamed :func:`fit_modules` (same modules, same inputs: each step on the output of
    the steps before it): ``batches`` (a re-iterable of ``(x, y)``, e.g. a DataLoader) is
    read once per step to fit, each rank on its share of every batch (:func:`shard_batches`),
    every rank calling ``partial_fit`` the same number of times, as the all-reduce needs.
    Returns the names of the fitted modules.

    Examples::

        >>> from lamods.decomp import PCA
        >>> x = torch.randn(100, 6, dtype=torch.float64)
        >>> batches = [(x[i:i + 32], torch.zeros(len(x[i:i + 32]))) for i in range(0, 100, 32)]
        >>> net = nn.Sequential(PCA(3), nn.Linear(3, 2))
        >>> stream_fit_modules(net, batches)
        ['0']
        >>> torch.allclose(net[0].explained_variance_, PCA(3).fit(x).explained_variance_)
        True
    """
    steps, pending = _reachable_pending("stream_fit_modules", net)
    for name in pending:
        step = dict(steps)[name]
        if not callable(getattr(step, "partial_fit", None)):
            raise ValueError(f"stream_fit_modules: expected fit-style modules with partial_fit, "
                             f"got {type(step).__name__} (net.{name or '<net>'}); use "
                             f"fit_modules=memory")
    with torch.no_grad():
        for target in pending:
            rows = 0
            for x, y in shard_batches(batches, rank, world_size):
                for name, step in steps:
                    if name == target:
                        _fit(step, x, y, "partial_fit")
                        break
                    was_training = step.training
                    x = step.eval()(x)
                    step.train(was_training)
                rows += len(x)
            log.info("streamed %s%s over %s training rows on rank %d of %d",
                     type(dict(steps)[target]).__name__, f" (net.{target})" if target else "",
                     f"{rows:,}", rank, world_size)
    return pending


class StreamedFit(Callback):
    """Fit the network's fit-style modules with :func:`stream_fit_modules` in every trainer
    process when fitting starts (``setup("fit")``: after torch.distributed is initialised,
    before the model is wrapped or the sanity check runs), over the training DataLoader's
    batches read in order (the same batches on every rank)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not _pending(_steps(pl_module.net)):
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("StreamedFit: expected the trainer to hold a datamodule, got none")
        loader = datamodule.train_dataloader()
        ordered = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False,
                             collate_fn=loader.collate_fn)
        stream_fit_modules(pl_module.net, ordered, rank=trainer.global_rank,
                           world_size=trainer.world_size)


def fitted_module(net: nn.Module, cls: type[nn.Module]) -> Any:
    """The first submodule of ``net`` (``net`` included) that is a ``cls``, or ``None``."""
    return next((m for m in net.modules() if isinstance(m, cls)), None)
