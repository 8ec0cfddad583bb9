"""Entry point: ``python -m experiments.run [+exp=NAME] [key=value ...]`` (``-m`` to sweep).

:func:`run` is a plain function from a composed config to the final metrics, so tests and
notebooks call it directly (``hydra.compose``); :func:`main` is the thin ``@hydra.main``
wrapper the command line uses. Experiments live in ``configs/exp/``; the training itself is
:func:`experiments.train.train`, imported on first use so that ``--help`` and config errors
answer before torch and Lightning load.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

import experiments  # noqa: F401  (registers the config resolvers)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and record the experiment ``cfg``; return the metrics of ``metrics.json``.

    See :func:`experiments.train.train`.
    """
    from experiments.train import train

    return train(cfg)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    """Command-line entry point; see ``python -m experiments.run --help``."""
    run(cfg)


if __name__ == "__main__":
    main()
