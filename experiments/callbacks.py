"""Lightning callbacks of the experiments: exact resume and a console that stays readable.

``configs/callbacks/default.yaml`` names them with Lightning's own:

- :class:`LastCheckpoint`: ``checkpoints/last.ckpt`` at the end of every epoch and when the
  run is interrupted (Ctrl-C, ``SIGTERM``), whatever the monitored metric did. Lightning's
  ``ModelCheckpoint(monitor=..., save_last=True)`` only refreshes ``last.ckpt`` when a new
  best is saved, so resuming from it would repeat epochs.
- :class:`RNGState`: the torch (CPU and CUDA), numpy and Python random states in every
  checkpoint, restored when training resumes, so the resumed epochs draw the same data order
  (the training sampler's seed comes from torch's generator) and the same random numbers as an
  uninterrupted run: the same final metrics, to the last digit, on CPU.
- :class:`ProgressBar`: Lightning's tqdm bar on a terminal; one line per epoch when the output
  is a file or a pipe (CI logs, ``> log.txt``), instead of thousands of carriage returns.

Note [resume point]: a checkpoint written at the end of an epoch resumes exactly; one written
on an interrupt in the middle of an epoch resumes at that batch, but the rest of that epoch
sees a new data order (the loaders are not stateful), so only epoch-end checkpoints give
bit-identical results.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

LAST = "last"


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every epoch and on an interrupt: what resuming needs.

    Model, optimizer, scheduler, loop counters and every callback's state (the best
    checkpoint's score, :class:`RNGState`) are in it. Saved on ``KeyboardInterrupt`` and
    ``SIGTERM`` (Lightning raises ``SystemExit`` at the next batch), not on other errors, so a
    crash never replaces a good ``last.ckpt`` with a broken model.

    Args:
        dirpath: the run's ``checkpoints/`` folder.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1,
                         save_last=False, enable_version_counter=False)

    @property
    def last_path(self) -> Path:
        """Where ``last.ckpt`` is written."""
        return Path(self.dirpath or ".") / f"{LAST}{self.FILE_EXTENSION}"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SystemExit)):
            return
        if trainer.sanity_checking or trainer.state.fn != "fit" or trainer.fast_dev_run:
            return
        if self._last_global_step_saved == trainer.global_step:
            return  # the epoch-end checkpoint is already this state
        self._save_checkpoint(trainer, str(self.last_path))


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict[str, Any]) -> None:
    legacy = (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
              state["has_gauss"], state["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002 (the global state)


class RNGState(Callback):
    """Saves the random states in checkpoints and restores them when training resumes.

    The states are taken when the checkpoint is written (end of an epoch: after validation,
    before the next epoch draws its data order) and put back as soon as Lightning restores
    the callbacks from the checkpoint. Between that and the first training batch Lightning
    only runs its sanity check, inside ``isolate_rng()``, and then creates the training
    loader's iterator: the draw the uninterrupted run makes at the start of that epoch.
    Everything is stored as tensors and plain Python values, so checkpoints load with
    ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(),
                 "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        _set_numpy_state(state_dict["numpy"])
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        cuda = state_dict.get("cuda")
        if cuda is not None and torch.cuda.is_available() and \
                len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar on a terminal, one line per epoch otherwise.

    Args:
        refresh_rate: batches between bar updates (terminal only).
        plain: one line per epoch instead of bars; ``None``: when stdout is not a terminal.
    """

    def __init__(self, refresh_rate: int = 1, plain: bool | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.plain = (not sys.stdout.isatty()) if plain is None else bool(plain)
        if self.plain:
            self.disable()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.plain:
            return super().on_train_epoch_end(trainer, pl_module)
        if not trainer.is_global_zero or trainer.sanity_checking:
            return None
        metrics = {k: v for k, v in trainer.callback_metrics.items()
                   if k.startswith(("train/", "val/"))}
        shown = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {shown}".rstrip(),
              flush=True)
        return None
