r"""Eigen and spectral pictures: how fast power iteration and Lanczos find the top eigenpair as
the eigengap shrinks, and the Fiedler vector of a graph Laplacian cutting a graph in two.

**Convergence against the eigengap.** :math:`A = Q \operatorname{diag}(\lambda) Q^T`
(``n x n``, random orthogonal :math:`Q`) with :math:`\lambda_1 = 1`,
:math:`\lambda_2 = 1 - g` (the gap :math:`g`) and the rest uniform in
:math:`[0, \lambda_2]`. For each number of iterations :math:`t`,
:func:`lamods.topk_eigh` (``k=1``, no oversampling, the same random start :math:`\omega`)
with ``method="power"`` (:math:`x = A^{t+1} \omega`, then its Rayleigh quotient) and
``method="lanczos"`` (Rayleigh-Ritz on the Krylov space
:math:`\operatorname{span}\{\omega, A\omega, \dots, A^t \omega\}`); the error
:math:`(\lambda_1 - \hat\lambda)/(\lambda_1 - \lambda_n)` against the classical bounds, with
:math:`\tan\theta_0` the angle between :math:`\omega` and the top eigenvector:

.. math::
    \text{power:}\quad \tan^2\theta_0 \Big(\frac{\lambda_2}{\lambda_1}\Big)^{2(t+1)},
    \qquad
    \text{Lanczos:}\quad \Big(\frac{\tan\theta_0}{T_t(1 + 2\gamma)}\Big)^2, \quad
    \gamma = \frac{\lambda_1 - \lambda_2}{\lambda_2 - \lambda_n},

:math:`T_t` the Chebyshev polynomial of degree :math:`t` (Saad, *Numerical Methods for Large
Eigenvalue Problems*, 2011, Thm. 6.4). The power error shrinks like :math:`e^{-2gt}`, Lanczos'
like :math:`e^{-4\sqrt{\gamma} t}`: a hundred times smaller gap costs power iteration a
hundred times more iterations, Lanczos ten.

**The Fiedler vector.** Two interleaved half-moons (scikit-learn's ``make_moons``), their
k-nearest-neighbour graph :math:`W` and its Laplacian :math:`L = D - W`
(:func:`lamods.classic.laplacian`), decomposed by :func:`lamods.eigh`. :math:`L` is positive
semi-definite, :math:`x^T L x = \tfrac12 \sum_{ij} W_{ij} (x_i - x_j)^2`, with one zero
eigenvalue per connected component (eigenvector :math:`\mathbf 1`). The eigenvector of the
second smallest eigenvalue :math:`\lambda_2` (the algebraic connectivity), the Fiedler vector
:math:`f = \arg\min_{x \perp \mathbf 1, \|x\| = 1} x^T L x`, is the relaxed minimum ratio cut:
its signs split the graph in two.

Metrics: ``spectral/error@{power,lanczos}_g{g}`` (lists over ``spectral/iterations``) with
their ``spectral/bound@...``; ``spectral/iters_to_tol@{method}_g{g}`` (first ``t`` of the grid
reaching ``tol``, or null); ``spectral/fiedler_accuracy`` (the sign split against the two
moons), ``spectral/lambda2``, ``spectral/cut_edges``, ``spectral/n_components``. Plots:
``plots/power_vs_lanczos.png``, ``plots/fiedler.png``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.datasets import make_moons

from experiments.plots import plt, save_figure
from lamods import eigh, topk_eigh
from lamods.classic import affinity_matrix, laplacian

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("spectral/iters_to_tol@power_g0.01", "spectral/iters_to_tol@lanczos_g0.01",
            "spectral/fiedler_accuracy", "spectral/lambda2")


def chebyshev(t: int, x: float) -> float:
    """:math:`T_t(x) = \\cosh(t \\operatorname{arccosh} x)` for :math:`x \\ge 1`.

    Examples::

        >>> chebyshev(2, 3.0)   # T_2(x) = 2 x^2 - 1
        17.0
    """
    return math.cosh(t * math.acosh(x))


def spiked_matrix(n: int, gap: float, generator: torch.Generator) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """``(A, eigenvalues)``: :math:`Q \\operatorname{diag}(\\lambda) Q^T` with
    :math:`\\lambda_1 = 1`, :math:`\\lambda_2 = 1 - g`, the rest uniform in :math:`[0, 1 - g]`
    (descending).

    Examples::

        >>> A, lam = spiked_matrix(50, 0.1, torch.Generator().manual_seed(0))
        >>> [round(v, 6) for v in torch.linalg.eigvalsh(A)[-2:].tolist()]
        [0.9, 1.0]
    """
    rest = (1 - gap) * torch.rand(n - 2, generator=generator, dtype=torch.float64)
    lam = torch.cat([torch.tensor([1.0, 1.0 - gap], dtype=torch.float64),
                     rest.sort(descending=True).values])
    Q = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64)).Q
    return (Q * lam) @ Q.mT, lam


def convergence(A: torch.Tensor, lam: torch.Tensor, iterations: Sequence[int],
                seed: int) -> dict[str, list[float]]:
    """Errors of ``topk_eigh`` (power, Lanczos) after each ``t`` in ``iterations`` and the
    two bounds (module docstring), from the same start ``omega`` (seed ``seed``)."""
    n = A.shape[0]
    l1, l2, ln = float(lam[0]), float(lam[1]), float(lam[-1])
    # the start block lamods draws: N(0, 1) in float64 from a generator seeded with `seed`
    omega = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v1 = torch.linalg.eigh(A).eigenvectors[:, -1:]
    cos0 = float((v1.mT @ omega).abs() / omega.norm())
    tan2 = (1 - cos0 ** 2) / cos0 ** 2
    gamma = (l1 - l2) / (l2 - ln)
    out: dict[str, list[float]] = {}
    for t in iterations:
        for method in ("power", "lanczos"):
            top = topk_eigh(A, 1, method=method, n_iter=int(t), oversamples=0,
                            generator=torch.Generator().manual_seed(seed))
            out.setdefault(method, []).append((l1 - float(top.eigenvalues[0])) / (l1 - ln))
        # (lambda_1 - theta)/(lambda_1 - lambda_n) <= tan^2 theta_0 (lambda_2/lambda_1)^(2(t+1))
        out.setdefault("power_bound", []).append(tan2 * (l2 / l1) ** (2 * (t + 1)))
        # <= (tan theta_0 / T_t(1 + 2 gamma))^2, with 1/T_t(x)^2 = 4 e^(-2a)/(1 + e^(-2a))^2,
        # a = t arccosh(x) (no overflow for large t)
        a = int(t) * math.acosh(1 + 2 * gamma)
        out.setdefault("lanczos_bound", []).append(
            tan2 * 4 * math.exp(-2 * a) / (1 + math.exp(-2 * a)) ** 2)
    return out


def fiedler(n_samples: int, noise: float, n_neighbors: int, seed: int) -> dict[str, Any]:
    """The two-moons graph, its Laplacian spectrum and Fiedler vector (module docstring)."""
    X_np, y = make_moons(n_samples, noise=noise, random_state=seed)
    X = torch.from_numpy(X_np)
    W = affinity_matrix(X, affinity="nearest_neighbors", n_neighbors=n_neighbors)
    W = W * (1 - torch.eye(len(y), dtype=W.dtype))  # no self loops (they cancel in D - W)
    L, _ = laplacian(W, "unnormalized")
    lam, U = eigh(L)
    f = U[:, 1]  # the Fiedler vector: eigenvector of the second smallest eigenvalue
    split = (f > 0).long().numpy()
    accuracy = max(float((split == y).mean()), float((split != y).mean()))
    cut = float(W[torch.from_numpy(split == 1)][:, torch.from_numpy(split == 0)].sum())
    tol = 1e-9 * float(lam[-1])
    return {"X": X_np, "y": y, "W": W, "eigenvalues": lam, "f": f, "split": split,
            "accuracy": accuracy, "cut": cut,
            "n_components": int((lam <= tol).sum())}


def _plot_convergence(curves: dict[float, dict[str, list[float]]], iterations: Sequence[int],
                      shown: Sequence[float], tol: float,
                      to_tol: dict[str, dict[float, int | None]], out: Path, title: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    floor = 1e-16
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(shown)))
    for gap, colour in zip(shown, colours):
        c = curves[gap]
        left.semilogy(iterations, np.maximum(c["power"], floor), "-", color=colour,
                      label=f"power, gap {gap:g}")
        left.semilogy(iterations, np.maximum(c["lanczos"], floor), "--", color=colour,
                      label=f"Lanczos, gap {gap:g}")
        left.semilogy(iterations, np.maximum(c["power_bound"], floor), ":", color=colour, lw=0.8)
        left.semilogy(iterations, np.maximum(c["lanczos_bound"], floor), "-.", color=colour,
                      lw=0.8)
    left.plot([], [], "k:", lw=0.8, label="power bound")
    left.plot([], [], "k-.", lw=0.8, label="Lanczos bound")
    left.set_xscale("log")
    left.set_ylim(floor / 2, 10)
    left.set_xlabel("iterations t (products with A)")
    left.set_ylabel("(lambda_1 - lambda_hat) / (lambda_1 - lambda_n)")
    left.legend(fontsize=7, ncol=2)
    for method, marker in (("power", "o"), ("lanczos", "s")):
        gaps = [g for g, t in to_tol[method].items() if t is not None]
        right.loglog(gaps, [to_tol[method][g] for g in gaps], marker + "-", label=method)
    gaps = np.asarray(sorted(to_tol["power"]))
    right.loglog(gaps, 1 / gaps * (to_tol["power"][gaps[-1]] or 1) * gaps[-1], "k:", lw=0.8,
                 label="slope -1 (1/gap)")
    right.loglog(gaps, 1 / np.sqrt(gaps) * (to_tol["lanczos"][gaps[-1]] or 1)
                 * np.sqrt(gaps[-1]), "k--", lw=0.8, label="slope -1/2 (1/sqrt(gap))")
    right.set_xlabel("eigengap g = lambda_1 - lambda_2")
    right.set_ylabel(f"iterations to error < {tol:g} (grid)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    save_figure(fig, out)


def _plot_fiedler(res: dict[str, Any], out: Path, title: str) -> None:
    X, y, f = res["X"], res["y"], res["f"].numpy()
    W = res["W"].numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    rows, cols = np.nonzero(np.triu(W))
    for i, j in zip(rows, cols):
        ax.plot(X[[i, j], 0], X[[i, j], 1], color="0.8", lw=0.4, zorder=0)
    vmax = np.abs(f).max()
    sc = ax.scatter(X[:, 0], X[:, 1], c=f, cmap="coolwarm", vmin=-vmax, vmax=vmax, s=14)
    fig.colorbar(sc, ax=ax, label="Fiedler vector f_i")
    ax.set_title(f"kNN graph coloured by the Fiedler vector\n(its signs match the moons for "
                 f"{res['accuracy']:.1%} of the points)", fontsize=9)
    ax = axes[1]
    order = np.argsort(f)
    ax.scatter(np.arange(len(f)), f[order], c=y[order], cmap="coolwarm", s=6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("nodes, sorted by f_i (colour: true moon)")
    ax.set_ylabel("f_i")
    ax.set_title("sorted Fiedler vector: the cut is at f = 0", fontsize=9)
    ax = axes[2]
    lam = res["eigenvalues"][:12].numpy()
    ax.plot(np.arange(1, len(lam) + 1), lam, "o-")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue of L = D - W")
    ax.set_title(f"smallest eigenvalues of L: {res['n_components']} zero one(s) (components),"
                 f"\nlambda_2 = {lam[1]:.4f} (algebraic connectivity)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, out)


def spectral_study(
    *,
    cfg: DictConfig,
    datamodule: Any,
    output_dir: str | Path,
    n: int = 300,
    gaps: Sequence[float] = (0.1, 0.03, 0.01, 0.003, 0.001),
    shown: Sequence[float] = (0.1, 0.01, 0.001),
    max_iter: int = 3000,
    n_points: int = 30,
    tol: float = 1e-8,
    n_samples: int = 300,
    noise: float = 0.06,
    n_neighbors: int = 10,
) -> dict[str, Any]:
    """The convergence sweep and the Fiedler split (see the module docstring)."""
    seed = int(cfg.seed)
    g = torch.Generator().manual_seed(seed)
    iterations = sorted({int(round(v)) for v in np.logspace(0, math.log10(max_iter), n_points)})
    out: dict[str, Any] = {"spectral/iterations": iterations}
    curves: dict[float, dict[str, list[float]]] = {}
    to_tol: dict[str, dict[float, int | None]] = {"power": {}, "lanczos": {}}
    for gap in gaps:
        A, lam = spiked_matrix(n, float(gap), g)
        curves[gap] = convergence(A, lam, iterations, seed)
        for method in ("power", "lanczos"):
            errs = curves[gap][method]
            first = next((t for t, e in zip(iterations, errs) if e < tol), None)
            to_tol[method][gap] = first
            out[f"spectral/error@{method}_g{gap:g}"] = errs
            out[f"spectral/bound@{method}_g{gap:g}"] = curves[gap][f"{method}_bound"]
            out[f"spectral/iters_to_tol@{method}_g{gap:g}"] = first
        log.info("spectral: gap %g: error < %g after %s power iterations, %s Lanczos steps",
                 gap, tol, to_tol["power"][gap], to_tol["lanczos"][gap])
    res = fiedler(n_samples, noise, n_neighbors, seed)
    out.update({"spectral/fiedler_accuracy": res["accuracy"],
                "spectral/lambda2": float(res["eigenvalues"][1]),
                "spectral/cut_edges": res["cut"], "spectral/n_components": res["n_components"]})
    log.info("spectral: two moons (%d points, %d-NN graph): lambda_2 = %.4g, the Fiedler "
             "vector's signs match the moons for %.1f%% of the points, cutting %.1f edges",
             n_samples, n_neighbors, out["spectral/lambda2"], 100 * res["accuracy"], res["cut"])
    if cfg.get("plots", True):
        _plot_convergence(curves, iterations, [s for s in shown if s in curves], tol, to_tol,
                          Path(output_dir) / "plots" / "power_vs_lanczos.png",
                          f"{cfg.name}: top eigenvalue of a {n} x {n} matrix, power iteration "
                          "vs Lanczos")
        _plot_fiedler(res, Path(output_dir) / "plots" / "fiedler.png",
                      f"{cfg.name}: the Fiedler vector of a {n_neighbors}-NN graph splits the "
                      "two moons")
    return out
