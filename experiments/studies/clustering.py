r"""The clustering report: lamods' k-means and spectral clustering against scikit-learn's.

On the points :math:`X` of the chosen splits (all of digits by default; a seeded random
subset of at most ``max_samples``), with the true classes only used to score:

- ``kmeans``: :class:`lamods.classic.KMeans` (k-means++, ``n_init`` runs, Lloyd) against
  ``sklearn.cluster.KMeans`` with the same ``n_clusters``, ``n_init``, ``max_iter``, ``tol``;
- ``spectral``: :class:`lamods.classic.SpectralClustering` (affinity graph :math:`W`,
  :math:`L_{sym} = I - D^{-1/2} W D^{-1/2}`, its ``k`` smallest eigenvectors, k-means on the
  unit rows) against ``sklearn.cluster.SpectralClustering`` with the same affinity,
  ``gamma``/``n_neighbors`` and ``n_init``.

Each labelling is scored against the classes with the adjusted Rand index (0 for chance,
1 for the classes up to renaming) and normalized mutual information,

.. math::
    \text{ARI} = \frac{\text{RI} - \mathbb E[\text{RI}]}{\max \text{RI} - \mathbb E[\text{RI}]},
    \qquad \text{NMI} = \frac{I(Y; C)}{\tfrac12 (H(Y) + H(C))}.

Metrics: ``cluster/ari@M``, ``cluster/nmi@M`` and ``time/fit_s@M`` for ``M`` in ``kmeans``,
``sklearn_kmeans``, ``spectral``, ``sklearn_spectral``; ``cluster/inertia@kmeans`` and
``@sklearn_kmeans``; ``cluster/n_samples``. Plot: ``plots/clusters.png``, the points on
their first two principal components coloured by class, by our k-means and by our spectral
clusters, and our spectral embedding on its first two principal components by class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from sklearn import cluster
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from experiments.fitted import split_data
from experiments.plots import plt, save_figure
from lamods.classic import KMeans, SpectralClustering
from lamods.decomp import PCA

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("cluster/ari@kmeans", "cluster/ari@sklearn_kmeans", "cluster/ari@spectral",
            "cluster/ari@sklearn_spectral")
METHODS = ("kmeans", "sklearn_kmeans", "spectral", "sklearn_spectral")


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    fitted = fit()
    return fitted, time.perf_counter() - start


def _points(datamodule: pl.LightningDataModule, splits: Sequence[str], max_samples: int | None,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [split_data(datamodule, split) for split in splits]
    x = torch.cat([p[0] for p in parts]).double()
    y = torch.cat([p[1] for p in parts])
    if max_samples is not None and len(y) > max_samples:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_samples]
        x, y = x[keep], y[keep]
    return x, y


def matched(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` renamed to the classes they overlap most (Hungarian matching on the
    contingency table), so a cluster is drawn in the colour of its class.

    Examples::

        >>> matched(np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 1])).tolist()
        [0, 0, 1, 1, 2]
    """
    from scipy.optimize import linear_sum_assignment

    n = int(max(classes.max(), labels.max())) + 1
    table = np.zeros((n, n), dtype=np.int64)
    np.add.at(table, (labels, classes), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = dict(zip(rows.tolist(), cols.tolist()))
    return np.array([mapping[int(v)] for v in labels])


def _plot(x: torch.Tensor, classes: np.ndarray, labels: Mapping[str, np.ndarray],
          scores: Mapping[str, float], embedding: np.ndarray, out: Path, title: str) -> None:
    pca = PCA(2, dtype=torch.float64).fit(x)
    points = pca.transform(x).numpy()
    var = pca.explained_variance_ratio_.tolist()
    panels = [("true classes", points, classes, f"PC 1 ({var[0]:.0%})", f"PC 2 ({var[1]:.0%})"),
              *((f"{name} (ARI {scores[name]:.3f})", points, matched(classes, lab),
                 f"PC 1 ({var[0]:.0%})", f"PC 2 ({var[1]:.0%})") for name, lab in labels.items()),
              ("spectral embedding (ours), true classes", embedding, classes,
               "embedding PC 1", "embedding PC 2")]
    n_classes = int(classes.max()) + 1
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 9))
    for ax, (name, pts, colour, xlabel, ylabel) in zip(axes.flat, panels):
        ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap=cmap, s=5, alpha=0.7,
                   vmin=-0.5, vmax=cmap.N - 0.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.2)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(c), label=str(c))
               for c in range(n_classes)]
    axes.flat[0].legend(handles=handles, title="class", fontsize=7, title_fontsize=8,
                        ncol=2, loc="best", framealpha=0.8)
    fig.suptitle(f"{title}\nclusters drawn in the colour of the class they overlap most")
    save_figure(fig, out)


