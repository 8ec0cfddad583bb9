r"""The numerical-stability lab: how rounding errors grow with the condition number, and the
algorithms that keep them small. Every curve is drawn beside its first-order bound.

:math:`u` is the unit roundoff (``torch.finfo(dtype).eps / 2``: :math:`1.1 \times 10^{-16}` in
float64, :math:`6 \times 10^{-8}` in float32) and :math:`\kappa(A) = s_{max}/s_{min}` the
condition number. A backward-stable algorithm solves a nearby problem exactly, so its
forward error is at most about :math:`\kappa \cdot u` (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2002, Sec. 1.6). The bounds drawn are first order and leave out the
modest constants that grow with the dimension (:math:`c_n u` instead of :math:`u`): the
curves may sit a little above them where :math:`\kappa` is small, and follow their slope.
Matrices with a set :math:`\kappa`:
:math:`A = U \operatorname{diag}(s) V^T` with random orthogonal :math:`U, V` and :math:`s`
geometric from 1 to :math:`1/\kappa`; and Hilbert matrices :math:`H_{ij} = 1/(i + j - 1)`,
whose :math:`\kappa` grows like :math:`e^{3.5 n}`.

1. ``solve``: :math:`Ax = b` by ``torch.linalg.solve`` (LU with partial pivoting,
   backward stable) against :math:`A^{-1}` then multiply. Both forward errors
   :math:`\|\hat x - x\|/\|x\|` follow :math:`\kappa u`; the relative residual
   :math:`\|b - A\hat x\|/(\|A\| \|\hat x\|)` stays at :math:`u` for ``solve`` but grows like
   :math:`\kappa u` for the inverse (Higham, Sec. 14.1).
2. ``lstsq``: a consistent tall least-squares problem by :func:`lamods.lstsq` with the
   normal equations (Cholesky of :math:`X^T X`, :math:`\kappa(X^T X) = \kappa(X)^2`, error
   :math:`\kappa^2 u`; refused once :math:`X^T X` is numerically singular), QR and SVD
   (error :math:`\kappa u`).
3. ``precision``: ``solve`` in float32 and in float64, bounds :math:`\kappa u_{32}` and
   :math:`\kappa u_{64}`: float32 loses every digit at :math:`\kappa \approx 10^7`.
4. ``logdet``: :math:`\log|\det A|` of :math:`A = Q \operatorname{diag}(d) Q^T` (known exactly,
   :math:`\sum \log d_i`) as ``log(abs(det(A)))`` against ``slogdet`` (the sum of the logs of
   the LU pivots). :math:`\det` over- or underflows as soon as :math:`|\log_{10} \det|` passes
   308 (float64), while ``slogdet`` keeps its error within the bound
   :math:`n \kappa u` (from :math:`\delta \log\det = \operatorname{tr}(A^{-1} \delta A)` with
   :math:`\|\delta A\| \le n u \|A\|`).
5. ``logsumexp``: :math:`y = \log \sum_i e^{x_i}` naive against shifted,
   :math:`y = a + \log \sum_i e^{x_i - a}`, :math:`a = \max x` (``torch.logsumexp``), in
   float32 for :math:`x = c z`, :math:`z \sim N(0, 1)`, as the scale :math:`c` grows. The naive
   sum overflows once :math:`\max x > 88.7`; the shifted one keeps its relative error within
   :math:`(\kappa + (n + \max_i |x_i - a|)/|y|)\, u`, :math:`\kappa = \sum |x_i| e^{x_i} /
   (|y| \sum e^{x_i})` the condition number of LSE (Blanchard, Higham & Higham, "Accurately
   computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 2021; the second
   term: the rounding of the shift, the exponentials and the sum, first order).

Metrics (lists, one entry per point of a sweep; null where the method was refused or the
result is infinite): ``stability/<panel>/...``, and summary
figures ``stability/solve_residual@kappa1e12``, ``stability/inv_residual@kappa1e12``,
``stability/normal_eq_error@kappa1e6``, ``stability/qr_error@kappa1e6``,
``stability/det_overflow_n`` (the first size whose ``det`` is infinite),
``stability/lse_naive_overflow_scale``. Plot: ``plots/stability.png``, one panel per sweep.
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

from experiments.plots import plt, save_figure
from lamods import lstsq
from lamods.exceptions import SingularSystemError

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("stability/solve_residual@kappa1e12", "stability/inv_residual@kappa1e12",
            "stability/normal_eq_error@kappa1e6", "stability/qr_error@kappa1e6")


def unit_roundoff(dtype: torch.dtype) -> float:
    """:math:`u` = half the machine epsilon.

    Examples::

        >>> unit_roundoff(torch.float64)
        1.1102230246251565e-16
    """
    return torch.finfo(dtype).eps / 2


def with_condition(m: int, n: int, kappa: float, generator: torch.Generator,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An ``(m, n)`` matrix :math:`U \\operatorname{diag}(s) V^T`, random orthonormal ``U``,
    ``V`` and ``s`` geometric from 1 to ``1/kappa`` (so its condition number is ``kappa``).

    Examples::

        >>> A = with_condition(30, 10, 1e6, torch.Generator().manual_seed(0))
        >>> round(float(torch.linalg.cond(A)) / 1e6, 6)
        1.0
    """
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64)).Q
    s = torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)
    return ((U * s) @ V.mT).to(dtype)


