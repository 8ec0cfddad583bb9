"""The summary table of a multirun: one row per job, its swept values and final metrics.

``python -m experiments.run -m +exp=NAME model.hidden=64,128 seed=0,1`` runs four jobs in
``multirun/DATE/TIME/{0,1,2,3}``; when the sweep ends, :class:`MultirunSummary` (a Hydra
callback registered in ``configs/config.yaml``) reads each job's ``.hydra/overrides.yaml``
and ``metrics.json`` and writes ``summary.csv`` and ``summary.md`` in the sweep directory.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments.outputs import METRICS_FILE, format_value

#: what a failed job leaves in its directory (experiments.run.main)
ERROR_FILE = "error.txt"

#: columns of metrics.json that the table shows after the test metrics, in this order
INFO_COLUMNS = ("val/acc_best", "n_params", "epochs", "wall_time_s", "device")


def _parse_override(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    return key.lstrip("+~"), value


def collect(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Rows for the jobs under ``sweep_dir``, the swept override keys, the common overrides.

    A row holds ``job`` (the job's folder), every override whose value differs between
    jobs, then the job's metrics; a job with ``error.txt`` or without ``metrics.json`` gets
    ``status: failed`` and ``error`` (the error's first line).
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
        error = d / ERROR_FILE
        if metrics_path.is_file() and not error.is_file():
            row.update(json.loads(metrics_path.read_text()))
            row["status"] = "ok"
        else:
            row["status"] = "failed"
            row["error"] = (error.read_text().splitlines() or [""])[0] if error.is_file() \
                else "no metrics.json (the job did not finish)"
        rows.append(row)
    return rows, varying, common


def _columns(rows: list[dict[str, Any]], varying: list[str]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tests = [k for k in keys if k.startswith("test/")]
    info = [k for k in INFO_COLUMNS if k in keys]
    return ["job", *varying, *tests, *info, "status"]


def failures(rows: list[dict[str, Any]], varying: list[str]) -> list[str]:
    """One line per failed job: its folder, its swept values and its error."""
    return [f"job {r['job']} ({' '.join(f'{k}={r.get(k)}' for k in varying)}): {r['error']}"
            for r in rows if r.get("status") == "failed"]


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
    failed = failures(rows, varying)
    if failed:
        lines += ["", f"Failed jobs ({len(failed)} of {len(rows)}; see error.txt in each):", ""]
        lines += [f"- {line}" for line in failed]
    md_path = sweep_dir / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


class MultirunSummary(Callback):
    """Hydra callback: after a multirun, write and print the summary table of its jobs.

    A job that failed (``error.txt``, written by :func:`experiments.run.main`, or no
    ``metrics.json``) is a row with ``status: failed`` and its error, listed under the table;
    the command then exits with status 1, after the summary is written.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        paths = write_summary(config.hydra.sweep.dir)
        if paths is None:
            return
        print(paths[1].read_text())
        print(f"Summary written to {paths[0]} and {paths[1]}", flush=True)
        rows, varying, _ = collect(config.hydra.sweep.dir)
        failed = failures(rows, varying)
        if failed:
            sys.exit(f"{len(failed)} of {len(rows)} jobs failed: " + "; ".join(failed))
