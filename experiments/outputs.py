"""What a run leaves in its directory: the resolved config, ``metrics.json``, a summary line.

Layout of a run directory (Hydra's ``outputs/DATE/TIME`` or ``multirun/DATE/TIME/JOB``)::

    .hydra/              Hydra's composed config, its overrides
    config.yaml          the resolved config this run used
    metrics.json         final metrics (``test/acc``, ...), n_params, wall_time_s, device
    csv/metrics.csv      every logged metric, per epoch (Lightning's CSVLogger)
    checkpoints/         best.ckpt (best validation metric) and last.ckpt (for resuming)
    plots/curves.png     training curves
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"


def write_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write ``cfg`` with every interpolation resolved to ``<output_dir>/config.yaml``."""
    path = Path(output_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_metrics(metrics: Mapping[str, Any], output_dir: str | Path) -> Path:
    """Write ``metrics`` as indented JSON to ``<output_dir>/metrics.json``."""
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=False) + "\n")
    return path


def read_metrics(output_dir: str | Path) -> dict[str, Any]:
    """Read ``<output_dir>/metrics.json``."""
    return json.loads((Path(output_dir) / METRICS_FILE).read_text())


def read_epoch_metrics(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{"val/acc": [(epoch, value), ...], ...}`` from a CSVLogger ``metrics.csv``.

    Lightning writes one row per logging call with empty cells for the other metrics;
    empty cells and the ``epoch``/``step`` columns are skipped.
    """
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                series[key].append((epoch, float(value)))
    return dict(series)


def format_value(value: Any) -> str:
    """A metric as a short string: floats with 4 significant decimals, ints with separators.

    Examples::

        >>> format_value(0.96944444), format_value(12345), format_value(3.21e-05)
        ('0.9694', '12,345', '3.21e-05')
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and math.isfinite(value) and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}"
    return str(value)


def summary_line(name: str, metrics: Mapping[str, Any], output_dir: str | Path,
                 keys: Sequence[str] | None = None) -> str:
    """One line with the test metrics (or ``keys``), size, time and where the run directory is.

    A run without parameters (a study) shows no parameter count.

    Examples::

        >>> summary_line("demo", {"test/acc": 0.97, "test/loss": 0.1, "n_params": 8970,
        ...                       "wall_time_s": 12.3, "device": "cpu"}, "outputs/x")
        'demo: test/acc=0.9700 test/loss=0.1000 | 8,970 params | 12.3 s on cpu | outputs/x'
    """
    shown = [k for k in keys if k in metrics] if keys else \
        [k for k in metrics if k.startswith("test/")]
    figures = " ".join(f"{k}={format_value(metrics[k])}" for k in shown)
    params = "" if metrics.get("n_params") is None else \
        f" | {format_value(metrics.get('n_params'))} params"
    return (
        f"{name}: {figures or 'no test metrics'}{params}"
        f" | {metrics.get('wall_time_s', float('nan')):.1f} s on {metrics.get('device')}"
        f" | {output_dir}"
    )