def clustering_study(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    output_dir: str | Path,
    n_clusters: int | None = None,
    splits: Sequence[str] = ("train", "val", "test"),
    max_samples: int | None = 5000,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    affinity: str = "nearest_neighbors",
    gamma: float = 1.0,
    n_neighbors: int = 10,
) -> dict[str, Any]:
    """Cluster the data with ours and scikit-learn's (see the module docstring).

    ``n_clusters`` defaults to ``data.num_classes``. Logs each method's fit as it ends.
    Returns the study's metrics.
    """
    k = int(n_clusters or cfg.data.num_classes)
    x, y = _points(datamodule, list(splits), max_samples, cfg.seed)
    x_np, classes = x.numpy(), y.numpy()
    seed = int(cfg.seed)
    graph = {"gamma": gamma} if affinity == "rbf" else {"n_neighbors": n_neighbors}

    fits = {
        "kmeans": lambda: KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
                                 dtype=torch.float64).fit(x),
        "sklearn_kmeans": lambda: cluster.KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol,
                                                 random_state=seed).fit(x_np),
        "spectral": lambda: SpectralClustering(k, affinity=affinity, n_init=n_init, seed=seed,
                                               dtype=torch.float64, **graph).fit(x),
        "sklearn_spectral": lambda: cluster.SpectralClustering(
            k, affinity=affinity, n_init=n_init, random_state=seed, **graph).fit(x_np),
    }
    out: dict[str, Any] = {"cluster/n_samples": len(classes), "cluster/n_clusters": k}
    models, labels = {}, {}
    for name, fit in fits.items():
        models[name], seconds = _timed(fit)
        found = models[name].labels_
        labels[name] = found.numpy() if isinstance(found, torch.Tensor) else np.asarray(found)
        out[f"cluster/ari@{name}"] = float(adjusted_rand_score(classes, labels[name]))
        out[f"cluster/nmi@{name}"] = float(normalized_mutual_info_score(classes, labels[name]))
        out[f"time/fit_s@{name}"] = round(seconds, 4)
        log.info("clustering: %s on %d points: ARI %.3f, NMI %.3f, %.2f s", name, len(classes),
                 out[f"cluster/ari@{name}"], out[f"cluster/nmi@{name}"], seconds)
    out["cluster/inertia@kmeans"] = float(models["kmeans"].inertia_)
    out["cluster/inertia@sklearn_kmeans"] = float(models["sklearn_kmeans"].inertia_)

    if cfg.get("plots", True):
        embedding = models["spectral"].embedding_
        embedding = PCA(2, dtype=torch.float64).fit(embedding).transform(embedding).numpy()
        _plot(x, classes, {"k-means (ours)": labels["kmeans"],
                           "spectral (ours)": labels["spectral"]},
              {"k-means (ours)": out["cluster/ari@kmeans"],
               "spectral (ours)": out["cluster/ari@spectral"]},
              embedding, Path(output_dir) / "plots" / "clusters.png",
              f"{cfg.name}: {len(classes):,} points, k={k}")
    return out
