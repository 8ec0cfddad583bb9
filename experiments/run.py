"""Entry point: ``python -m experiments.run [+exp=NAME] [key=value ...]`` (``-m`` to sweep).

:func:`run` is a plain function from a composed config to the final metrics, so tests and
notebooks call it directly (``hydra.compose``); :func:`main` is the thin ``@hydra.main``
wrapper the command line uses. Experiments live in ``configs/exp/``; the training itself is
:func:`experiments.train.train` (a study's work, :func:`experiments.studies.run_study`),
imported on first use so that ``--help`` and config errors answer before torch and Lightning
load. The config is checked first (:func:`experiments.schema.validate`): a bad value stops
the run before anything is built, with one message naming the key.

In a sweep (``-m``) a job that fails does not stop the others: its error goes to
``error.txt`` in its directory and to the log, and the summary table names it
(:mod:`experiments.summary`); the job returns NaN to the sweeper.
"""

from __future__ import annotations

import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import experiments  # noqa: F401  (registers the config schemas and resolvers)
from experiments.schema import ConfigError, validate
from experiments.summary import ERROR_FILE

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg``, then train, test and record the experiment; return ``metrics.json``.

    See :func:`experiments.train.train`; an experiment with a ``study`` runs
    :func:`experiments.studies.run_study` instead.
    """
    validate(cfg)
    if cfg.get("study"):
        from experiments.studies import run_study

        return run_study(cfg)
    from experiments.train import train

    return train(cfg)


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    """Write the error of a failed sweep job to ``error.txt`` in its directory and log it."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = f"{type(err).__name__}: {err}".splitlines()[0]
    (out / ERROR_FILE).write_text(first + "\n\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)))
    log.error("job failed (%s): %s", out, first)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Command-line entry point; see ``python -m experiments.run --help``.

    Returns ``metrics[cfg.optimized_metric]`` when set (an Optuna sweep's objective).
    """
    try:
        metrics = run(cfg)
    except Exception as err:
        if _multirun():
            _record_failure(cfg, err)
            return math.nan
        if isinstance(err, ConfigError):
            sys.exit(str(err))
        raise
    key = cfg.get("optimized_metric")
    if not key:
        return None
    value = metrics.get(key)
    if value is None:
        log.warning("optimized_metric %r is not in metrics.json (keys: %s)", key,
                    ", ".join(metrics))
        return math.nan
    return float(value)


if __name__ == "__main__":
    main()
