"""Issue 5's experiment ``lowrank_mnist``: train an MLP, ``lamods.compress`` it at several ranks
and energies, test each without and with a short fine-tune (:mod:`experiments.reports.lowrank`).

Runs are in-process through :func:`experiments.run.run` on digits with tiny settings (a few
batches, one epoch) and on the local MNIST subset (skipped without it), run directories in
``tmp_path``.
"""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import pytest
import torch
from experiment_helpers import SHARED_DATA, TINY, make_cfg, needs_mnist
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from experiments.reports.lowrank import (
    PLOT_FILE,
    REPORT_FILE,
    lowrank_report,
    setting_name,
    setting_row,
)
from experiments.run import run
from lamods import compress

#: the experiment on digits with three settings and a one-epoch fine-tune
DIGITS = ["+exp=lowrank_mnist", "data=digits", "report.ranks=[4,64]", "report.energies=[0.9]",
          "report.finetune_epochs=1"]
ROW_KEYS = {"setting", "rank", "energy", "ranks", "layers_replaced", "layers_kept",
            "params_before", "params_after", "ratio", "model_params", "model_ratio",
            "rel_error", "rel_error_max", "acc_compressed", "acc_finetuned", "drop",
            "drop_vs_control", "meets_target"}


def trained_net(cfg: DictConfig, run_dir: Path) -> nn.Module:
    """The run's network with the weights of its best checkpoint."""
    net = instantiate(cfg.model.net)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return net


# --------------------------------------------------------------------------- configs
def test_config_is_the_issue_mlp_on_mnist(tmp_path):
    cfg = make_cfg(["+exp=lowrank_mnist"], tmp_path)
    assert cfg.name == "lowrank_mnist"
    assert cfg.data._target_.endswith("MNISTDataModule")
    assert list(cfg.model.net.sizes) == [784, 512, 256, 10]
    assert cfg.report._target_ == "experiments.reports.lowrank_report"
    net = instantiate(cfg.model.net)
    assert [type(m) for m in net if not isinstance(m, nn.ReLU)] == [nn.Linear] * 3
    digits = make_cfg(["+exp=lowrank_mnist", "data=digits"], tmp_path)
    assert list(digits.model.net.sizes) == [64, 512, 256, 10]
    report = instantiate(cfg.report)
    assert report.func is lowrank_report and report.keywords["finetune_epochs"] >= 1


def test_docstring_examples():
    module = importlib.import_module("experiments.reports.lowrank")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_setting_row_and_target():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    _, report = compress(net, rank=4)
    row = setting_row(setting_name(rank=4), report, 0.95, 0.80, 0.945, target_ratio=4.0,
                      target_drop=0.01, control_acc=0.96)
    assert set(row) == ROW_KEYS
    assert row["setting"] == "rank=4" and row["rank"] == 4 and row["energy"] is None
    assert row["ranks"] == {"0": 4, "2": 4} and row["layers_replaced"] == 2
    assert row["params_before"] == report.params_before == 64 * 48 + 48 + 48 * 10 + 10
    assert row["params_after"] == 4 * (64 + 48 + 1) + 48 + 4 * (48 + 10 + 1) + 10
    assert row["ratio"] == pytest.approx(row["params_before"] / row["params_after"])
    assert row["drop"] == pytest.approx(0.005) and row["drop_vs_control"] == pytest.approx(0.015)
    assert row["meets_target"] is True
    assert setting_row("rank=4", report, 0.95, 0.8, 0.93, target_ratio=4.0,
                       target_drop=0.01)["meets_target"] is False  # 2 points lost
    assert setting_row("rank=4", report, 0.95, 0.8, 0.95, target_ratio=5.0,
                       target_drop=0.01)["meets_target"] is False  # 4.5x < 5x
    assert setting_row("rank=4", report, None, None, None, target_ratio=4.0,
                       target_drop=0.01)["meets_target"] is None  # no test run
    json.dumps(row)


def test_report_needs_a_setting(tmp_path):
    cfg = make_cfg(["+exp=lowrank_mnist", "data=digits"], tmp_path)
    with pytest.raises(ValueError, match="expected at least one of report.ranks and "
                                         "report.energies, got neither"):
        lowrank_report(cfg=cfg, datamodule=None, task=None, output_dir=tmp_path, metrics={},
                       ranks=[], energies=[])


