r"""The image-compression study: a photograph as rank-k matrices (truncated SVD).

The image (one of scikit-learn's bundled sample images, offline) is an :math:`m \times n \times
3` array of intensities in :math:`[0, 1]`. Two ways to make it a matrix:

- ``per_channel``: each colour channel :math:`A_c \in \mathbb{R}^{m \times n}` on its own,
  :math:`A_c \approx U_k S_k V_k^T`, storing :math:`3 k (m + n + 1)` numbers;
- ``whole``: the three channels side by side, :math:`[A_R\; A_G\; A_B] \in
  \mathbb{R}^{m \times 3n}`, one rank-:math:`k` SVD, storing :math:`k (m + 3n + 1)`.

For each ``k``: the storage ratio (numbers stored / :math:`3mn`) and the peak signal-to-noise
ratio of the reconstruction (clipped to :math:`[0, 1]`),

.. math::
    \mathrm{PSNR} = 10 \log_{10} \frac{1}{\mathrm{MSE}}, \qquad
    \mathrm{MSE} = \frac{1}{3mn} \sum (A - \hat A)^2,

with the Eckart-Young closed form for the unclipped error,
:math:`\|A - A_k\|_F^2 = \sum_{i > k} s_i^2` (``image/max_closed_form_error``: the largest
relative gap between the two). Exact SVD (:func:`lamods.svd`, all singular values, once)
against :func:`lamods.randomized_svd` of rank :math:`k` per channel: time (median of
``repeats`` runs) and PSNR.

Metrics: ``image/shape``; for each ``k``: ``image/psnr@per_channel_k{k}``,
``image/psnr@whole_k{k}``, ``image/psnr@randomized_k{k}`` (per channel),
``image/storage@per_channel_k{k}``, ``image/storage@whole_k{k}``,
``time/randomized_svd_s@k{k}``; ``time/exact_svd_s``; ``image/max_closed_form_error``;
``image/table`` (one row per k). Plots: ``plots/reconstructions.png`` (the original and the
per-channel reconstructions side by side) and ``plots/psnr.png`` (PSNR against k and against
the storage ratio, exact and randomized).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from sklearn.datasets import load_sample_image

from experiments.plots import plt, save_figure
from lamods import randomized_svd, svd

log = logging.getLogger(__name__)

#: the metrics the run's one-line summary shows
HEADLINE = ("image/psnr@per_channel_k10", "image/psnr@per_channel_k50",
            "image/storage@per_channel_k50", "time/exact_svd_s")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """:math:`10 \\log_{10}(1/\\mathrm{MSE})` for intensities in ``[0, 1]``.

    Examples::

        >>> round(psnr(torch.zeros(4), torch.full((4,), 0.1)), 6)
        20.0
    """
    mse = float((a - b).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """``fn()``'s result and the median of ``repeats`` timings (seconds)."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def _rank_k(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, k: int) -> torch.Tensor:
    # A_k = U_k diag(S_k) V_k^T
    return (U[..., :k] * S[..., None, :k]) @ Vh[..., :k, :]


def _plot_images(image: torch.Tensor, recon: dict[int, torch.Tensor],
                 rows: dict[int, dict[str, Any]], out: Path, title: str) -> None:
    panels = [("original", image)] + [
        (f"k={k}: PSNR {rows[k]['psnr_per_channel']:.1f} dB, "
         f"{rows[k]['storage_per_channel']:.1%} stored", img) for k, img in recon.items()]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, panels):
        ax.imshow(img.clamp(0, 1).numpy())
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    save_figure(fig, out)


def _plot_psnr(table: list[dict[str, Any]], out: Path, title: str) -> None:
    ks = [r["k"] for r in table]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4))
    left.plot(ks, [r["psnr_per_channel"] for r in table], "o-", label="per channel, exact")
    left.plot(ks, [r["psnr_randomized"] for r in table], "x--", label="per channel, randomized")
    left.plot(ks, [r["psnr_whole"] for r in table], "s-", label="whole image (m x 3n)")
    left.set_xscale("log")
    left.set_xlabel("rank k")
    right.plot([r["storage_per_channel"] for r in table], [r["psnr_per_channel"] for r in table],
               "o-", label="per channel")
    right.plot([r["storage_whole"] for r in table], [r["psnr_whole"] for r in table], "s-",
               label="whole image (m x 3n)")
    right.set_xscale("log")
    right.set_xlabel("storage ratio (numbers stored / 3mn)")
    for ax in (left, right):
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, out)


