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
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

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


def _fit(module: nn.Module, x: Tensor, y: Tensor) -> None:
    params = list(inspect.signature(module.fit).parameters)
    if len(params) > 1 and params[1] == "y":
        module.fit(x, y)
    else:
        module.fit(x)


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
    steps = _steps(net)
    pending = _pending(steps)
    hidden = [] if is_fit_style(net) else _unreachable(net)
    if hidden:
        raise ValueError(
            f"fit_modules: expected unfitted fit-style modules to be the network itself or steps "
            f"of an nn.Sequential, got {', '.join(hidden)} inside {type(net).__name__}; give "
            f"{type(net).__name__} a fit(X) method, or fit those modules before training")
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


def fitted_module(net: nn.Module, cls: type[nn.Module]) -> Any:
    """The first submodule of ``net`` (``net`` included) that is a ``cls``, or ``None``."""
    return next((m for m in net.modules() if isinstance(m, cls)), None)
