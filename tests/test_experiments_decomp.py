"""Issue 4's experiments: ``pca_mnist`` (PCA fitted on the training split, report, accuracy
against k) and ``zca_mlp`` (an MLP with and without a ZCA whitening layer), and the hook that
fits fit-style modules before training (:mod:`experiments.fitted`).

Runs are in-process through :func:`experiments.run.run` on tiny data, or on the command line
for the ``zca_mlp`` sweep; everything on the CPU, run directories in ``tmp_path``.
"""

from __future__ import annotations

import csv
import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from experiment_helpers import QUIET, REPO, SHARED_DATA, TINY, make_cfg, needs_mnist
from torch import nn

from experiments.data import SyntheticDataModule
from experiments.fitted import fit_modules, shard_batches, split_data, stream_fit_modules
from experiments.run import run
from experiments.schema import ConfigError
from experiments.train import build
from lamods import SpectralClustering
from lamods.base import Estimator
from lamods.decomp import PCA, ZCAWhitening

PCA_PLOTS = ("curves", "explained_variance", "pca_scatter", "reconstructions", "acc_vs_k")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def synthetic(in_features: int = 6) -> SyntheticDataModule:
    return SyntheticDataModule(in_features=in_features, num_classes=3, n_samples=200, seed=0)


# --------------------------------------------------------------------------- the fit hook
class _Supervised(Estimator):
    """A fit-style module that takes labels: remembers the classes it saw."""

    _FITTED_MARK = "classes_"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("classes_", torch.empty(0, dtype=torch.long))

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> _Supervised:
        self.classes_ = y.unique()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fit_modules_fits_sequential_steps_on_the_outputs_before_them():
    dm = synthetic()
    net = nn.Sequential(PCA(4), nn.Tanh(), PCA(2), _Supervised(), nn.Linear(2, 3))
    assert fit_modules(net, dm) == ["0", "2", "3"]
    x, y = split_data(dm, "train")
    torch.testing.assert_close(net[0].mean_, x.mean(0))
    assert int(net[0].n_samples_seen_) == len(x)
    # the second PCA saw tanh(first PCA's scores), not the raw features
    torch.testing.assert_close(net[2].mean_, torch.tanh(net[0](x)).mean(0))
    assert net[2].n_features_in_ == 4
    assert net[3].classes_.tolist() == [0, 1, 2]
    assert net(x).shape == (len(x), 3)
    assert fit_modules(net, None) == []  # all fitted: the data is not touched


def test_fit_modules_fits_the_net_itself_and_ignores_plain_nets():
    pca = PCA(3)
    assert fit_modules(pca, synthetic()) == [""] and pca.is_fitted()
    assert fit_modules(nn.Sequential(nn.Linear(6, 3), nn.ReLU()), None) == []


def test_fit_modules_names_a_fit_style_module_it_cannot_feed():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.ModuleDict({"proj": PCA(2)})

    with pytest.raises(ValueError, match=r"fit_modules: expected unfitted fit-style modules to "
                                         r"be the network itself or steps of an nn.Sequential, "
                                         r"got body.proj inside Branchy"):
        fit_modules(Branchy(), synthetic())


def test_build_fits_pca_on_the_training_split_and_trains_only_the_head(tmp_path):
    cfg = make_cfg(["+exp=pca_digits", "model.n_components=8"], tmp_path)
    datamodule, task = build(cfg)
    pca, head = task.net
    x_train, _ = datamodule.datasets["train"].tensors
    assert isinstance(pca, PCA) and pca.components_.shape == (8, 64)
    assert int(pca.n_samples_seen_) == len(x_train) == datamodule.sizes()["train"]
    torch.testing.assert_close(pca.mean_, x_train.mean(0))
    assert list(pca.parameters()) == []  # frozen: fitted state is buffers
    assert task.n_params == sum(p.numel() for p in head.parameters()) == 8 * 10 + 10
    state = task.state_dict()
    assert state["net.0.components_"].shape == (8, 64)  # checkpoints carry the fit