def image_svd_study(
    *,
    cfg: DictConfig,
    datamodule: Any,
    output_dir: str | Path,
    image: str = "china.jpg",
    ks: Sequence[int] = (1, 2, 5, 10, 20, 50, 100),
    shown: Sequence[int] = (5, 20, 50, 100),
    downsample: int = 1,
    oversamples: int = 10,
    n_iter: int = 4,
    repeats: int = 3,
) -> dict[str, Any]:
    """Compress the image at each rank ``k`` (see the module docstring); ``downsample`` keeps
    every ``downsample``-th pixel (smaller runs), ``shown`` the ranks drawn side by side."""
    pixels = load_sample_image(image)[::downsample, ::downsample]
    A = torch.from_numpy(np.array(pixels, dtype=np.float64)) / 255.0  # (m, n, 3), a copy
    m, n, _ = A.shape
    channels = A.permute(2, 0, 1)  # (3, m, n)
    ks = [int(k) for k in ks if int(k) <= min(m, n)]
    # warm-up (first calls allocate workspaces); times are medians of `repeats` runs
    randomized_svd(channels, 1, generator=torch.Generator().manual_seed(0))
    (U, S, Vh), exact_s = _timed(lambda: svd(channels), repeats)  # exact: all of them, once
    Uw, Sw, Vhw = svd(torch.cat(list(channels), dim=1))  # (m, 3n)
    total = float(channels.square().sum())
    out: dict[str, Any] = {"image/shape": [m, n, 3], "time/exact_svd_s": round(exact_s, 4)}
    table, recon, worst = [], {}, 0.0
    for k in ks:
        approx = _rank_k(U, S, Vh, k)  # (3, m, n)
        # Eckart-Young: ||A_c - A_c,k||_F^2 = sum_{i > k} s_i^2
        predicted = float(S[:, k:].square().sum())
        actual = float((channels - approx).square().sum())
        worst = max(worst, abs(actual - predicted) / max(predicted, 1e-300 * total))
        whole = _rank_k(Uw, Sw, Vhw, k).reshape(m, 3, n).permute(1, 0, 2)
        (Ur, Sr, Vhr), rand_s = _timed(lambda k=k: randomized_svd(
            channels, k, oversamples=oversamples, n_iter=n_iter,
            generator=torch.Generator().manual_seed(int(cfg.seed))), repeats)
        row = {"k": k,
               "storage_per_channel": 3 * k * (m + n + 1) / (3 * m * n),
               "storage_whole": k * (m + 3 * n + 1) / (3 * m * n),
               "psnr_per_channel": psnr(approx.clamp(0, 1), channels),
               "psnr_whole": psnr(whole.clamp(0, 1), channels),
               "psnr_randomized": psnr(_rank_k(Ur, Sr, Vhr, k).clamp(0, 1), channels),
               "randomized_svd_s": round(rand_s, 4)}
        table.append(row)
        if k in shown:
            recon[k] = approx.permute(1, 2, 0)
        out[f"image/psnr@per_channel_k{k}"] = row["psnr_per_channel"]
        out[f"image/psnr@whole_k{k}"] = row["psnr_whole"]
        out[f"image/psnr@randomized_k{k}"] = row["psnr_randomized"]
        out[f"image/storage@per_channel_k{k}"] = row["storage_per_channel"]
        out[f"image/storage@whole_k{k}"] = row["storage_whole"]
        out[f"time/randomized_svd_s@k{k}"] = row["randomized_svd_s"]
        log.info("image_svd: k=%d: per channel %.2f dB at %.1f%% stored (randomized %.2f dB in "
                 "%.3f s; exact SVD %.3f s), whole image %.2f dB at %.1f%%", k,
                 row["psnr_per_channel"], 100 * row["storage_per_channel"],
                 row["psnr_randomized"], rand_s, exact_s, row["psnr_whole"],
                 100 * row["storage_whole"])
    out["image/max_closed_form_error"] = worst
    out["image/table"] = table
    if cfg.get("plots", True):
        rows = {r["k"]: r for r in table}
        _plot_images(A, recon, rows, Path(output_dir) / "plots" / "reconstructions.png",
                     f"{cfg.name}: {image} ({m} x {n}), rank-k SVD of each colour channel")
        _plot_psnr(table, Path(output_dir) / "plots" / "psnr.png",
                   f"{cfg.name}: {image}, PSNR of the rank-k reconstructions")
    return out
