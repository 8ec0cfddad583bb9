"""Issue 17's ``tensor_digits``: a trained layer compressed as a matrix (truncated SVD) and as a
tensor (Tucker, CP) at equal parameter budgets (tiny in-process run, CPU, tmp_path)."""

from __future__ import annotations

import doctest
import json

import pytest
import torch
from experiment_helpers import TINY, make_cfg

import experiments.reports.tensor as tensor_report
from experiments.reports.tensor import tucker_ranks
from experiments.run import run


def test_docstring_examples():
    result = doctest.testmod(tensor_report, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_tucker_ranks_is_the_best_bound_within_the_budget():
    g = torch.Generator().manual_seed(0)
    shape = (12, 4, 5)
    svals = [torch.rand(min(n, 12 * 4 * 5 // n), generator=g, dtype=torch.float64)
             .sort(descending=True).values for n in shape]
    budget = 80

    def params(r):
        return shape[0] * r[0] + shape[1] * r[1] + shape[2] * r[2] + r[0] * r[1] * r[2]

    def bound(r):
        return sum(float(s[k:].square().sum()) for s, k in zip(svals, r))

    feasible = [(a, b, c) for a in range(1, 13) for b in range(1, 5) for c in range(1, 6)
                if params((a, b, c)) <= budget]
    best = tucker_ranks(svals, shape, budget)
    assert params(best) <= budget
    assert bound(best) == pytest.approx(min(bound(r) for r in feasible))
    with pytest.raises(ValueError, match="tucker_ranks: no Tucker form of sizes"):
        tucker_ranks(svals, shape, 10)


def test_tensor_digits_end_to_end(tmp_path):
    cfg = make_cfg(["+exp=tensor_digits", *TINY, "trainer.limit_train_batches=10",
                    "report.ranks=[1,4]", "report.cp_iter=50"], tmp_path)
    metrics = run(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "plots" / "tensor_vs_matrix.png").stat().st_size > 1000
    rows = metrics["tensor/settings"]
    assert [(r["budget_rank"], r["method"]) for r in rows] == [
        (1, "svd"), (1, "tucker"), (1, "cp"), (4, "svd"), (4, "tucker"), (4, "cp")]
    # the layer: nn.Linear(64, 256); its weight as a matrix and as a 256 x 8 x 8 tensor
    from experiments.train import build, load_weights

    _, task = build(cfg)
    load_weights(task, metrics["best_checkpoint"])
    W = task.net[0].weight.detach().double()
    s = torch.linalg.svdvals(W)
    for row in rows:
        budget = row["budget_rank"] * (256 + 64 + 1)
        assert row["params"] <= budget and 0.0 <= row["test_acc"] <= 1.0
        if row["method"] == "svd":  # Eckart-Young: sqrt(sum_{i > r} s_i^2) / ||W||_F
            r = row["budget_rank"]
            assert row["rel_error"] == pytest.approx(float(s[r:].norm() / s.norm()), rel=1e-5)
        assert 0.0 < row["rel_error"] < 1.0
    assert metrics["tensor/dense_params"] == 256 * 64
    assert metrics["tensor/test_acc@svd_r4"] == rows[3]["test_acc"]
