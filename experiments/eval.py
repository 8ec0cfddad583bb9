"""Evaluate a saved checkpoint: ``python -m experiments.eval ckpt_path=RUN/checkpoints/best.ckpt``.

Reads the run's saved ``config.yaml`` (beside ``checkpoints/``) for its data, rebuilds the
task with ``Task.load_from_checkpoint`` (network, weights and fitted buffers from the
checkpoint, loaded with ``weights_only=True``), tests it on the test split and writes
``metrics.json`` into its own directory (``outputs/eval/DATE/HH-MM-SS_RUNID/``)
with a one-line summary. ``configs/eval.yaml`` lists the options (``trainer``, ``data``
overrides such as ``data.root=...``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import experiments  # noqa: F401  (registers the config schemas and resolvers)
from experiments.outputs import CONFIG_FILE, summary_line, write_metrics
from experiments.schema import ConfigError

#: a saved run's data module must be one of the experiments' own
SAFE_DATA = ("experiments.data.",)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path`` on its run's test split; return the metrics.

    ``cfg.run_config`` (default: ``config.yaml`` of the checkpoint's run directory) gives the
    data; ``cfg.data`` entries override it; ``cfg.trainer`` runs the test.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from experiments.tasks import Task
    from experiments.tasks.base import check_targets
    from experiments.train import make_trainer

    start = time.perf_counter()
    if not cfg.get("ckpt_path"):
        raise ConfigError("config error at ckpt_path: expected the path of a checkpoint "
                          "(ckpt_path=<run dir>/checkpoints/best.ckpt), got none")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"config error at ckpt_path: no checkpoint at {ckpt}")
    run_config = Path(cfg.run_config) if cfg.get("run_config") else \
        ckpt.resolve().parent.parent / CONFIG_FILE
    if not run_config.is_file():
        raise ConfigError(f"config error at run_config: expected the run's {CONFIG_FILE} at "
                          f"{run_config} (pass run_config=PATH), found none")
    saved = OmegaConf.load(run_config)
    data_cfg = OmegaConf.merge(saved.data, cfg.get("data") or {})
    check_targets(OmegaConf.to_container(data_cfg), "data", SAFE_DATA)
    pl.seed_everything(int(saved.get("seed", 0)), workers=True, verbose=False)
    task = Task.load_from_checkpoint(ckpt, map_location="cpu")
    datamodule = instantiate(data_cfg)
    output_dir = Path(cfg.paths.output_dir)
    trainer = make_trainer(cfg, output_dir, task=task, callbacks=(), logger=False)
    results = trainer.test(task, datamodule=datamodule, verbose=False)
    metrics: dict[str, Any] = {k: float(v) for k, v in results[0].items()}
    metrics.update(n_params=task.n_params, checkpoint=str(ckpt.resolve()),
                   run_config=str(run_config), task=type(task).__name__,
                   wall_time_s=round(time.perf_counter() - start, 3),
                   device=trainer.strategy.root_device.type, name=f"{saved.get('name')} (eval)")
    if trainer.is_global_zero:
        write_metrics(metrics, output_dir)
        print(summary_line(str(metrics["name"]), metrics, output_dir), flush=True)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Command-line entry point; see ``python -m experiments.eval --help``."""
    try:
        evaluate(cfg)
    except ConfigError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