def hilbert(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Hilbert matrix :math:`H_{ij} = 1/(i + j - 1)` (1-based).

    Examples::

        >>> hilbert(3)[2].tolist()
        [0.3333333333333333, 0.25, 0.2]
    """
    i = torch.arange(1, n + 1, dtype=dtype)
    return 1.0 / (i[:, None] + i[None, :] - 1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _solve_errors(A: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    b = A @ x
    out = {}
    for name, xh in (("solve", torch.linalg.solve(A, b)), ("inv", torch.linalg.inv(A) @ b)):
        out[f"{name}_error"] = _rel(xh, x)
        # backward error: ||b - A x_hat|| / (||A|| ||x_hat||), 2-norms
        out[f"{name}_residual"] = float((b - A @ xh).norm()
                                        / (torch.linalg.matrix_norm(A, 2) * xh.norm()))
    return out


def solve_sweep(kappas: Sequence[float], n: int, hilbert_sizes: Sequence[int],
                g: torch.Generator) -> dict[str, list[float]]:
    """Panel 1: ``solve`` vs inverse-then-multiply on random matrices of set condition and on
    Hilbert matrices (their condition computed in float64)."""
    rows: dict[str, list[float]] = {}
    for kappa in kappas:
        A = with_condition(n, n, kappa, g)
        x = torch.randn(n, generator=g, dtype=torch.float64)
        for key, value in {"kappa": kappa, **_solve_errors(A, x)}.items():
            rows.setdefault(key, []).append(value)
    for size in hilbert_sizes:
        H = hilbert(size)
        x = torch.ones(size, dtype=torch.float64)
        errs = _solve_errors(H, x)
        rows.setdefault("hilbert_n", []).append(size)
        rows.setdefault("hilbert_kappa", []).append(float(torch.linalg.cond(H)))
        for key, value in errs.items():
            rows.setdefault(f"hilbert_{key}", []).append(value)
    return rows


def lstsq_sweep(kappas: Sequence[float], m: int, n: int,
                g: torch.Generator) -> dict[str, list[float]]:
    """Panel 2: normal equations vs QR vs SVD on a consistent problem ``y = X b``
    (NaN where the normal equations are refused as singular)."""
    rows: dict[str, list[float]] = {"kappa": list(kappas)}
    for kappa in kappas:
        X = with_condition(m, n, kappa, g)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        y = X @ b
        for method, key in (("cholesky", "normal_eq"), ("qr", "qr"), ("svd", "svd")):
            try:
                err = _rel(lstsq(X, y, method=method), b)
            except SingularSystemError:
                err = math.nan
            rows.setdefault(f"{key}_error", []).append(err)
    return rows


def precision_sweep(kappas: Sequence[float], n: int,
                    g: torch.Generator) -> dict[str, list[float]]:
    """Panel 3: ``solve`` in float32 and float64 on the same matrices (errors against the
    float64 ``x``)."""
    rows: dict[str, list[float]] = {"kappa": list(kappas)}
    for kappa in kappas:
        A = with_condition(n, n, kappa, g)
        x = torch.randn(n, generator=g, dtype=torch.float64)
        for dtype, key in ((torch.float32, "float32"), (torch.float64, "float64")):
            Ad = A.to(dtype)
            xh = torch.linalg.solve(Ad, Ad @ x.to(dtype)).double()
            rows.setdefault(f"{key}_error", []).append(_rel(xh, x))
    return rows


def logdet_sweep(sizes: Sequence[int], g: torch.Generator) -> dict[str, list[float]]:
    """Panel 4: log|det A| by ``det`` and by ``slogdet`` against the exact sum of logs, for
    :math:`A = Q \\operatorname{diag}(d) Q^T`, :math:`\\log_{10} d_i` uniform in [0, 4] (det
    overflows) or in [-4, 0] (det underflows); their bound :math:`n \\kappa u`."""
    rows: dict[str, list[float]] = {"n": list(sizes)}
    u = unit_roundoff(torch.float64)
    for sign, key in ((1.0, "large"), (-1.0, "small")):
        for n in sizes:
            Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
            logd = sign * 4 * torch.rand(n, generator=g, dtype=torch.float64)
            A = (Q * 10 ** logd) @ Q.mT
            exact = float(logd.sum() * math.log(10))  # log|det A| = sum_i ln d_i
            with np.errstate(divide="ignore"):
                naive = float(np.log(abs(float(torch.linalg.det(A)))))
            stable = float(torch.linalg.slogdet(A).logabsdet)
            kappa = float(10 ** (logd.max() - logd.min()))
            rows.setdefault(f"{key}_exact", []).append(exact)
            rows.setdefault(f"{key}_det_error", []).append(abs(naive - exact) / abs(exact))
            rows.setdefault(f"{key}_slogdet_error", []).append(abs(stable - exact) / abs(exact))
            # |delta log det| <= n kappa u (absolute), relative to |log det|
            rows.setdefault(f"{key}_bound", []).append(n * kappa * u / abs(exact))
    return rows


def logsumexp_sweep(scales: Sequence[float], n: int,
                    g: torch.Generator) -> dict[str, list[float]]:
    """Panel 5: naive vs shifted log-sum-exp in float32 against float64 (shifted), with the
    first-order bound of the shifted algorithm."""
    rows: dict[str, list[float]] = {"scale": list(scales)}
    u = unit_roundoff(torch.float32)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    for c in scales:
        x64 = c * z
        y = float(torch.logsumexp(x64, 0))  # reference, float64
        x = x64.float()
        naive = float(torch.log(torch.exp(x).sum()))
        a = x.max()
        shifted = float(a + torch.log(torch.exp(x - a).sum()))  # y = a + log sum e^(x_i - a)
        w = torch.softmax(x64, 0)
        kappa = float((w * x64.abs()).sum()) / abs(y)  # sum |x_i| e^x_i / (|y| sum e^x_i)
        spread = float((x64 - x64.max()).abs().max())
        rows.setdefault("naive_error", []).append(abs(naive - y) / abs(y))
        rows.setdefault("shifted_error", []).append(abs(shifted - y) / abs(y))
        rows.setdefault("torch_error", []).append(abs(float(torch.logsumexp(x, 0)) - y) / abs(y))
        rows.setdefault("bound", []).append((kappa + (n + spread) / abs(y)) * u)
    return rows


def _finite(values: Sequence[float], floor: float) -> np.ndarray:
    """For a log axis: exact zeros at ``floor``, inf / NaN dropped (NaN)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, np.nan)
    return np.where(arr == 0, floor, arr)


