"""One training run from a composed config: build, fit, test, and write the run directory.

Kept apart from :mod:`experiments.run` so the command line answers ``--help`` and config
errors without importing torch and Lightning.
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from experiments.fitted import fit_modules
from experiments.outputs import read_epoch_metrics, summary_line, write_config, write_metrics
from experiments.plots import plot_curves
from experiments.tasks import Task

# Warnings a user cannot act on: small in-memory data sets need no loader workers, tiny
# smoke runs have few batches, and Lightning 2.6 calls an API that torch 2.14 deprecates.
_QUIET = (
    r".*does not have many workers.*",
    r".*number of training batches.*log_every_n_steps.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, Task]:
    """Instantiate the data module and the task (with its network, optimizer, scheduler).

    Fit-style modules in the network (``PCA -> head``) are fitted on the training split
    here, before the task sees the network (:func:`experiments.fitted.fit_modules`).
    """
    datamodule = instantiate(cfg.data)
    # a data module may give the network sizes only the data knows (a rating model's
    # n_users, n_items) through model_kwargs()
    model_kwargs = getattr(datamodule, "model_kwargs", None)
    net = instantiate(cfg.model.net, **(model_kwargs() if callable(model_kwargs) else {}))
    fit_modules(net, datamodule)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    task = instantiate(cfg.task, net=net, optimizer=optimizer, scheduler=scheduler)
    if not isinstance(task, Task):
        raise TypeError(f"build: expected task._target_ to build an experiments.tasks.Task, got "
                        f"{type(task).__name__}")
    return datamodule, task


def _device(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    name = root.type
    if root.type == "cuda" and torch.cuda.is_available():
        name = f"cuda ({torch.cuda.get_device_name(root)})"
    if trainer.num_devices > 1 or trainer.num_nodes > 1:
        name += f" x{trainer.num_devices * trainer.num_nodes} ({type(trainer.strategy).__name__})"
    return name


def _keep_csv_header(logger: CSVLogger) -> None:
    """Make the logger's writer know the columns already in ``metrics.csv``.

    Note [CSV logs across spawned processes]: with ``DDPStrategy(start_method="spawn")``
    ``fit`` and ``test`` each run in fresh processes that get a pickled copy of this
    process's logger, whose writer never saw the columns that ``fit`` wrote. When ``test``
    then logs new columns, the writer rewrites the file with only its own header and fails
    on the old rows. Reading the header back here keeps every column.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        writer = logger.experiment
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


def _fit_record(
    trainer: pl.Trainer, checkpoint: ModelCheckpoint, task: Task,
    history: dict[str, list[tuple[int, float]]],
) -> tuple[int, float | None]:
    """Number of epochs trained and the best value of ``task.monitor``.

    Note [spawned fit]: under ``start_method="spawn"`` the fit ran in child processes, and
    this process's trainer and checkpoint callback only get back the best checkpoint's
    path, not the epoch count nor the best score; those are then read from the CSV log.
    """
    epochs = trainer.current_epoch
    best = checkpoint.best_model_score
    if epochs == 0:
        epochs = 1 + max((e for key, pts in history.items() if not key.startswith("test/")
                          for e, _ in pts), default=-1)
    if best is None and history.get(task.monitor):
        pick = max if task.monitor_mode == "max" else min
        return epochs, pick(v for _, v in history[task.monitor])
    return epochs, None if best is None else float(best)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and record one experiment described by ``cfg``; return its final metrics.

    Seeds everything with ``cfg.seed``, builds data, model, task and trainer from the
    config, fits (resuming from ``cfg.ckpt_path`` if set), tests the best checkpoint, and
    (on rank zero) writes ``config.yaml``, ``metrics.json`` and ``plots/curves.png`` into
    ``cfg.paths.output_dir`` beside the CSV log and the checkpoints, then prints a one-line
    summary. An experiment with a ``report`` (a ``_partial_`` callable, see
    :mod:`experiments.reports`) gets it called on rank zero after testing; the metrics it
    returns go into ``metrics.json``. Runs on ``cfg.torch_threads`` intra-op threads (the
    count is restored after). With ``train: false`` (an experiment whose work is all in its
    report, e.g. fitting scikit-learn-style estimators) no task or trainer is built: the
    report gets ``task=None`` and its metrics are the run's (:func:`_report_only`).
    Returns the metrics written to ``metrics.json``.
    """
    threads = torch.get_num_threads()
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    for pattern in _QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if not cfg.get("train", True):
        return _report_only(cfg, output_dir, start)
    datamodule, task = build(cfg)

    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor=task.monitor,
        mode=task.monitor_mode,
        save_last=cfg.checkpoint.save_last,
    )
    logger = CSVLogger(save_dir=output_dir, name="csv", version="")
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[checkpoint])
    if trainer.is_global_zero:
        write_config(cfg, output_dir)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    _keep_csv_header(logger)
    metrics: dict[str, Any] = {}
    if cfg.get("test", True):
        best = "best" if checkpoint.best_model_path else None
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update({k: float(v) for k, v in results[0].items()})
    if cfg.get("report") and trainer.is_global_zero:
        report = instantiate(cfg.report)
        metrics.update(report(cfg=cfg, datamodule=datamodule, task=task,
                              output_dir=output_dir, metrics=dict(metrics)) or {})
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    history = read_epoch_metrics(metrics_csv) if metrics_csv.is_file() else {}
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
        best_checkpoint=checkpoint.best_model_path or None,
    )
    if trainer.is_global_zero:
        write_metrics(metrics, output_dir)
        if cfg.get("plots", True) and metrics_csv.is_file():
            plot_curves(metrics_csv, output_dir / "plots" / "curves.png", title=cfg.name)
        print(summary_line(cfg.name, metrics, output_dir))
    return metrics


def _report_only(cfg: DictConfig, output_dir: Path, start: float) -> dict[str, Any]:
    """``train: false``: instantiate the data, call the report, write the run directory.

    No network, task, trainer, checkpoint or CSV log: ``config.yaml``, ``metrics.json`` (the
    report's metrics plus wall time, device, name and seed) and the report's plots.
    """
    if not cfg.get("report"):
        raise ValueError("train: expected a report (an experiment with '- /report: NAME') "
                         "when train=false, got none: there would be nothing to run")
    datamodule = instantiate(cfg.data)
    report = instantiate(cfg.report)
    write_config(cfg, output_dir)
    metrics: dict[str, Any] = dict(report(cfg=cfg, datamodule=datamodule, task=None,
                                          output_dir=output_dir, metrics={}) or {})
    metrics.setdefault("n_params", 0)  # nothing trained
    metrics.setdefault("device", "cpu")
    metrics.update(wall_time_s=round(time.perf_counter() - start, 3), name=cfg.name,
                   seed=cfg.seed)
    write_metrics(metrics, output_dir)
    print(summary_line(cfg.name, metrics, output_dir))
    return metrics
