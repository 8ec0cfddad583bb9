r"""The PCA report: spectrum, 2-D scatter, reconstructions and accuracy against ``k``.

With :math:`\mu` and the principal axes :math:`V` (rows, by decreasing variance
:math:`\lambda_i`) of the training split, the report measures for each ``k`` in ``ks``:

.. math::
    \text{explained}(k) = \frac{\sum_{i \le k} \lambda_i}{\sum_i \lambda_i}, \qquad
    \hat x_k = \mu + (x - \mu) V_k^T V_k, \qquad
    \text{mse}(k) = \frac{1}{N d} \sum_{n} \lVert x_n - \hat x_{k,n} \rVert^2 \text{ (test split)},

and the test accuracy of the model with ``model.n_components = k`` (``PCA`` fitted on the
training split, frozen, then the head; trained by the same task and trainer settings).

Metrics: ``test/acc@k=K``, ``pca/explained@k=K``, ``pca/test_mse@k=K`` and ``pca/k@var=V``
(the fewest components explaining a fraction ``V``). Files: ``pca_spectrum.csv`` (every
component's variance and ratio), ``plots/explained_variance.png``, ``plots/pca_scatter.png``,
``plots/reconstructions.png`` (square images only) and ``plots/acc_vs_k.png``; the classifier
for each ``k`` other than the model's own leaves its run directory in ``<run dir>/k=K/``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor

from experiments.fitted import split_data
from experiments.plots import plot_sweep, plt, save_figure
from experiments.sweep import train_variant
from lamods.decomp import PCA

log = logging.getLogger(__name__)

SPECTRUM_FILE = "pca_spectrum.csv"


def reconstruct(model: PCA, x: Tensor, k: int) -> Tensor:
    r""":math:`\hat x_k = \mu + (x - \mu) V_k^T V_k`: the first ``k`` axes of a fitted ``model``.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 5, dtype=torch.float64)
        >>> model = PCA(dtype=torch.float64).fit(x)
        >>> torch.allclose(reconstruct(model, x, 5), x)
        True
        >>> two = PCA(2, dtype=torch.float64).fit(x)
        >>> torch.allclose(reconstruct(model, x, 2), two.inverse_transform(two(x)))
        True
    """
    V = model.components_[:k]
    return (x - model.mean_) @ V.mT @ V + model.mean_


def write_spectrum(model: PCA, path: Path) -> Path:
    """``component, explained_variance, ratio, cumulative`` of a fitted ``model`` as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cumulative = model.explained_variance_ratio_.cumsum(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["component", "explained_variance", "ratio", "cumulative"])
        for i, (ev, r, c) in enumerate(zip(model.explained_variance_.tolist(),
                                           model.explained_variance_ratio_.tolist(),
                                           cumulative.tolist()), start=1):
            writer.writerow([i, ev, r, c])
    return path