def _plot(panels: dict[str, dict[str, list[float]]], out: Path, title: str) -> None:
    u64, u32 = unit_roundoff(torch.float64), unit_roundoff(torch.float32)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    floor = u64 / 10
    s, ax = panels["solve"], axes[0, 0]
    k = np.asarray(s["kappa"])
    ax.loglog(k, _finite(s["solve_error"], floor), "o-", label="solve: forward error")
    ax.loglog(k, _finite(s["inv_error"], floor), "s--", label="inv then multiply: forward error")
    ax.loglog(k, _finite(s["solve_residual"], floor), "o-", label="solve: residual")
    ax.loglog(k, _finite(s["inv_residual"], floor), "s--", label="inv then multiply: residual")
    ax.loglog(s["hilbert_kappa"], _finite(s["hilbert_solve_error"], floor), "^:",
              label="Hilbert n=2..: solve forward error")
    ax.loglog(k, k * u64, "k-", lw=0.8, label="bound kappa u")
    ax.loglog(k, np.full_like(k, u64), "k:", lw=0.8, label="u")
    ax.set_xlabel("condition number kappa(A)")
    ax.set_title("Ax = b: solve (LU) vs inverse then multiply", fontsize=10)
    s, ax = panels["lstsq"], axes[0, 1]
    k = np.asarray(s["kappa"])
    for key, style in (("normal_eq", "o-"), ("qr", "s-"), ("svd", "^--")):
        ax.loglog(k, _finite(s[f"{key}_error"], floor), style, label=key)
    ax.loglog(k, k * u64, "k-", lw=0.8, label="kappa u")
    ax.loglog(k, k ** 2 * u64, "k--", lw=0.8, label="kappa^2 u (normal equations)")
    ax.set_ylim(top=10)
    ax.set_xlabel("condition number kappa(X)")
    ax.set_title("least squares: normal equations vs QR vs SVD", fontsize=10)
    s, ax = panels["precision"], axes[0, 2]
    k = np.asarray(s["kappa"])
    ax.loglog(k, _finite(s["float32_error"], floor), "o-", label="float32")
    ax.loglog(k, _finite(s["float64_error"], floor), "s-", label="float64")
    ax.loglog(k, k * u32, "k--", lw=0.8, label="kappa u_32")
    ax.loglog(k, k * u64, "k-", lw=0.8, label="kappa u_64")
    ax.set_ylim(top=10)
    ax.set_xlabel("condition number kappa(A)")
    ax.set_title("solve in float32 vs float64", fontsize=10)
    s = panels["logdet"]
    for ax, key, word in ((axes[1, 0], "large", "overflows"), (axes[1, 1], "small",
                                                               "underflows")):
        n = np.asarray(s["n"])
        ax.semilogy(n, _finite(s[f"{key}_det_error"], floor), "o-",
                    label="log|det(A)| (inf / -inf: off the chart)")
        ax.semilogy(n, _finite(s[f"{key}_slogdet_error"], floor), "s-", label="slogdet")
        ax.semilogy(n, s[f"{key}_bound"], "k-", lw=0.8, label="bound n kappa u / |log det|")
        ax.set_xlabel("size n")
        ax.set_title(f"log|det A|, det {word} (|log10 det| > 308)", fontsize=10)
    s, ax = panels["logsumexp"], axes[1, 2]
    c = np.asarray(s["scale"])
    ax.loglog(c, _finite(s["naive_error"], u32 / 10), "o-",
              label="naive log(sum(exp(x))) (inf: off the chart)")
    ax.loglog(c, _finite(s["shifted_error"], u32 / 10), "s-", label="shifted a + log sum e^(x-a)")
    ax.loglog(c, s["bound"], "k-", lw=0.8, label="bound (kappa + (n + spread)/|y|) u_32")
    ax.set_xlabel("scale c of x = c z (float32)")
    ax.set_title("log-sum-exp: naive vs shifted", fontsize=10)
    for ax in axes.flat:
        ax.set_ylabel("relative error")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, out)


