r"""The linear-regression report: normal equation, gradient descent and scikit-learn.

On the training split :math:`(X, y)` (float64), with :math:`X_c, y_c` centred (the intercept
:math:`c = \bar y - \bar x^T b` is not penalised), the report fits

- ``normal_eq``: :class:`lamods.classic.LinearRegression` in closed form,
  :math:`b = (X_c^T X_c)^{-1} X_c^T y_c` (``method``: Cholesky of the normal equations, or
  QR / SVD);
- ``gd``: the same model by full-batch gradient descent on
  :math:`J(b) = \frac{1}{2m} \|X_c b - y_c\|^2` from :math:`b = 0` with step :math:`1/L`,
  :math:`L = \lambda_{max}(X_c^T X_c)/m` (``fit_gd``), ``gd_iters`` steps;
- ``sklearn``: ``sklearn.linear_model.LinearRegression``;
- ``ridge`` and ``sklearn_ridge``: :class:`lamods.classic.RidgeRegression` and
  ``sklearn.linear_model.Ridge`` with penalty ``alpha``.

Metrics on the held-out test split: ``test/mse@M`` and ``test/r2@M``
(:math:`R^2 = 1 - \|y - \hat y\|^2 / \|y - \bar y\|^2`); ``linreg/coef@M`` and
``linreg/intercept@M``; ``linreg/max_coef_diff@M``, the largest
:math:`|b_i - b_i^{sklearn}|` against scikit-learn's same model; ``time/fit_s@M``; for
gradient descent ``linreg/train_loss@gd`` (:math:`J` at the end) against the optimum
``linreg/train_loss@normal_eq``. Plot: ``plots/loss_curve.png``, :math:`J(b_t)` and
:math:`J(b_t) - J^*` against the step, with the closed-form optimum :math:`J^*`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from sklearn import linear_model

from experiments.fitted import split_data
from experiments.plots import plt, save_figure
from lamods.classic import LinearRegression, RidgeRegression

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("test/r2@normal_eq", "test/r2@gd", "test/r2@sklearn", "test/r2@ridge",
            "linreg/max_coef_diff@normal_eq")
METHODS = ("normal_eq", "gd", "sklearn", "ridge", "sklearn_ridge")
#: the scikit-learn model each of ours is compared with
REFERENCE = {"normal_eq": "sklearn", "gd": "sklearn", "ridge": "sklearn_ridge"}


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    fitted = fit()
    return fitted, time.perf_counter() - start


def _coef(model: Any) -> tuple[np.ndarray, float]:
    coef, intercept = model.coef_, model.intercept_
    if isinstance(coef, torch.Tensor):
        coef, intercept = coef.numpy(), intercept.item()
    return np.asarray(coef, dtype=np.float64), float(intercept)


def _plot_loss(curve: np.ndarray, optimum: float, out: Path, title: str) -> None:
    steps = np.arange(1, len(curve) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(steps, curve, label="gradient descent J(b_t)")
    left.axhline(optimum, color="tab:red", ls="--", label=f"normal equation J* = {optimum:.5g}")
    left.set_xscale("log")
    left.set_ylabel("J = ||X b - y||^2 / 2m (training)")
    # below eps * J* the gap is rounding: draw it at that floor
    floor = np.finfo(np.float64).eps * abs(optimum)
    right.plot(steps, np.clip(curve - optimum, floor, None), color="tab:green")
    right.set_yscale("log")
    right.set_ylim(bottom=floor / 2)
    right.set_ylabel("J(b_t) - J* (floor: rounding)")
    for ax in (left, right):
        ax.set_xlabel("step t")
        ax.grid(alpha=0.3)
    left.legend()
    fig.suptitle(title)
    save_figure(fig, out)


def linreg_study(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    output_dir: str | Path,
    method: str = "cholesky",
    gd_iters: int = 10000,
    gd_lr: float | None = None,
    alpha: float = 1.0,
) -> dict[str, Any]:
    """Fit the linear models and compare them (see the module docstring).

    Returns the study's metrics.
    """
    x, y = (t.double() for t in split_data(datamodule, "train"))
    x_test, y_test = (t.double() for t in split_data(datamodule, "test"))
    x_np, y_np = x.numpy(), y.numpy()
    fits = {
        "normal_eq": lambda: LinearRegression(method=method, dtype=torch.float64).fit(x, y),
        "gd": lambda: LinearRegression(dtype=torch.float64).fit_gd(x, y, lr=gd_lr,
                                                                  n_iter=gd_iters),
        "sklearn": lambda: linear_model.LinearRegression().fit(x_np, y_np),
        "ridge": lambda: RidgeRegression(alpha, method=method, dtype=torch.float64).fit(x, y),
        "sklearn_ridge": lambda: linear_model.Ridge(alpha).fit(x_np, y_np),
    }
    out: dict[str, Any] = {}
    models, coefs, info = {}, {}, {}
    for name, fit in fits.items():
        models[name], seconds = _timed(fit)
        coefs[name] = _coef(models[name])
        pred = np.asarray(models[name].predict(x_test if "sklearn" not in name
                                               else x_test.numpy()), dtype=np.float64)
        err = y_test.numpy() - pred
        out[f"test/mse@{name}"] = float(np.mean(err ** 2))
        out[f"test/r2@{name}"] = float(1 - np.sum(err ** 2)
                                       / np.sum((y_test.numpy() - y_test.numpy().mean()) ** 2))
        info[f"time/fit_s@{name}"] = round(seconds, 4)
        log.info("linreg: %s fitted in %.3f s, test R^2 %.4f", name, seconds,
                 out[f"test/r2@{name}"])
    for name, ref in REFERENCE.items():
        info[f"linreg/max_coef_diff@{name}"] = float(np.abs(coefs[name][0] - coefs[ref][0]).max())
        info[f"linreg/intercept_diff@{name}"] = abs(coefs[name][1] - coefs[ref][1])
    curve = models["gd"].loss_curve_.numpy()
    xc, yc = x - x.mean(0), y - y.mean()
    b = models["normal_eq"].coef_
    optimum = float((xc @ b - yc).square().sum() / (2 * len(y)))
    info.update({"linreg/train_loss@normal_eq": optimum,
                 "linreg/train_loss@gd": float(curve[-1]),
                 "linreg/gd_iters": int(models["gd"].n_iter_),
                 "linreg/n_train": len(y), "linreg/n_test": len(y_test)})
    for name in METHODS:
        info[f"linreg/coef@{name}"] = coefs[name][0].tolist()
        info[f"linreg/intercept@{name}"] = coefs[name][1]
    out.update(info)
    if cfg.get("plots", True):
        _plot_loss(curve, optimum, Path(output_dir) / "plots" / "loss_curve.png",
                   f"{cfg.name}: gradient descent vs the normal equation ({len(y)} rows)")
    return out