def _plot_spectrum(model: PCA, ks: Sequence[int], out: Path, title: str) -> None:
    ratio = model.explained_variance_ratio_.numpy()
    # show the components that carry the variance (99.9 %, and at least the largest k), not
    # hundreds of ~1e-30 ratios past the data's rank (MNIST: 784 components)
    shown = max(int(np.searchsorted(ratio.cumsum(), 0.999)) + 1, max(ks, default=1))
    ratio = ratio[:min(shown, len(ratio))]
    idx = np.arange(1, len(ratio) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if len(ratio) <= 80:
        ax.bar(idx, ratio, width=1.0, color="tab:blue", alpha=0.6, label="per component")
    else:
        ax.plot(idx, ratio, color="tab:blue", label="per component")
    ax.set_xlim(0.5, len(ratio) + 0.5)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.set_yscale("log")
    # components past the rank have ratio ~1e-30: keep the axis on the informative part
    ax.set_ylim(bottom=max(ratio[ratio > 0].min(), ratio.max() * 1e-8) / 2)
    cum = ax.twinx()
    cum.plot(idx, model.explained_variance_ratio_.numpy().cumsum()[:len(ratio)], color="tab:red",
             label="cumulative")
    cum.set_ylim(0, 1.02)
    cum.set_ylabel("cumulative", color="tab:red")
    for k in ks:
        cum.axvline(k, color="gray", lw=0.6, ls=":")
    ax.set_title(title)
    save_figure(fig, out)


def _plot_scatter(scores: np.ndarray, labels: np.ndarray, model: PCA, out: Path,
                  title: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    points = ax.scatter(scores[:, 0], scores[:, 1], c=labels, cmap="tab10", s=6, alpha=0.7,
                        vmin=-0.5, vmax=9.5 if labels.max() < 10 else None)
    fig.colorbar(points, ax=ax, label="class", ticks=sorted(set(labels.tolist())))
    r = model.explained_variance_ratio_.tolist()
    ax.set_xlabel(f"PC 1 ({r[0]:.1%} of the variance)")
    ax.set_ylabel(f"PC 2 ({r[1]:.1%})")
    ax.set_title(title)
    save_figure(fig, out)


def _plot_reconstructions(x: Tensor, recs: Mapping[int, Tensor], side: int, out: Path,
                          title: str) -> None:
    rows = [("original", x), *((f"k={k}", r) for k, r in recs.items())]
    n = len(x)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 0.8, 1.1 * len(rows)),
                             squeeze=False)
    for (label, images), row in zip(rows, axes):
        for image, ax in zip(images, row):
            pixels = image.reshape(side, side).clamp(0, 1).float().numpy()
            ax.imshow(pixels, cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    save_figure(fig, out)


def pca_report(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    task: pl.LightningModule,
    output_dir: str | Path,
    metrics: Mapping[str, Any],
    ks: Sequence[int] = (2, 4, 8, 16, 32, 64),
    n_images: int = 8,
    n_scatter: int = 2000,
    variance_levels: Sequence[float] = (0.9, 0.95, 0.99),
) -> dict[str, Any]:
    """Fit PCA on the training split and report on it (see the module docstring).

    ``task`` is the trained model for ``k = cfg.model.n_components`` and ``metrics`` its
    metrics; every other ``k`` in ``ks`` is trained here. Returns the new metrics.
    """
    output_dir = Path(output_dir)
    ks = sorted({int(k) for k in ks})
    x_train, _ = split_data(datamodule, "train")
    x_test, y_test = split_data(datamodule, "test")
    d = x_train.shape[1]
    if not ks or ks[0] < 1 or ks[-1] > min(len(x_train), d):
        raise ValueError(f"pca_report: expected report.ks in [1, {min(len(x_train), d)}] "
                         f"(min(n_train, n_features)), got {ks}")
    if "n_components" not in cfg.model:
        raise ValueError(f"pca_report: expected a model with n_components "
                         f"(model=pca_classifier), got model keys {sorted(cfg.model)}")
    # every component, in float64: the ratios then sum to 1 up to rounding
    x_train, x_test = x_train.double(), x_test.double()
    full = PCA(dtype=torch.float64).fit(x_train)
    write_spectrum(full, output_dir / SPECTRUM_FILE)
    cumulative = full.explained_variance_ratio_.cumsum(0)

    out: dict[str, Any] = {}
    for level in variance_levels:
        out[f"pca/k@var={level:g}"] = int(torch.searchsorted(
            cumulative, torch.tensor(level, dtype=cumulative.dtype))) + 1
    recs = {k: reconstruct(full, x_test, k) for k in ks}
    out.update({f"pca/explained@k={k}": float(cumulative[k - 1]) for k in ks})
    out.update({f"pca/test_mse@k={k}": float((x_test - recs[k]).pow(2).mean()) for k in ks})

    plots = output_dir / "plots"
    if cfg.get("plots", True):
        plots.mkdir(parents=True, exist_ok=True)
        _plot_spectrum(full, ks, plots / "explained_variance.png",
                       f"{cfg.name}: PCA spectrum of {len(x_train):,} training rows")
        pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(cfg.seed))
        pick = pick[:n_scatter]
        _plot_scatter(full.transform(x_test[pick])[:, :2].float().numpy(), y_test[pick].numpy(),
                      full,
                      plots / "pca_scatter.png", f"{cfg.name}: test split on 2 components")
        side = math.isqrt(d)
        if side * side == d:
            show = pick[:n_images]
            _plot_reconstructions(x_test[show], {k: r[show] for k, r in recs.items()}, side,
                                  plots / "reconstructions.png",
                                  f"{cfg.name}: reconstructions from k components")
        else:
            log.info("pca_report: %d features are not a square image; no reconstructions.png", d)

    if cfg.get("test", True):
        own = int(cfg.model.n_components)
        for k in ks:
            acc = metrics.get("test/acc") if k == own else \
                train_variant(cfg, output_dir / f"k={k}", f"k={k}",
                              **{"model.n_components": k}).get("test/acc")
            out[f"test/acc@k={k}"] = acc
        if cfg.get("plots", True):
            plot_sweep({"test accuracy": [(k, out[f"test/acc@k={k}"]) for k in ks],
                        "explained variance": [(k, out[f"pca/explained@k={k}"]) for k in ks]},
                       plots / "acc_vs_k.png", xlabel="k (principal components)",
                       ylabel="test accuracy / explained variance", logx=True,
                       title=f"{cfg.name}: accuracy against k")
    # test metrics first, in the order of ks, like the one-line summary shows them
    return dict(sorted(out.items(), key=lambda kv: not kv[0].startswith("test/")))