# --------------------------------------------------------------------------- runs
def test_runs_end_to_end_on_digits(tmp_path):
    cfg = make_cfg([*DIGITS, *TINY], tmp_path)
    metrics = run(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert {"test/acc", "lowrank/target", "lowrank/dense", "lowrank/settings"} <= set(metrics)
    rows = metrics["lowrank/settings"]
    assert [r["setting"] for r in rows] == ["rank=4", "rank=64", "energy=0.9"]
    assert all(set(r) == ROW_KEYS for r in rows)

    dense = metrics["lowrank/dense"]
    assert dense["params"] == metrics["n_params"] == 64 * 512 + 512 + 512 * 256 + 256 + 2570
    assert dense["acc"] == metrics["test/acc"] and 0 <= dense["acc_finetuned"] <= 1

    # every row agrees with lamods.compress run again on the trained weights
    net = trained_net(cfg, tmp_path)
    markdown = (tmp_path / REPORT_FILE).read_text()
    for row in rows:
        setting = {"rank": row["rank"]} if row["rank"] is not None else {"energy": row["energy"]}
        small, report = compress(net, **setting)
        totals = report.as_dict()["totals"]
        assert row["params_before"] == totals["params_before"]
        assert row["params_after"] == totals["params_after"]
        assert row["ratio"] == pytest.approx(totals["ratio"])
        assert row["model_params"] == totals["model_params_after"]
        assert row["model_params"] == sum(p.numel() for p in small.parameters())
        assert row["layers_replaced"] == totals["layers_replaced"]
        assert row["ranks"] == {lay.name: lay.rank for lay in report.replaced}
        assert row["rel_error"] == pytest.approx({lay.name: lay.rel_error
                                                 for lay in report.replaced})
        assert report.as_markdown() in markdown
        # the fine-tuned checkpoint holds the compressed network
        sub = tmp_path / "lowrank" / row["setting"]
        state = torch.load(sub / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
        assert sum(v.numel() for k, v in state.items() if k.startswith("net.")) == \
            row["model_params"]
        assert (sub / "csv" / "metrics.csv").is_file()
        for value in (row["acc_compressed"], row["acc_finetuned"]):
            assert 0.0 <= value <= 1.0
        assert row["drop"] == pytest.approx(metrics["test/acc"] - row["acc_finetuned"])
        assert row["meets_target"] == (row["ratio"] >= 4 and row["drop"] <= 0.01 + 1e-12)

    # rank 4: every layer; rank 64 > min(64, 512) saves nothing on the first layer and
    # exceeds the head's 10 outputs: only 512 -> 256 is replaced
    assert rows[0]["ranks"] == {"0": 4, "2": 4, "4": 4}
    assert rows[1]["ranks"] == {"2": 64} and rows[1]["layers_kept"] == 2
    assert rows[1]["params_before"] == 512 * 256 + 256
    assert rows[1]["params_after"] == 64 * (512 + 256 + 1) + 256

    target = metrics["lowrank/target"]
    assert target["min_ratio"] == 4.0 and target["max_drop"] == 0.01
    meeting = [r for r in rows if r["meets_target"]]
    assert target["met"] == bool(meeting)
    assert target["setting"] == (min(meeting, key=lambda r: r["model_params"])["setting"]
                                 if meeting else None)
    assert "low-rank compression" in markdown and "Target: at least 4x" in markdown
    assert (tmp_path / "plots" / PLOT_FILE).stat().st_size > 1000
    assert (tmp_path / "plots" / "curves.png").is_file()
    assert (tmp_path / "lowrank" / "dense" / "checkpoints" / "best.ckpt").is_file()


def test_without_test_run_reports_compression_only(tmp_path):
    cfg = make_cfg([*DIGITS, *TINY, "test=false", "report.finetune_dense=false",
                    "report.exclude=[\"4\"]"], tmp_path)
    metrics = run(cfg)
    rows = metrics["lowrank/settings"]
    assert all(r["acc_compressed"] is None and r["acc_finetuned"] is None for r in rows)
    assert all("4" not in r["ranks"] for r in rows)  # the head is excluded
    assert metrics["lowrank/target"]["met"] is None
    assert metrics["lowrank/dense"]["acc"] is None
    assert (tmp_path / REPORT_FILE).is_file()
    assert not (tmp_path / "plots" / PLOT_FILE).exists()
    assert not (tmp_path / "lowrank").exists()


@needs_mnist
def test_runs_on_the_local_mnist_subset(tmp_path):
    cfg = make_cfg(["+exp=lowrank_mnist", f"data.root={SHARED_DATA}", "data.download=false",
                    "data.limit_train=1000", "trainer.max_epochs=3", "report.ranks=[16,64]",
                    "report.energies=[0.8]", "report.finetune_epochs=1",
                    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"],
                   tmp_path)
    metrics = run(cfg)
    rows = {r["setting"]: r for r in metrics["lowrank/settings"]}
    assert metrics["n_params"] == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    rank64 = rows["rank=64"]
    assert rank64["ranks"] == {"0": 64, "2": 64}
    assert rank64["params_after"] == 64 * (784 + 512 + 1) + 512 + 64 * (512 + 256 + 1) + 256
    assert rank64["ratio"] > 4
    # 3 epochs on 900 images: about 0.78 dense, 0.77 at rank 64, 0.83 after one more epoch
    assert rank64["acc_compressed"] > 0.6 and rank64["acc_finetuned"] > 0.7
    assert (tmp_path / "plots" / PLOT_FILE).is_file()
