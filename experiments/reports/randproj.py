r"""The random-projection report: pairwise-distance distortion and accuracy against ``k``.

For each method (``gaussian``, ``sparse``, ``srht``: the :mod:`lamods.layers.projection`
maps, drawn from ``cfg.seed`` like the model's own) and each ``k`` in ``ks``, the report
projects ``n_points`` test rows (all of them if fewer) and measures the ratio of every
pair's squared distance after and before (those of :func:`lamods.pairwise_distance_distortion`,
all pairs at once through :func:`lamods.layers.pairwise_sq_distances`):

.. math::
    r_{ij} = \frac{\lVert f(x_i) - f(x_j) \rVert^2}{\lVert x_i - x_j \rVert^2}, \qquad
    E\, r_{ij} = 1, \qquad
    r_{ij} \sim \chi^2_k / k \text{ for the Gaussian map}.

The Johnson-Lindenstrauss lemma guarantees :math:`|r_{ij} - 1| \le \varepsilon` for all
pairs of :math:`n` points with high probability once
:math:`k \ge 4 \ln n / (\varepsilon^2/2 - \varepsilon^3/3)`; :func:`jl_eps` inverts that
bound: the :math:`\varepsilon` guaranteed at a given ``k`` (none below 1 when
:math:`k < 24 \ln n`). The test accuracy of the model with ``model.method = M`` and
``model.out_features = k`` (the projection frozen, the head trained by the same task and
trainer settings) is measured for every method and ``k``.

Metrics: ``test/acc@M,k=K``; ``distortion/{min,median,max}@M,k=K`` and
``distortion/eps@M,k=K`` (:math:`\max |r_{ij} - 1|`, the empirical :math:`\varepsilon`);
``distortion/within_jl@M,k=K`` (fraction of pairs inside the JL band, where one exists);
``distortion/n_points``; ``jl/eps@k=K`` (the guaranteed :math:`\varepsilon` for
``n_points``, ``None`` when vacuous); ``jl/n_train`` and ``jl/min_dim@eps=E``
(:func:`~lamods.johnson_lindenstrauss_min_dim` for the training rows). Files:
``randproj_distortion.csv`` (quantiles of every method and ``k``),
``plots/distortion_vs_k.png`` (box per method and ``k``: quartiles, 1-99 % whiskers, min
and max marks; the JL band and the :math:`\chi^2_k/k` 1-99 % quantiles for reference) and
``plots/acc_vs_k.png``; the classifier for each method and ``k`` other than the model's own
leaves its run directory in ``<run dir>/M/k=K/``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from scipy.stats import chi2

from experiments.fitted import split_data
from experiments.plots import plot_sweep, plt, save_figure
from experiments.sweep import train_variant
from lamods import johnson_lindenstrauss_min_dim
from lamods.layers import pairwise_sq_distances

DISTORTION_FILE = "randproj_distortion.csv"
#: quantiles kept per method and k (the CSV's columns, and the box plot's)
QUANTILES = {"min": 0.0, "q01": 0.01, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75,
             "q95": 0.95, "q99": 0.99, "max": 1.0}
COLORS = {"gaussian": "tab:blue", "sparse": "tab:orange", "srht": "tab:green"}


def jl_eps(k: int, n_samples: int) -> float | None:
    r"""The :math:`\varepsilon` the JL bound guarantees for ``n_samples`` points at ``k``.

    The root in :math:`(0, 1)` of :math:`\varepsilon^2/2 - \varepsilon^3/3 = 4 \ln n / k`
    (the left side increases to 1/6 there), by bisection; ``None`` when
    :math:`4 \ln n / k \ge 1/6`: the bound then guarantees nothing.

    Examples::

        >>> eps = jl_eps(256, 1000)
        >>> round(eps, 3), johnson_lindenstrauss_min_dim(1000, eps=eps + 1e-9) <= 256
        (0.6, True)
        >>> jl_eps(64, 1000) is None
        True
    """
    target = 4 * math.log(n_samples) / k
    if target >= 1 / 6:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * mid / 2 - mid ** 3 / 3 < target else (lo, mid)
    return hi


def distortion_stats(ratios: torch.Tensor, eps: float | None = None) -> dict[str, float]:
    """Quantiles (:data:`QUANTILES`), ``mean``, ``std``, ``eps`` (``max |r - 1|``) and, with a
    JL ``eps``, ``within_jl`` (the fraction of ratios in ``[1 - eps, 1 + eps]``) of ``ratios``.

    Examples::

        >>> s = distortion_stats(torch.tensor([0.5, 1.0, 1.25]), eps=0.4)
        >>> s["min"], s["median"], s["max"], s["eps"], round(s["within_jl"], 3)
        (0.5, 1.0, 1.25, 0.5, 0.667)
    """
    r = ratios.double().cpu().numpy()
    out = {name: float(np.quantile(r, q)) for name, q in QUANTILES.items()}
    out.update(mean=float(r.mean()), std=float(r.std()), eps=float(np.abs(r - 1).max()))
    if eps is not None:
        out["within_jl"] = float(np.mean(np.abs(r - 1) <= eps))
    return out


def _plot_distortion(stats: Mapping[tuple[str, int], Mapping[str, float]],
                     methods: Sequence[str], ks: Sequence[int],
                     bands: Mapping[int, float | None], n_points: int, out: Path,
                     title: str) -> None:
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(ks) * max(1, len(methods)) / 3, 4.2))
    width = 0.8 / len(methods)
    for pos, k in enumerate(ks):
        lo, hi = pos - 0.45, pos + 0.45
        eps = bands.get(k)
        if eps is not None:
            ax.fill_between([lo, hi], 1 - eps, 1 + eps, color="0.85", lw=0,
                            label="JL guarantee (all pairs)" if pos == min(
                                p for p, kk in enumerate(ks) if bands.get(kk)) else None)
        q01, q99 = chi2.ppf([0.01, 0.99], k) / k
        ax.hlines([q01, q99], lo, hi, colors="k", linestyles=":", lw=1,
                  label=r"$\chi^2_k/k$ 1-99 %" if pos == 0 else None)
        for i, method in enumerate(methods):
            s = stats[method, k]
            x = pos - 0.4 + width * (i + 0.5)
            ax.bxp([{"med": s["median"], "q1": s["q25"], "q3": s["q75"], "whislo": s["q01"],
                     "whishi": s["q99"], "fliers": []}], positions=[x], widths=width * 0.8,
                   showfliers=False, patch_artist=True,
                   boxprops={"facecolor": COLORS.get(method, f"C{i}"), "alpha": 0.7},
                   medianprops={"color": "k"})
            ax.plot([x, x], [s["min"], s["max"]], "x", color=COLORS.get(method, f"C{i}"), ms=4)
    if not any(bands.get(k) for k in ks):
        ax.text(0.02, 0.03, f"JL guarantee for these {n_points} points: none below eps = 1 "
                f"until k >= {math.ceil(24 * math.log(n_points))}", transform=ax.transAxes,
                fontsize=8, color="0.3")
    for i, method in enumerate(methods):  # legend entries for the boxes
        ax.bar([0], [0], bottom=1, color=COLORS.get(method, f"C{i}"), alpha=0.7, label=method)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlim(-0.6, len(ks) - 0.4)
    ax.set_yscale("log")
    ax.set_xlabel("k (output dimensions)")
    ax.set_ylabel(r"$\|f(x_i)-f(x_j)\|^2 / \|x_i-x_j\|^2$")
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    save_figure(fig, out)


def _write_csv(stats: Mapping[tuple[str, int], Mapping[str, float]], n_pairs: int,
               bands: Mapping[int, float | None], path: Path) -> Path:
    columns = [*QUANTILES, "mean", "std", "eps", "within_jl"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "k", "n_pairs", "jl_eps", *columns])
        for (method, k), s in stats.items():
            writer.writerow([method, k, n_pairs, bands.get(k, ""),
                             *(s.get(c, "") for c in columns)])
    return path


def randproj_report(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    task: pl.LightningModule,
    output_dir: str | Path,
    metrics: Mapping[str, Any],
    methods: Sequence[str] = ("gaussian", "sparse", "srht"),
    ks: Sequence[int] = (8, 16, 32),
    n_points: int = 1000,
    eps: Sequence[float] = (0.1, 0.2, 0.5),
) -> dict[str, Any]:
    """Measure each projection's distortion and train a classifier per method and ``k``.

    ``task`` is the trained model for ``(cfg.model.method, cfg.model.out_features)`` and
    ``metrics`` its metrics; every other pair is trained here (see the module docstring).
    Returns the new metrics.
    """
    output_dir = Path(output_dir)
    ks = sorted({int(k) for k in ks})
    methods = list(dict.fromkeys(methods))
    if "methods" not in cfg.model or "out_features" not in cfg.model:
        raise ValueError(f"randproj_report: expected a model with method, methods and "
                         f"out_features (model=randproj_classifier), got model keys "
                         f"{sorted(cfg.model)}")
    unknown = [m for m in methods if m not in cfg.model.methods]
    if not methods or unknown:
        raise ValueError(f"randproj_report: expected report.methods among "
                         f"{', '.join(cfg.model.methods)}, got {methods}")
    x_train, _ = split_data(datamodule, "train")
    x_test, _ = split_data(datamodule, "test")
    d = x_test.shape[1]
    if not ks or ks[0] < 1 or ks[-1] > d:
        raise ValueError(f"randproj_report: expected report.ks in [1, {d}] (the number of "
                         f"features), got {ks}")
    pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(cfg.seed))
    x = x_test[pick[:n_points]]
    n = len(x)

    out: dict[str, Any] = {"distortion/n_points": n, "jl/n_train": len(x_train)}
    out.update({f"jl/min_dim@eps={e:g}": johnson_lindenstrauss_min_dim(len(x_train), eps=e)
                for e in eps})
    bands = {k: jl_eps(k, n) for k in ks}
    out.update({f"jl/eps@k={k}": bands[k] for k in ks})
    stats: dict[tuple[str, int], dict[str, float]] = {}
    before = pairwise_sq_distances(x)
    keep = before > 0  # identical rows have no ratio
    n_pairs = int(keep.sum())
    for method in methods:
        cls = get_class(cfg.model.methods[method])
        for k in ks:
            proj = cls(d, k, seed=cfg.seed)
            with torch.no_grad():
                ratios = pairwise_sq_distances(proj(x))[keep] / before[keep]
            s = stats[method, k] = distortion_stats(ratios, bands[k])
            for name in ("min", "median", "max", "eps", "within_jl"):
                if name in s:
                    out[f"distortion/{name}@{method},k={k}"] = s[name]
    _write_csv(stats, n_pairs, bands, output_dir / DISTORTION_FILE)

    plots = output_dir / "plots"
    if cfg.get("plots", True):
        plots.mkdir(parents=True, exist_ok=True)
        _plot_distortion(stats, methods, ks, bands, n, plots / "distortion_vs_k.png",
                         f"{cfg.name}: distortion of {n_pairs:,} pairs of {n} test rows "
                         f"({d} features)")

    if cfg.get("test", True):
        own = (cfg.model.method, int(cfg.model.out_features))
        for method in methods:
            for k in ks:
                acc = metrics.get("test/acc") if (method, k) == own else train_variant(
                    cfg, output_dir / method / f"k={k}", f"{method} k={k}",
                    **{"model.method": method, "model.out_features": k}).get("test/acc")
                out[f"test/acc@{method},k={k}"] = acc
        if cfg.get("plots", True):
            plot_sweep({m: [(k, out[f"test/acc@{m},k={k}"]) for k in ks] for m in methods},
                       plots / "acc_vs_k.png", xlabel="k (output dimensions)",
                       ylabel="test accuracy", logx=True,
                       title=f"{cfg.name}: accuracy against k ({d} features)")
    # test metrics first, in the order of methods and ks, like the one-line summary shows them
    return dict(sorted(out.items(), key=lambda kv: not kv[0].startswith("test/")))