# --------------------------------------------------------------------------- pca_mnist
def check_pca_run(out: Path, metrics: dict, ks: list[int], own_k: int, rank: int) -> None:
    """``rank``: components of the full fit, min(training rows, features)."""
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for name in PCA_PLOTS:
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000, name
    rows = read_csv(out / "pca_spectrum.csv")
    ratio = torch.tensor([float(r["ratio"]) for r in rows], dtype=torch.float64)
    assert len(rows) == rank
    assert ratio.min() >= 0 and ratio.sum() <= 1 + 1e-9
    assert float(rows[-1]["cumulative"]) == pytest.approx(1.0, abs=1e-9)
    assert torch.all(ratio[1:] <= ratio[:-1] + 1e-12)  # descending
    explained = [metrics[f"pca/explained@k={k}"] for k in ks]
    mse = [metrics[f"pca/test_mse@k={k}"] for k in ks]
    assert explained == sorted(explained) and 0 < explained[0] and explained[-1] <= 1 + 1e-9
    assert mse == sorted(mse, reverse=True) and mse[-1] >= 0
    levels = [metrics[f"pca/k@var={v}"] for v in (0.9, 0.95, 0.99)]
    assert levels == sorted(levels) and 1 <= levels[0] and levels[-1] <= rank
    for k in ks:
        assert 0.0 <= metrics[f"test/acc@k={k}"] <= 1.0
        sub = out / f"k={k}"
        if k == own_k:
            assert metrics[f"test/acc@k={k}"] == metrics["test/acc"]  # the main run itself
            assert not sub.exists()
        else:
            sub_metrics = json.loads((sub / "metrics.json").read_text())
            assert sub_metrics["test/acc"] == metrics[f"test/acc@k={k}"]
            assert sub_metrics["n_params"] == k * 10 + 10  # a linear head on k components
            assert (sub / "checkpoints" / "best.ckpt").is_file()


def test_pca_mnist_runs_end_to_end_on_digits(tmp_path):
    ks = [2, 8, 32]
    metrics = run(make_cfg(["+exp=pca_digits", *TINY, f"report.ks={ks}"], tmp_path))
    check_pca_run(tmp_path, metrics, ks, own_k=32, rank=64)
    assert metrics["name"] == "pca_digits" and metrics["n_params"] == 32 * 10 + 10


def test_pca_mnist_accuracy_grows_with_k_and_is_high_with_all_components(tmp_path):
    """A few epochs of the linear head: all 64 components classify digits well."""
    metrics = run(make_cfg(["+exp=pca_digits", *QUIET, "trainer.max_epochs=6", "plots=false",
                            "model.n_components=64", "report.ks=[2,64]"], tmp_path))
    assert metrics["test/acc@k=64"] >= 0.9
    assert metrics["test/acc@k=2"] < metrics["test/acc@k=64"]
    assert not (tmp_path / "plots" / "explained_variance.png").exists()  # plots=false


def test_pca_report_rejects_k_beyond_the_features(tmp_path):
    with pytest.raises(ValueError, match=r"pca_report: expected report.ks in \[1, 64\]"):
        run(make_cfg(["+exp=pca_digits", *TINY, "report.ks=[8,100]"], tmp_path))


@needs_mnist
def test_pca_mnist_on_the_local_mnist_copy(tmp_path):
    ks = [4, 16]
    metrics = run(make_cfg(["+exp=pca_mnist", f"data.root={SHARED_DATA}",
                            "data.download=false", "data.limit_train=500",
                            "model.n_components=16", f"report.ks={ks}", *TINY], tmp_path))
    check_pca_run(tmp_path, metrics, ks, own_k=16, rank=450)  # 500 - 10% val