def _at(rows: dict[str, list[float]], key: str, x_key: str, x: float) -> float:
    xs = rows[x_key]
    i = min(range(len(xs)), key=lambda j: abs(math.log10(xs[j]) - math.log10(x)))
    return rows[key][i]


def stability_study(
    *,
    cfg: DictConfig,
    datamodule: Any,
    output_dir: str | Path,
    n: int = 50,
    lstsq_shape: Sequence[int] = (200, 20),
    kappas: Sequence[float] = tuple(10.0 ** e for e in range(0, 17)),
    hilbert_sizes: Sequence[int] = tuple(range(2, 15)),
    det_sizes: Sequence[int] = (10, 50, 100, 150, 200, 250, 300, 350, 400),
    lse_n: int = 1000,
    lse_scales: Sequence[float] = tuple(10.0 ** (e / 4) for e in range(-4, 17)),
) -> dict[str, Any]:
    """Run the five sweeps (see the module docstring); returns their curves and summaries."""
    g = torch.Generator().manual_seed(int(cfg.seed))
    kappas = [float(k) for k in kappas]
    panels = {
        "solve": solve_sweep(kappas, n, hilbert_sizes, g),
        "lstsq": lstsq_sweep([k for k in kappas if k <= 1e13], *lstsq_shape, g),
        "precision": precision_sweep([k for k in kappas if k <= 1e12], n, g),
        "logdet": logdet_sweep(det_sizes, g),
        "logsumexp": logsumexp_sweep([float(c) for c in lse_scales], lse_n, g),
    }
    # in metrics.json a value that is not finite (refused, overflowed) is null
    out: dict[str, Any] = {f"stability/{p}/{k}": [v if math.isfinite(v) else None for v in vs]
                           for p, rows in panels.items() for k, vs in rows.items()}
    s, ls = panels["solve"], panels["lstsq"]
    out["stability/solve_residual@kappa1e12"] = _at(s, "solve_residual", "kappa", 1e12)
    out["stability/inv_residual@kappa1e12"] = _at(s, "inv_residual", "kappa", 1e12)
    out["stability/normal_eq_error@kappa1e6"] = _at(ls, "normal_eq_error", "kappa", 1e6)
    out["stability/qr_error@kappa1e6"] = _at(ls, "qr_error", "kappa", 1e6)
    ld = panels["logdet"]
    over = [n for n, e in zip(ld["n"], ld["large_det_error"]) if not math.isfinite(e)]
    out["stability/det_overflow_n"] = over[0] if over else None
    lse = panels["logsumexp"]
    inf = [c for c, e in zip(lse["scale"], lse["naive_error"]) if not math.isfinite(e)]
    out["stability/lse_naive_overflow_scale"] = inf[0] if inf else None
    log.info("stability: Ax = b at kappa 1e12: residual %.2g (solve) vs %.2g (inverse)",
             out["stability/solve_residual@kappa1e12"], out["stability/inv_residual@kappa1e12"])
    log.info("stability: least squares at kappa 1e6: error %.2g (normal equations) vs %.2g "
             "(QR)", out["stability/normal_eq_error@kappa1e6"],
             out["stability/qr_error@kappa1e6"])
    log.info("stability: det overflows from n = %s; naive log-sum-exp overflows (float32) "
             "from scale %s", out["stability/det_overflow_n"],
             out["stability/lse_naive_overflow_scale"])
    if cfg.get("plots", True):
        _plot(panels, Path(output_dir) / "plots" / "stability.png",
              f"{cfg.name}: rounding errors against conditioning, each with its bound")
    return out
