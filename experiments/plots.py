"""PNG plots of a run, drawn from Lightning's CSV log (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from experiments.outputs import read_epoch_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def save_figure(fig: plt.Figure, out: str | Path) -> Path:
    """Lay ``fig`` out, write it to ``out`` as PNG (creating the folder) and close it."""
    out = Path(out)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_curves(metrics_csv: str | Path, out_png: str | Path, title: str = "") -> Path | None:
    """Plot every logged ``{stage}/{metric}`` against the epoch, one panel per metric.

    Training and validation curves of the same metric share a panel; test metrics (one
    value at the end) are marked with a star after the last epoch. Returns the PNG path, or
    ``None`` when the log holds no epoch-level metrics (e.g. ``fast_dev_run``).
    """
    series = read_epoch_metrics(metrics_csv)
    by_metric: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for key, points in series.items():
        stage, _, metric = key.rpartition("/")
        if stage:
            by_metric[metric][stage] = points
    if not by_metric:
        return None
    last_epoch = max((e for key, pts in series.items() if not key.startswith("test/")
                      for e, _ in pts), default=0)
    names = sorted(by_metric)
    # at most three panels a row: six metrics make a 3 x 2 grid, not one 2700-pixel strip
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, names):
        for stage, points in sorted(by_metric[metric].items()):
            epochs = [e for e, _ in points]
            values = [v for _, v in points]
            if stage == "test":
                ax.plot([last_epoch], values[-1:], "*", markersize=12, label=stage)
            else:
                ax.plot(epochs, values, "o-" if len(points) < 30 else "-", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "loss" and all(v > 0 and math.isfinite(v)
                                    for pts in by_metric[metric].values() for _, v in pts):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def plot_sweep(
    series: Mapping[str, Sequence[tuple[float, float]]], out_png: str | Path, *,
    xlabel: str, ylabel: str, title: str = "", logx: bool = False,
) -> Path:
    """Plot metrics against a swept value (e.g. test accuracy against the number of components).

    ``series`` maps a label to its ``(x, y)`` points; every label is one line with markers
    (a single series has its values written beside the points; several would overlap), on
    a base-2 log x axis if ``logx``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ticks: set[float] = set()
    for label, points in series.items():
        xs, ys = zip(*sorted(points)) if points else ((), ())
        ticks.update(xs)
        ax.plot(xs, ys, "o-", label=label)
        if len(series) == 1:  # values beside the points (several series would overlap)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, out_png)
