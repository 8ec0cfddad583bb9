"""Studies: experiments whose work is all analysis, with no network to train.

A study fits estimators (scikit-learn-style ``fit``) and compares them; it is configured with
``_partial_: true`` under the config key ``study`` (``configs/study/*.yaml``, added by an
experiment with ``- /study: NAME`` in its defaults) and called as::

    study(cfg=cfg, datamodule=datamodule, output_dir=output_dir) -> metrics

(``datamodule`` is None for a study that makes its own data: ``- override /data: null``.)

No task, trainer, checkpoint or CSV log is made: the run directory holds ``config.yaml``,
``metrics.json`` (the study's metrics plus wall time, device, name and seed) and the study's
plots. A study logs its progress as it goes, and its module's ``HEADLINE`` names the metrics
that the final one-line summary shows. A new study is one file here, one YAML in
``configs/study/`` and a line below.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from experiments.outputs import summary_line, write_config, write_metrics
from experiments.studies.clustering import clustering_study
from experiments.studies.image_svd import image_svd_study
from experiments.studies.linreg import linreg_study
from experiments.studies.lsa import lsa_study
from experiments.studies.spectral import spectral_study
from experiments.studies.stability import stability_study

__all__ = ["clustering_study", "image_svd_study", "linreg_study", "lsa_study", "run_study",
           "spectral_study", "stability_study"]

log = logging.getLogger(__name__)


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Run the study ``cfg.study`` on ``cfg.data`` and write the run directory.

    Returns the metrics written to ``metrics.json``. Runs on ``cfg.torch_threads`` intra-op
    threads (the count is restored after).
    """
    threads = torch.get_num_threads()
    if cfg.get("torch_threads"):  # as experiments.train.train does
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _run_study(cfg)
    finally:
        torch.set_num_threads(threads)


def _run_study(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # a study that makes or loads its own data (a generated matrix, a bundled image, the
    # standard library's docstrings) sets `override /data: null` and gets datamodule=None
    datamodule = instantiate(cfg.data) if cfg.get("data") else None
    study = instantiate(cfg.study)
    write_config(cfg, output_dir)
    log.info("%s: %s on %s", cfg.name, cfg.study._target_.rpartition(".")[2],
             cfg.data._target_.rpartition(".")[2] if datamodule is not None
             else "its own data")
    metrics: dict[str, Any] = dict(study(cfg=cfg, datamodule=datamodule,
                                         output_dir=output_dir) or {})
    metrics.update(wall_time_s=round(time.perf_counter() - start, 3), device="cpu",
                   name=cfg.name, seed=cfg.seed)
    write_metrics(metrics, output_dir)
    module = importlib.import_module(getattr(study, "func", study).__module__)
    print(summary_line(cfg.name, metrics, output_dir, keys=getattr(module, "HEADLINE", None)),
          flush=True)
    return metrics
