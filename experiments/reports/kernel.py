r"""The kernel report: kernel heads on the raw inputs against the number of features.

With the RBF kernel :math:`k(x, y) = \exp(-\lVert x - y \rVert^2 / (2 l^2))` and :math:`l` the
median pairwise distance of (up to ``n_median``) training rows (or a given number), the report
measures the test accuracy of

- a head on ``D`` random Fourier features (``model.method=rff``) and on ``D`` Nystrom features
  (``model.method=nystrom``, landmarks fitted on the training split) for each ``D`` in
  ``features``, each trained by the same task and trainer settings (``<run dir>/M/D=D/``);
- the exact kernel ridge classifier :math:`\arg\max K(x, X) (K(X, X) + \alpha I)^{-1} Y`
  with :math:`Y` the one-hot training labels (``KernelRidgeHead``, float64, no training);
- a head on the raw inputs (``model.method=linear``) and, if ``deep_features``, a deep kernel
  (``model.method=deep``: MLP -> RFF with a learnable lengthscale -> head, trained end to end).

The main run (``cfg.model``) counts as whichever of these it is. Metrics:
``test/acc@M,D=D``, ``test/acc@kernel_ridge``, ``test/acc@linear``, ``test/acc@deep,D=D``,
``kernel/lengthscale`` and ``kernel/ridge_fit_s``. Plot: ``plots/acc_vs_features.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor

from experiments.fitted import split_data
from experiments.models import METHODS as METHODS
from experiments.plots import plot_sweep
from experiments.sweep import train_variant
from lamods.layers import KernelRidgeHead

log = logging.getLogger(__name__)


def median_distance(x: Tensor, n: int = 2000, seed: int = 0) -> float:
    """The median pairwise Euclidean distance among up to ``n`` rows of ``x`` (distinct pairs).

    Examples::

        >>> median_distance(torch.tensor([[0.0], [1.0], [3.0]]))
        2.0
    """
    if len(x) > n:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]
    x = x.double()
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return float(torch.cdist(x, x)[i, j].median())


def kernel_ridge_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                          lengthscale: float, alpha: float, num_classes: int) -> float:
    """Test accuracy of the RBF kernel ridge classifier on one-hot labels (float64)."""
    head = KernelRidgeHead("rbf", alpha=alpha, lengthscale=lengthscale, dtype=torch.float64)
    Y = torch.nn.functional.one_hot(y_train.long(), num_classes).double()
    head.fit(x_train.double(), Y)
    with torch.no_grad():
        pred = head(x_test.double()).argmax(-1)
    return float((pred == y_test.long()).double().mean())


def kernel_report(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    task: pl.LightningModule,
    output_dir: str | Path,
    metrics: Mapping[str, Any],
    methods: Sequence[str] = ("rff", "nystrom"),
    features: Sequence[int] = (64, 256, 1024),
    lengthscale: float | str = "median",
    n_median: int = 2000,
    alpha: float = 1e-2,
    deep_features: int | None = 256,
) -> dict[str, Any]:
    """Kernel heads against the number of features (see the module docstring)."""
    output_dir = Path(output_dir)
    features = sorted({int(d) for d in features})
    if "n_features" not in cfg.model or "method" not in cfg.model:
        raise ValueError(f"kernel_report: expected model=kernel_classifier, got model keys "
                         f"{sorted(cfg.model)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"kernel_report: unknown methods {unknown}; expected some of "
                         f"{METHODS}")
    if not features or features[0] < 1:
        raise ValueError(f"kernel_report: expected positive report.features, got {features}")
    x_train, y_train = split_data(datamodule, "train")
    x_test, y_test = split_data(datamodule, "test")
    if lengthscale == "median":
        ls = median_distance(x_train, n_median, seed=int(cfg.seed))
    else:
        ls = float(lengthscale)
    out: dict[str, Any] = {"kernel/lengthscale": ls}

    start = time.perf_counter()
    out["test/acc@kernel_ridge"] = kernel_ridge_accuracy(
        x_train, y_train, x_test, y_test, lengthscale=ls, alpha=alpha,
        num_classes=int(cfg.data.num_classes))
    out["kernel/ridge_fit_s"] = time.perf_counter() - start
    log.info("kernel_report: lengthscale %.4g, kernel ridge test accuracy %.4f",
             ls, out["test/acc@kernel_ridge"])

    if not cfg.get("test", True):
        return out
    own_method = str(cfg.model.method)
    own_d = int(cfg.model.n_features)

    def acc(method: str, d: int, path: Path) -> float | None:
        same_ls = method in ("linear", "deep") or float(cfg.model.lengthscale) == ls
        if method == own_method and (method == "linear" or d == own_d) and same_ls:
            return metrics.get("test/acc")
        return train_variant(cfg, path, f"{method} D={d}", **{
            "model.method": method, "model.n_features": d, "model.lengthscale": ls,
        }).get("test/acc")

    runs = []
    for m in methods:
        for d in features:
            if m == "nystrom" and d > len(x_train):
                log.warning("kernel_report: %d Nystrom landmarks > %d training rows; skipped",
                            d, len(x_train))
                continue
            runs.append((m, d))
    for m, d in runs:
        out[f"test/acc@{m},D={d}"] = acc(m, d, output_dir / m / f"D={d}")
    out["test/acc@linear"] = acc("linear", own_d, output_dir / "linear")
    if deep_features:
        d = int(deep_features)
        out[f"test/acc@deep,D={d}"] = acc("deep", d, output_dir / "deep" / f"D={d}")

    if cfg.get("plots", True):
        plots = output_dir / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        series = {f"{m} + linear head": [(d, out[f"test/acc@{m},D={d}"])
                                         for mm, d in runs if mm == m] for m in methods}
        span = [features[0], features[-1]]
        series["exact kernel ridge"] = [(d, out["test/acc@kernel_ridge"]) for d in span]
        series["linear head on inputs"] = [(d, out["test/acc@linear"]) for d in span]
        if deep_features:
            series["deep kernel"] = [(int(deep_features),
                                      out[f"test/acc@deep,D={int(deep_features)}"])]
        plot_sweep(series, plots / "acc_vs_features.png", xlabel="D (features or landmarks)",
                   ylabel="test accuracy", logx=True,
                   title=f"{cfg.name}: accuracy against D (l={ls:.3g})")
    # test metrics first, like the one-line summary shows them
    return dict(sorted(out.items(), key=lambda kv: not kv[0].startswith("test/")))
