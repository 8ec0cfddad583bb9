"""The summary table of a multirun: one row per job, its swept values and final metrics.

``python -m experiments.run -m +exp=NAME model.hidden=64,128 seed=0,1`` runs four jobs in
``multirun/DATE/TIME/{0,1,2,3}``; when the sweep ends, :class:`MultirunSummary` (a Hydra
callback registered in ``configs/config.yaml``) reads each job's ``.hydra/overrides.yaml``
and ``metrics.json`` and writes ``summary.csv`` and ``summary.md`` in the sweep directory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments.outputs import METRICS_FILE, format_value

#: columns of metrics.json that the table shows after the test metrics, in this order
INFO_COLUMNS = ("val/acc_best", "n_params", "epochs", "wall_time_s", "device")


def _parse_override(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    return key.lstrip("+~"), value


def collect(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Rows for the jobs under ``sweep_dir``, the swept override keys, the common overrides.

    A row holds ``job`` (the job's folder), every override whose value differs between
    jobs, then the job's metrics; a job without ``metrics.json`` gets ``status: failed``.
    """
    jobs = sorted(
        (d for d in Path(sweep_dir).iterdir() if (d / ".hydra" / "overrides.yaml").is_file()),
        key=lambda d: (len(d.name), d.name),
    )
    overrides = []
    for d in jobs:
        lines = OmegaConf.load(d / ".hydra" / "overrides.yaml")
        overrides.append(dict(_parse_override(str(line)) for line in lines))
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    common = {k: overrides[0][k] for k in keys if k not in varying}
    rows: list[dict[str, Any]] = []
    for d, o in zip(jobs, overrides):
        row: dict[str, Any] = {"job": d.name, **{k: o.get(k, "") for k in varying}}
        metrics_path = d / METRICS_FILE
        if metrics_path.is_file():
            row.update(json.loads(metrics_path.read_text()))
            row["status"] = "ok"
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows, varying, common


def _columns(rows: list[dict[str, Any]], varying: list[str]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tests = [k for k in keys if k.startswith("test/")]
    info = [k for k in INFO_COLUMNS if k in keys]
    return ["job", *varying, *tests, *info, "status"]


def write_summary(sweep_dir: str | Path) -> tuple[Path, Path] | None:
    """Write ``summary.csv`` (every column, full precision) and ``summary.md`` in ``sweep_dir``.

    Returns both paths, or ``None`` when the directory holds no jobs.
    """
    sweep_dir = Path(sweep_dir)
    rows, varying, common = collect(sweep_dir)
    if not rows:
        return None
    csv_path = sweep_dir / "summary.csv"
    all_keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=all_keys)
        writer.writeheader()
        writer.writerows(rows)
    cols = _columns(rows, varying)
    lines = [f"# Multirun summary: {sweep_dir}", ""]
    if common:
        lines += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()), ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c, "")) for c in cols) + " |")
    md_path = sweep_dir / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


class MultirunSummary(Callback):
    """Hydra callback: after a multirun, write and print the summary table of its jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        paths = write_summary(config.hydra.sweep.dir)
        if paths is not None:
            print(paths[1].read_text())
            print(f"Summary written to {paths[0]} and {paths[1]}")
