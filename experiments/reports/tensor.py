r"""The tensor report: one trained layer compressed as a matrix (truncated SVD, ``lamods.compress``)
and as a tensor (Tucker by HOOI, CP by ALS) at equal parameter budgets.

The layer ``layer`` (an ``nn.Linear(I_1 I_2, O)``, e.g. the first layer of an MLP on 8x8
digits) has the weight :math:`W \in \mathbb{R}^{O \times I_1 I_2}`, read as the tensor
:math:`\mathcal{W} \in \mathbb{R}^{O \times I_1 \times I_2}` (``in_shape`` = the image's rows
and columns). For each matrix rank :math:`r` in ``ranks`` the budget is the matrix layer's
weight parameters, :math:`P = r (O + I_1 I_2 + 1)`, and three replacements are made:

- ``svd``: :func:`lamods.compress` at rank :math:`r` (:class:`~lamods.LowRankLinear`, the
  best rank-:math:`r` matrix, Eckart-Young);
- ``tucker``: :class:`~lamods.TuckerLinear` with the ranks :math:`(r_0, r_1, r_2)` of
  :math:`O r_0 + I_1 r_1 + I_2 r_2 + r_0 r_1 r_2 \le P` that minimise the HOSVD bound
  :math:`\sum_n \sum_{i > r_n} \sigma_i(W_{(n)})^2` (Note [Tucker ranks]), fitted by HOOI;
- ``cp``: :class:`~lamods.CPLinear` of the largest rank :math:`R` with
  :math:`R (O + I_1 + I_2 + 1) \le P`, fitted by ALS.

Each is scored by the relative weight error :math:`\|W - \hat W\|_F / \|W\|_F` and the test
accuracy of the network with the layer replaced (no fine-tuning: the approximation alone).

Note [Tucker ranks]: the HOSVD bound is computed from the three unfoldings' singular values
once, so choosing the ranks costs no decomposition; HOOI then fits the chosen ranks (its
error is at most the bound).

Metrics: ``tensor/settings`` (one row per budget and method: ranks, weight parameters,
relative error, test accuracy), ``tensor/test_acc@M_r{r}`` and ``tensor/rel_error@M_r{r}`` for
``M`` in ``svd``, ``tucker``, ``cp``, and ``tensor/dense_params``. Plot:
``plots/tensor_vs_matrix.png``, relative error and test accuracy against weight parameters.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.fitted import split_data
from experiments.plots import plt, save_figure
from lamods import compress
from lamods.decomp.tensor import unfold
from lamods.layers import CPLinear, TuckerLinear

log = logging.getLogger(__name__)

PLOT_FILE = "tensor_vs_matrix.png"
METHODS = ("svd", "tucker", "cp")


def tucker_ranks(singular_values: Sequence[torch.Tensor], shape: Sequence[int],
                 budget: int) -> tuple[int, ...]:
    """Ranks ``(r_0, r_1, r_2)`` of a 3-way Tucker form of ``shape`` ``(O, I_1, I_2)`` within
    ``budget`` parameters with the smallest HOSVD bound (Note [Tucker ranks]).

    ``singular_values[n]``: the singular values of the mode-``n`` unfolding.

    Examples::

        >>> s = [torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.1]), torch.tensor([1.0, 0.5])]
        >>> tucker_ranks(s, (2, 2, 2), 10)  # bounds: (2,1,1) 0.26, (1,1,2) 1.01, (1,2,1) 1.25
        (2, 1, 1)
    """
    sizes = [int(n) for n in shape]
    # tails[n][r] = sum_{i >= r} s_i^2 (zero past the last singular value)
    tails = [torch.cat([s.flip(0).square().cumsum(0).flip(0),
                        s.new_zeros(size + 1 - len(s))]).tolist()
             for s, size in zip(singular_values, sizes)]
    best: tuple[float, tuple[int, ...]] | None = None
    for r1 in range(1, sizes[1] + 1):
        for r2 in range(1, sizes[2] + 1):
            fixed = sizes[1] * r1 + sizes[2] * r2
            # largest r0 with O r0 + I1 r1 + I2 r2 + r0 r1 r2 <= budget
            r0 = min(sizes[0], (budget - fixed) // (sizes[0] + r1 * r2)) if budget > fixed else 0
            if r0 < 1:
                continue
            bound = tails[0][r0] + tails[1][r1] + tails[2][r2]
            if best is None or bound < best[0]:
                best = (bound, (r0, r1, r2))
    if best is None:
        raise ValueError(f"tucker_ranks: no Tucker form of sizes {sizes} fits in {budget} "
                         "parameters")
    return best[1]


def _replace(net: nn.Module, name: str, layer: nn.Module) -> nn.Module:
    new = copy.deepcopy(net)
    parent_name, _, child = name.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    setattr(parent, child, layer)
    return new


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net(x).argmax(-1) == y).float().mean())


def _rel_error(w: torch.Tensor, approx: torch.Tensor) -> float:
    return float((w - approx).norm() / w.norm())


def _plot(rows: list[dict[str, Any]], dense: tuple[int, float], out: Path, title: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4))
    for method, marker in zip(METHODS, "osd"):
        pts = [r for r in rows if r["method"] == method]
        left.plot([r["params"] for r in pts], [r["rel_error"] for r in pts], marker=marker,
                  label=method)
        right.plot([r["params"] for r in pts], [r["test_acc"] for r in pts], marker=marker,
                   label=method)
    right.axhline(dense[1], color="gray", ls="--", label=f"dense ({dense[0]:,} params)")
    left.set_ylabel("relative weight error ||W - W_hat||_F / ||W||_F")
    right.set_ylabel("test accuracy (no fine-tuning)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("weight parameters of the layer")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, out)


def tensor_report(
    *,
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    task: pl.LightningModule,
    output_dir: str | Path,
    metrics: dict[str, Any],
    layer: str = "0",
    in_shape: Sequence[int] = (8, 8),
    ranks: Sequence[int] = (1, 2, 4, 8, 16),
    hooi_iter: int = 20,
    cp_iter: int = 200,
) -> dict[str, Any]:
    """Compress ``task.net``'s layer ``layer`` three ways per budget (module docstring)."""
    net = task.net
    dense = net.get_submodule(layer)
    if not isinstance(dense, nn.Linear):
        raise TypeError(f"tensor_report: expected layer {layer!r} to be an nn.Linear, got "
                        f"{type(dense).__name__}")
    in_shape = (int(in_shape[0]), int(in_shape[1]))
    x, y = split_data(datamodule, "test")
    w = dense.weight.detach().double()
    O, n_in = w.shape
    tensor = w.reshape(O, *in_shape)
    svals = [torch.linalg.svdvals(unfold(tensor, n)) for n in range(3)]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"tensor/dense_params": O * n_in,
                           "tensor/dense_test_acc": _accuracy(net, x, y)}
    for r in ranks:
        budget = r * (O + n_in + 1)
        compressed, _ = compress(net, rank=int(r), include=[layer], min_params_saved=0)
        low = compressed.get_submodule(layer)
        approx = {"svd": (low, f"{r}", budget)}
        t_ranks = tucker_ranks(svals, tensor.shape, budget)
        tucker = TuckerLinear.from_linear(dense, in_shape, t_ranks, n_iter=hooi_iter)
        approx["tucker"] = (tucker, "x".join(map(str, t_ranks)), tucker.n_weight_params)
        R = budget // (O + in_shape[0] + in_shape[1] + 1)
        cp = CPLinear.from_linear(dense, in_shape, R, n_iter=cp_iter, seed=int(cfg.seed))
        approx["cp"] = (cp, str(R), cp.n_weight_params)
        for method, (module, rank_text, params) in approx.items():
            weight = module.to_linear().weight
            row = {"budget_rank": int(r), "method": method, "ranks": rank_text,
                   "params": int(params),
                   "rel_error": _rel_error(w, weight.detach().double()),
                   "test_acc": _accuracy(_replace(net, layer, module), x, y)}
            rows.append(row)
            out[f"tensor/test_acc@{method}_r{r}"] = row["test_acc"]
            out[f"tensor/rel_error@{method}_r{r}"] = row["rel_error"]
            log.info("tensor: r=%d budget %d: %s ranks %s, %d params, rel error %.4f, test "
                     "acc %.4f", r, budget, method, rank_text, params, row["rel_error"],
                     row["test_acc"])
    out["tensor/settings"] = rows
    if cfg.get("plots", True):
        _plot(rows, (O * n_in, out["tensor/dense_test_acc"]),
              Path(output_dir) / "plots" / PLOT_FILE,
              f"{cfg.name}: layer {layer} ({O}x{n_in} as {O}x{in_shape[0]}x{in_shape[1]}) "
              "as matrix rank r vs Tucker vs CP, equal budgets")
    return out
