"""Issue 7's experiment ``randproj_mnist``: random projections (Gaussian, sparse, SRHT) of the
raw features, their pairwise-distance distortion against k and a classifier per method and k
(:mod:`experiments.reports.randproj`).

Runs are in-process through :func:`experiments.run.run` on tiny data, on the CPU, run
directories in ``tmp_path``.
"""

from __future__ import annotations

import csv
import doctest
import json
import math
from pathlib import Path

import pytest
import torch
from experiment_helpers import QUIET, SHARED_DATA, TINY, make_cfg, needs_mnist

import experiments.reports.randproj as randproj
from experiments.reports.randproj import distortion_stats, jl_eps
from experiments.run import run
from experiments.train import build
from lamods import (
    GaussianRandomProjection,
    SparseRandomProjection,
    SRHTProjection,
    johnson_lindenstrauss_min_dim,
)
from lamods.layers import pairwise_distance_distortion, pairwise_sq_distances

METHODS = ["gaussian", "sparse", "srht"]
PLOTS = ("curves", "distortion_vs_k", "acc_vs_k")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_run(out: Path, metrics: dict, ks: list[int], own: tuple[str, int], n_points: int,
              head_in: int | None = None) -> None:
    """Metrics, files and sub-runs of a run with every method and ``ks``."""
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for name in PLOTS:
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000, name
    assert metrics["distortion/n_points"] == n_points
    rows = read_csv(out / randproj.DISTORTION_FILE)
    assert [(r["method"], int(r["k"])) for r in rows] == [(m, k) for m in METHODS for k in ks]
    assert all(int(r["n_pairs"]) <= n_points * (n_points - 1) // 2 for r in rows)
    for row in rows:
        qs = [float(row[q]) for q in randproj.QUANTILES]
        assert qs == sorted(qs) and qs[0] > 0  # quantiles in order, ratios positive
    for m in METHODS:
        for k in ks:
            lo, med, hi = (metrics[f"distortion/{s}@{m},k={k}"] for s in ("min", "median", "max"))
            assert 0 < lo <= med <= hi
            assert metrics[f"distortion/eps@{m},k={k}"] == pytest.approx(max(1 - lo, hi - 1))
            acc = metrics[f"test/acc@{m},k={k}"]
            assert 0.0 <= acc <= 1.0
            sub = out / m / f"k={k}"
            if (m, k) == own:
                assert acc == metrics["test/acc"]  # the main run itself
                assert not sub.exists()
            else:
                sub_metrics = json.loads((sub / "metrics.json").read_text())
                assert sub_metrics["test/acc"] == acc
                assert sub_metrics["n_params"] == k * 10 + 10  # a linear head on k features
                assert (sub / "checkpoints" / "best.ckpt").is_file()
    for e in (0.1, 0.2, 0.5):
        assert metrics[f"jl/min_dim@eps={e}"] == johnson_lindenstrauss_min_dim(
            metrics["jl/n_train"], eps=e)
    # test metrics first: the one-line summary shows them
    keys = list(metrics)
    assert keys.index(f"test/acc@srht,k={ks[-1]}") < keys.index("distortion/n_points")


# --------------------------------------------------------------------------- the model
@pytest.mark.parametrize(("method", "cls"), [("gaussian", GaussianRandomProjection),
                                             ("sparse", SparseRandomProjection),
                                             ("srht", SRHTProjection)])
def test_model_is_a_frozen_projection_then_the_head(method, cls, tmp_path):
    cfg = make_cfg(["+exp=randproj_digits", f"model.method={method}", "model.out_features=16"],
                   tmp_path)
    _, task = build(cfg)
    proj, head = task.net
    assert isinstance(proj, cls) and (proj.in_features, proj.out_features) == (64, 16)
    assert list(proj.parameters()) == []  # buffers: the optimizer trains only the head
    assert task.n_params == sum(p.numel() for p in head.parameters()) == 16 * 10 + 10
    # drawn from the run's seed: the report measures the same map the classifier sees
    x = torch.rand(5, 64)
    torch.testing.assert_close(proj(x), cls(64, 16, seed=cfg.seed)(x))
    assert {k for k in task.state_dict() if k.startswith("net.0.")}  # checkpoints carry it


def test_unknown_method_names_the_missing_key(tmp_path):
    with pytest.raises(Exception, match=r"model\.methods\.pca"):
        build(make_cfg(["+exp=randproj_digits", "model.method=pca"], tmp_path))


# --------------------------------------------------------------------------- the JL helpers
@pytest.mark.parametrize("n", [10, 359, 1000, 70_000])
def test_jl_eps_inverts_johnson_lindenstrauss_min_dim(n):
    for k in (8, 64, 256, 1024, 8192):
        eps = jl_eps(k, n)
        if k < 24 * math.log(n):
            assert eps is None
            continue
        assert 0 < eps < 1
        assert johnson_lindenstrauss_min_dim(n, eps=eps * (1 + 1e-9)) <= k
        assert johnson_lindenstrauss_min_dim(n, eps=eps * (1 - 1e-3)) > k


def test_pair_sq_dists_gives_the_ratios_of_pairwise_distance_distortion():
    x = torch.rand(40, 30)
    x[7] = x[3]  # a repeated row: its pair has no ratio
    y = SRHTProjection(30, 8, seed=0)(x)
    before = pairwise_sq_distances(x)
    keep = before > 0
    assert int((~keep).sum()) == 1
    torch.testing.assert_close(pairwise_sq_distances(y)[keep] / before[keep],
                               pairwise_distance_distortion(x, y), rtol=1e-12, atol=0)


def test_distortion_stats_of_an_isometry_and_of_a_scaling():
    x = torch.randn(30, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    s = distortion_stats(pairwise_distance_distortion(x, x @ q), eps=0.1)
    assert s["min"] == pytest.approx(1) and s["max"] == pytest.approx(1)
    assert s["eps"] < 1e-12 and s["within_jl"] == 1.0
    s = distortion_stats(pairwise_distance_distortion(x, 2 * x), eps=0.5)
    assert s["median"] == pytest.approx(4) and s["within_jl"] == 0.0
    assert "within_jl" not in distortion_stats(torch.ones(3))


# --------------------------------------------------------------------------- end to end
def test_randproj_mnist_runs_end_to_end_on_digits(tmp_path):
    ks = [4, 16]
    metrics = run(make_cfg(["+exp=randproj_digits", *TINY, "model.method=sparse",
                            "model.out_features=16", f"report.ks={ks}",
                            "report.n_points=120"], tmp_path))
    check_run(tmp_path, metrics, ks, own=("sparse", 16), n_points=120)
    assert metrics["name"] == "randproj_digits" and metrics["n_params"] == 16 * 10 + 10
    assert metrics["jl/n_train"] == 1258  # digits' training split
    assert metrics["jl/eps@k=4"] is None and metrics["jl/eps@k=16"] is None  # vacuous: k < 115
    assert not any(k.startswith("distortion/within_jl") for k in metrics)
    # median ratio near 1 (E r = 1); the spread shrinks with k (sd of chi2_k / k is sqrt(2/k))
    for m in METHODS:
        assert abs(metrics[f"distortion/median@{m},k=16"] - 1) < 0.35
        assert metrics[f"distortion/eps@{m},k=16"] < metrics[f"distortion/eps@{m},k=4"]


def test_distortion_is_within_the_jl_bound_for_large_k(tmp_path):
    """512 features, 50 points: k = 256 guarantees eps = 0.55; every pair stays inside."""
    ks = [32, 256]
    metrics = run(make_cfg(["+exp=randproj_digits", *TINY, "test=false", "plots=false",
                            "data=synthetic", "data.in_features=512", "data.n_samples=400",
                            "model.out_features=32", f"report.ks={ks}", "report.n_points=50"],
                           tmp_path))
    assert metrics["jl/eps@k=32"] is None
    eps = metrics["jl/eps@k=256"]
    assert eps == pytest.approx(jl_eps(256, 50)) and eps < 0.6
    for m in METHODS:
        assert metrics[f"distortion/within_jl@{m},k=256"] == 1.0
        assert metrics[f"distortion/eps@{m},k=256"] <= eps
        assert abs(metrics[f"distortion/median@{m},k=256"] - 1) < 0.1
        assert abs(metrics[f"distortion/median@{m},k=32"] - 1) < 0.25
    assert not any(k.startswith("test/acc@") for k in metrics)  # test=false: no sweep
    assert not (tmp_path / "plots").exists()
    assert not (tmp_path / "gaussian").exists()


def test_randproj_report_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"randproj_report: expected report.ks in \[1, 64\]"):
        run(make_cfg(["+exp=randproj_digits", *TINY, "report.ks=[8,100]"], tmp_path / "ks"))
    with pytest.raises(ValueError, match=r"randproj_report: expected report.methods among "
                                         r"gaussian, sparse, srht, got \['pca'\]"):
        run(make_cfg(["+exp=randproj_digits", *TINY, "report.methods=[pca]"], tmp_path / "m"))
    with pytest.raises(Exception, match="Key 'method' not in 'TorchMLPModel'"):
        make_cfg(["+exp=randproj_digits", *TINY, "model=torch_mlp"], tmp_path / "model")


@needs_mnist
def test_randproj_mnist_on_the_local_mnist_copy(tmp_path):
    ks = [16, 64]
    metrics = run(make_cfg(["+exp=randproj_mnist", f"data.root={SHARED_DATA}",
                            "data.download=false", "data.limit_train=500",
                            "model.method=srht", "model.out_features=64", f"report.ks={ks}",
                            "report.n_points=100", *TINY], tmp_path))
    check_run(tmp_path, metrics, ks, own=("srht", 64), n_points=100)
    assert metrics["jl/n_train"] == 450  # 500 - 10% val


@pytest.mark.slow
def test_randproj_mnist_default_run_learns_digits(tmp_path):
    """The experiment as the README runs it (20 epochs per classifier, 9 classifiers)."""
    metrics = run(make_cfg(["+exp=randproj_digits", *QUIET], tmp_path))
    check_run(tmp_path, metrics, [8, 16, 32], own=("gaussian", 32), n_points=359)
    for m in METHODS:
        assert metrics[f"test/acc@{m},k=32"] >= 0.85
        assert metrics[f"test/acc@{m},k=8"] < metrics[f"test/acc@{m},k=32"]


def test_docstring_examples():
    """``experiments/`` is outside pytest's doctest paths; its examples run here."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(randproj, optionflags=flags)
    assert result.attempted > 0 and result.failed == 0
