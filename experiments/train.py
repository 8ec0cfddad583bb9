"""One training run from a composed config: build, fit, test, and write the run directory.

:func:`make_trainer` is the one place a ``pytorch_lightning.Trainer`` is made, for the main
run, for the extra runs a report asks for (:mod:`experiments.sweep`) and for a report's
fine-tunes: the config's trainer settings, its loggers (``configs/logger/``) and callbacks
(``configs/callbacks/``). Kept apart from :mod:`experiments.run` so the command line answers
``--help`` and config errors without importing torch and Lightning.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar

from experiments.callbacks import LastCheckpoint
from experiments.fitted import StreamedFit, fit_modules
from experiments.loggers import CSVLogger, TrimLogOnResume
from experiments.outputs import read_epoch_metrics, summary_line, write_config, write_metrics
from experiments.plots import plot_curves
from experiments.schema import check_accelerator
from experiments.tasks import Task

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, Task]:
    """Instantiate the data module and the task (with its network, optimizer, scheduler).

    The task gets the configs of the network (``model.net``, plus the sizes only the data
    knows, e.g. a rating model's ``n_users``), optimizer and scheduler, builds them and saves
    them as hyperparameters (``Task.load_from_checkpoint`` needs nothing else). Fit-style
    modules in the network (``PCA -> head``) are then fitted on the training split
    (:func:`experiments.fitted.fit_modules`), before the trainer sees the task; with
    ``fit_modules: stream`` they are left to the trainer's processes
    (:class:`experiments.fitted.StreamedFit`, added by :func:`make_trainer`).
    """
    datamodule = instantiate(cfg.data)
    # a data module may give the network sizes only the data knows (a rating model's
    # n_users, n_items) through model_kwargs()
    model_kwargs = getattr(datamodule, "model_kwargs", None)
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    assert isinstance(net, dict)
    net.update(model_kwargs() if callable(model_kwargs) else {})
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    assert isinstance(task_cfg, dict)
    cls = get_class(task_cfg.pop("_target_"))
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"build: expected task._target_ to name an experiments.tasks.Task, got "
                        f"{cls!r}")
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") \
        else None
    task = cls(net=net, optimizer=optimizer, scheduler=scheduler, **task_cfg)
    if cfg.get("fit_modules", "memory") == "memory":
        fit_modules(task.net, datamodule)
    return datamodule, task


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's INFO lines (devices found, checkpoint restored) inside the block."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _callback(cfg: DictConfig, task: Task | None, output_dir: Path) -> Any:
    """One callback from its config; ``monitor: null`` / ``mode: null`` mean the task's, and a
    ``dirpath`` is ``<output_dir>/checkpoints`` (the run's, or a fine-tune's own)."""
    kwargs: dict[str, Any] = {}
    if "dirpath" in cfg:
        kwargs["dirpath"] = str(output_dir / "checkpoints")
    if "monitor" in cfg and cfg.monitor is None and task is not None:
        kwargs["monitor"] = task.monitor
    if "mode" in cfg and cfg.mode is None and task is not None:
        kwargs["mode"] = task.monitor_mode
    return instantiate(cfg, **kwargs)


def make_trainer(
    cfg: DictConfig, output_dir: str | Path, *, task: Task | None = None,
    callbacks: Sequence[str] | None = None, logger: bool = True, quiet: bool = False,
    resuming: bool = False, **overrides: Any,
) -> pl.Trainer:
    """The ``pytorch_lightning.Trainer`` of ``cfg`` writing into ``output_dir``.

    Args:
        cfg: the run's config (``trainer``, ``logger``, ``callbacks`` groups).
        output_dir: the run directory (``default_root_dir``, checkpoints, logs).
        task: fills the callbacks' ``monitor: null`` / ``mode: null`` with its metric.
        callbacks: names of the ``cfg.callbacks`` entries to use (``None``: all of them).
        logger: use the loggers of ``cfg.logger`` (else none).
        quiet: no progress bar, no model summary (a report's extra runs).
        resuming: the fit resumes from a checkpoint (the CSV log drops the epochs it redoes).
        **overrides: trainer arguments that replace the config's (``max_epochs=3``, ...).
    """
    output_dir = Path(output_dir)
    tcfg = copy.deepcopy(cfg.trainer)
    with open_dict(tcfg):
        tcfg.default_root_dir = str(output_dir)
        if quiet:
            tcfg.enable_progress_bar = False
            tcfg.enable_model_summary = False
        for key, value in overrides.items():
            tcfg[key] = value
    check_accelerator(OmegaConf.to_container(tcfg, resolve=True))  # type: ignore[arg-type]
    cbs = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or (callbacks is not None and name not in callbacks):
            continue
        cb = _callback(cb_cfg, task, output_dir)
        if isinstance(cb, ProgressBar) and not tcfg.enable_progress_bar:
            continue
        cbs.append(cb)
    if resuming:
        cbs.append(TrimLogOnResume())
    if cfg.get("fit_modules", "memory") == "stream":
        cbs.append(StreamedFit())  # part of the fit, not an optional callback
    loggers = []
    if logger:
        for lg_cfg in (cfg.get("logger") or {}).values():
            if lg_cfg is not None:
                loggers.append(instantiate(lg_cfg, save_dir=str(output_dir)))
    return instantiate(tcfg, logger=loggers or False, callbacks=cbs)


def _device(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    name = root.type
    if root.type == "cuda" and torch.cuda.is_available():
        name = f"cuda ({torch.cuda.get_device_name(root)})"
    if trainer.num_devices > 1 or trainer.num_nodes > 1:
        name += f" x{trainer.num_devices * trainer.num_nodes} ({type(trainer.strategy).__name__})"
    return name


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The trainer's checkpoint callback that keeps the best model (not ``last.ckpt``)."""
    return next((cb for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and not isinstance(cb, LastCheckpoint)), None)


def _csv_log(trainer: pl.Trainer) -> Path | None:
    for lg in trainer.loggers:
        if isinstance(lg, CSVLogger):
            return Path(lg.log_dir) / "metrics.csv"
    return None


def _fit_record(
    trainer: pl.Trainer, checkpoint: ModelCheckpoint | None, task: Task,
    history: dict[str, list[tuple[int, float]]],
) -> tuple[int, float | None]:
    """Number of epochs trained and the best value of ``task.monitor``.

    Note [spawned fit]: under ``start_method="spawn"`` the fit ran in child processes, and
    this process's trainer and checkpoint callback only get back the best checkpoint's
    path, not the epoch count nor the best score; those are then read from the CSV log.
    """
    epochs = trainer.current_epoch
    best = checkpoint.best_model_score if checkpoint is not None else None
    if epochs == 0:
        epochs = 1 + max((e for key, pts in history.items() if not key.startswith("test/")
                          for e, _ in pts), default=-1)
    if best is None and history.get(task.monitor):
        pick = max if task.monitor_mode == "max" else min
        return epochs, pick(v for _, v in history[task.monitor])
    return epochs, None if best is None else float(best)


def load_weights(task: Task, checkpoint: str | Path) -> None:
    """Load a checkpoint's weights into ``task`` (``torch.load(weights_only=True)``)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)


def train(cfg: DictConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Train, test and record one experiment described by ``cfg``; return its final metrics.

    Seeds everything with ``cfg.seed``, builds data, task and trainer from the config, fits
    (resuming from ``cfg.ckpt_path`` if set: model, optimizer, scheduler, loops, callbacks and
    random states, into the same run directory, appending to its logs), tests the best
    checkpoint, and (on rank zero) writes ``config.yaml``, ``metrics.json`` and
    ``plots/curves.png`` into ``cfg.paths.output_dir`` beside the logs and the checkpoints,
    then prints a one-line summary. An experiment with a ``report`` (a ``_partial_`` callable,
    see :mod:`experiments.reports`) gets it called on rank zero after testing, with the task
    holding the best checkpoint's weights; the metrics it returns go into ``metrics.json``.
    ``quiet`` (a report's extra runs): no progress bar, model summary or Lightning INFO lines.
    Runs on ``cfg.torch_threads`` intra-op threads (the count is restored after).
    """
    threads = torch.get_num_threads()
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    try:
        with quiet_lightning() if quiet else contextlib.nullcontext():
            return _train(cfg, quiet)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: DictConfig, quiet: bool) -> dict[str, Any]:
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, task = build(cfg)
    ckpt_path = cfg.get("ckpt_path")
    trainer = make_trainer(cfg, output_dir, task=task, quiet=quiet, resuming=bool(ckpt_path))
    checkpoint = best_checkpoint_callback(trainer)
    if trainer.is_global_zero:
        write_config(cfg, output_dir)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (KeyboardInterrupt, SystemExit):
        last = output_dir / "checkpoints" / "last.ckpt"
        if trainer.is_global_zero and last.is_file():
            print(f"{cfg.name}: interrupted at epoch {trainer.current_epoch}; resume with "
                  f"ckpt_path={last}", flush=True)
        raise
    metrics: dict[str, Any] = {}
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("test", True):
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best_path or None,
                               verbose=False, weights_only=True)
        metrics.update({k: float(v) for k, v in results[0].items()})
    if best_path and Path(best_path).is_file():
        load_weights(task, best_path)  # after a spawned fit only the checkpoint holds them
    if cfg.get("report") and trainer.is_global_zero:
        report = instantiate(cfg.report)
        metrics.update(report(cfg=cfg, datamodule=datamodule, task=task,
                              output_dir=output_dir, metrics=dict(metrics)) or {})
    metrics_csv = _csv_log(trainer)
    history = read_epoch_metrics(metrics_csv) if metrics_csv and metrics_csv.is_file() else {}
    epochs, best_score = _fit_record(trainer, checkpoint, task, history)
    if best_score is not None:
        metrics[f"{task.monitor}_best"] = best_score
    metrics.update(
        n_params=task.n_params,
        epochs=epochs,
        wall_time_s=round(time.perf_counter() - start, 3),
        device=_device(trainer),
        precision=str(trainer.precision),
        name=cfg.name,
        seed=cfg.seed,
        best_checkpoint=best_path or None,
    )
    if trainer.is_global_zero:
        write_metrics(metrics, output_dir)
        if cfg.get("plots", True) and metrics_csv and metrics_csv.is_file():
            plot_curves(metrics_csv, output_dir / "plots" / "curves.png", title=cfg.name)
        print(summary_line(cfg.name, metrics, output_dir), flush=True)
    return metrics