# --------------------------------------------------------------------------- zca_mlp
def test_zca_and_plain_mlp_start_from_the_same_weights(tmp_path):
    nets = {}
    for model in ("zca_mlp", "torch_mlp"):
        cfg = make_cfg(["+exp=zca_mlp", f"model={model}"], tmp_path)
        torch.manual_seed(cfg.seed)  # as train() seeds before build()
        nets[model] = build(cfg)[1]
    zca, plain = nets["zca_mlp"], nets["torch_mlp"]
    whitening, mlp = zca.net
    assert isinstance(whitening, ZCAWhitening) and whitening.num_features == 64
    assert zca.n_params == plain.n_params
    for a, b in zip(mlp.state_dict().values(), plain.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_zca_mlp_trains_the_whitening_statistics(tmp_path):
    run(make_cfg(["+exp=zca_mlp", "model=zca_mlp", *TINY], tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert int(state["net.0.num_batches_tracked"]) == 3
    cov = state["net.0.running_cov"]
    assert not torch.allclose(cov, torch.eye(64))  # moved from its initial identity
    torch.testing.assert_close(cov, cov.mT)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def test_cli_zca_mlp_sweep_compares_with_and_without_whitening(tmp_path):
    result = cli("+exp=zca_mlp", f"hydra.sweep.dir={tmp_path}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["model"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert set(rows) == {"torch_mlp", "zca_mlp"}
    assert all(r["status"] == "ok" and 0 <= float(r["test/acc"]) <= 1 for r in rows.values())
    assert rows["torch_mlp"]["n_params"] == rows["zca_mlp"]["n_params"]
    assert "| job | model | test/loss | test/acc |" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_cli_zca_mlp_default_sweep_both_learn_digits(tmp_path):
    """The experiment as the README runs it: 30 epochs each on digits."""
    result = cli("+exp=zca_mlp", f"hydra.sweep.dir={tmp_path}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["model"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert all(float(r["test/acc"]) >= 0.9 for r in rows.values())


@pytest.mark.parametrize("module", ["experiments.fitted", "experiments.reports.pca"])
def test_docstring_examples(module):
    """``experiments/`` is outside pytest's doctest paths; its examples run here."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- streamed fits
def test_shard_batches_puts_every_batch_back_together():
    x = torch.arange(23.0)[:, None].repeat(1, 2)
    y = torch.arange(23)
    batches = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 23, 5)]  # 5, 5, 5, 5, 3 rows
    for world in (1, 2, 3, 4):
        shards = [list(shard_batches(batches, rank, world)) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1  # the same number of steps on every rank
        for rank_parts in shards:
            assert all(len(px) >= 1 and len(px) == len(py) for px, py in rank_parts)
        steps = zip(*shards)
        got = torch.cat([torch.cat([px for px, _ in step]) for step in steps])
        torch.testing.assert_close(got, x)  # every row once, in order
    # 3 rows < 4 processes: the last batch joins the one before
    assert [len(px) for px, _ in shard_batches(batches, 0, 4)] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"^shard_batches: expected batches of at least "
                       r"world_size = 4 rows \(one per process\), got a first batch of 3"):
        list(shard_batches([(x[:3], y[:3])], 0, 4))
    with pytest.raises(ValueError, match=r"^shard_batches: expected 0 <= rank < world_size, "
                       r"got rank 2 of 2"):
        list(shard_batches(batches, 2, 2))
    with pytest.raises(ValueError, match=r"^shard_batches: expected at least one batch"):
        list(shard_batches([], 0, 1))


def test_stream_fit_modules_equals_fit_modules_through_earlier_steps():
    dm = synthetic(in_features=6)
    x, y = split_data(dm, "train")
    x = x.double()
    batches = [(x[i:i + 40], y[i:i + 40]) for i in range(0, len(x), 40)]
    torch.manual_seed(0)
    first = nn.Linear(6, 5).double()
    streamed = nn.Sequential(first, PCA(3), nn.Linear(3, 2))
    assert stream_fit_modules(streamed, batches) == ["1"]
    with torch.no_grad():
        ref = PCA(3).fit(first(x))
    torch.testing.assert_close(streamed[1].components_, ref.components_, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(streamed[1].mean_, ref.mean_, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"^stream_fit_modules: expected fit-style modules with "
                       r"partial_fit, got SpectralClustering \(net.0\); use fit_modules=memory"):
        stream_fit_modules(nn.Sequential(SpectralClustering(2), nn.Linear(2, 2)), batches)


def _pca_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    return {k[len("net.0."):]: v for k, v in state.items() if k.startswith("net.0.")}


def test_streaming_pca_digits_streams_the_in_memory_pca(tmp_path):
    cfg = make_cfg(["+exp=streaming_pca_digits", *TINY], tmp_path)
    assert cfg.fit_modules == "stream"
    datamodule, task = build(cfg)
    assert not task.net[0].is_fitted()  # left to the trainer's processes
    metrics = run(cfg)
    assert metrics["name"] == "streaming_pca_digits" and metrics["n_params"] == 32 * 10 + 10
    x_train, _ = split_data(datamodule, "train")
    ref = PCA(32).fit(x_train)
    state = _pca_state(tmp_path)
    assert int(state["n_samples_seen_"]) == len(x_train)  # every training row, once
    for key in ("mean_", "explained_variance_", "components_"):
        torch.testing.assert_close(state[key], getattr(ref, key), rtol=1e-4, atol=1e-4)


def test_fit_modules_config_choice_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"^config error at fit_modules: expected one of "
                       r"'memory', 'stream', got 'disk'"):
        run(make_cfg(["+exp=streaming_pca_digits", *TINY, "fit_modules=disk"], tmp_path))


@pytest.mark.slow
def test_streaming_pca_digits_two_ddp_processes_fit_the_one_process_pca(tmp_path):
    """trainer=ddp, 2 CPU processes on gloo: each rank streams its half of every batch and
    the PCA statistics are all-reduced: the fitted PCA is the one-process one."""
    one, two = tmp_path / "one", tmp_path / "two"
    run(make_cfg(["+exp=streaming_pca_digits", *TINY], one))
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "+exp=streaming_pca_digits", "trainer=ddp",
         "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.strategy.process_group_backend=gloo", *TINY, f"hydra.run.dir={two}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["device"] == "cpu x2 (DDPStrategy)"
    a, b = _pca_state(one), _pca_state(two)
    assert int(a["n_samples_seen_"]) == int(b["n_samples_seen_"]) > 0
    for key in ("mean_", "scatter_", "explained_variance_", "singular_values_", "components_"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5)
