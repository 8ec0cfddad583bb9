"""Experiments: configs compose, every experiment runs end to end, the CLI fails clearly.

In-process runs go through :func:`experiments.run.run` with configs from Hydra's compose
API; command-line tests run ``python -m experiments.run`` in a subprocess from the repo
root with the run directory in ``tmp_path``. Everything runs on tiny data on the CPU.
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
from experiment_helpers import CONFIGS, HAVE_MNIST, REPO, SHARED_DATA, TINY, make_cfg, needs_mnist
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.data import DigitsDataModule, MNISTDataModule, SyntheticDataModule
from experiments.fitted import stream_fit_modules
from experiments.models import sequential_mlp
from experiments.run import run
from experiments.summary import write_summary
from experiments.tasks import ClassificationTask, Task
from experiments.train import build
from lamods import ManualMLP

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "exp").glob("*.yaml"))
#: experiments with their own test file (not classification): tests/test_experiments_recsys.py,
#: tests/test_experiments_classic.py
OWN_TESTS = {"mf_movielens", "mf_sgd_movielens", "clustering_digits", "linreg"}
#: issue 17's studies (no data module, nothing trained): tests/test_experiments_labs.py
OWN_TESTS |= {"lsa_stdlib", "image_svd", "stability_lab", "spectral_pictures"}
#: the MNIST variants of pca/kernel/randproj_digits: run on the local MNIST copy in
#: tests/test_experiments_{decomp,kernel,randproj}.py
OWN_TESTS |= {"pca_mnist", "kernel_mnist", "randproj_mnist"}
CLASSIFICATION = [name for name in EXPERIMENTS if name not in OWN_TESTS]
#: group options that compose only beside their partners (a rating model needs rating data)
PARTNERS = {"movielens": ["model=mf", "task=rating"], "mf": ["data=movielens", "task=rating"],
            "diabetes": ["+exp=linreg"]}

#: offline data for each experiment that needs files
DATA_OVERRIDES = {
    "mlp_mnist": [f"data.root={SHARED_DATA}", "data.download=false", "data.limit_train=500"],
    "lowrank_mnist": [f"data.root={SHARED_DATA}", "data.download=false", "data.limit_train=500"],
}


def exp_overrides(name: str) -> list[str]:
    return [f"+exp={name}", *DATA_OVERRIDES.get(name, [])]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m experiments.run ARGS`` from the repo root."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- configs
def test_there_are_experiments():
    assert {"manual_mlp_digits", "mlp_mnist"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_experiment_config_composes_and_instantiates(name, tmp_path):
    cfg = make_cfg(exp_overrides(name), tmp_path)
    assert cfg.name == name
    datamodule, task = build(cfg)
    assert isinstance(task, Task)
    if cfg.fit_modules == "stream":  # fitted by the trainer's processes (StreamedFit): here
        datamodule.setup("fit")
        stream_fit_modules(task.net, datamodule.train_dataloader())
    x = torch.randn(3, cfg.data.in_features)
    assert task(x).shape == (3, cfg.data.num_classes)
    assert datamodule.batch_size == cfg.data.batch_size
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize(
    "group", ["data", "model", "optimizer", "scheduler", "task", "trainer"]
)
def test_every_group_option_composes(group, tmp_path):
    options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert options, f"no options in configs/{group}/"
    for option in options:
        cfg = make_cfg([f"{group}={option}", *PARTNERS.get(option, [])], tmp_path)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        # (options with partners read data to build: tests/test_experiments_recsys.py)
        if group in ("data", "model", "optimizer", "scheduler") and option not in PARTNERS:
            build(cfg)
        if group == "trainer" and option != "gpu":
            instantiate(cfg.trainer, accelerator="cpu", logger=False)


def test_default_run_is_manual_mlp_digits(tmp_path):
    default = OmegaConf.to_container(make_cfg([], tmp_path), resolve=True)
    explicit = OmegaConf.to_container(make_cfg(["+exp=manual_mlp_digits"], tmp_path), resolve=True)
    assert default == explicit
    assert default["data"]["_target_"].endswith("DigitsDataModule")
    assert default["model"]["net"]["_target_"] == "lamods.ManualMLP"


def test_model_sizes_follow_data_and_hidden(tmp_path):
    cfg = make_cfg(["model.hidden=[32,16]", "data=synthetic", "data.in_features=5"], tmp_path)
    assert list(cfg.model.net.sizes) == [5, 32, 16, 4]
    net = instantiate(cfg.model.net)
    assert isinstance(net, ManualMLP) and net.sizes == [5, 32, 16, 4]


@pytest.mark.parametrize("module", [
    "experiments.resolvers", "experiments.models", "experiments.outputs",
    "experiments.data.base", "experiments.data.digits", "experiments.tasks.classification",
    "experiments.tasks.base", "experiments.models",
])
def test_docstring_examples(module):
    """``experiments/`` is outside pytest's doctest paths; its examples run here."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- data
def test_digits_split_is_stratified_and_seeded():
    a = DigitsDataModule(in_features=64, num_classes=10, seed=0)
    b = DigitsDataModule(in_features=64, num_classes=10, seed=0)
    c = DigitsDataModule(in_features=64, num_classes=10, seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert sum(a.sizes().values()) == 1797
    x, y = a.datasets["test"].tensors
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.bincount(y, minlength=10).min() >= 30  # every class in the test split
    assert torch.equal(x, b.datasets["test"].tensors[0])
    assert not torch.equal(x, c.datasets["test"].tensors[0])


def test_synthetic_clusters_shapes():
    dm = SyntheticDataModule(in_features=7, num_classes=3, n_samples=300, seed=0)
    dm.setup()
    assert dm.sizes() == {"test": 60, "val": 30, "train": 210}
    batch_x, batch_y = next(iter(dm.train_dataloader()))
    assert batch_x.shape == (64, 7) and batch_y.dtype == torch.long


def test_data_module_checks_config_against_data():
    dm = DigitsDataModule(in_features=784, num_classes=10)
    with pytest.raises(ValueError, match=r"expected test features of shape \(n, 784\)"):
        dm.setup()


def test_mnist_without_files_explains(tmp_path):
    dm = MNISTDataModule(root=tmp_path, download=False, in_features=784, num_classes=10)
    dm.prepare_data()  # download=False: nothing to do
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "data.download=true" in message and "data.root=" in message


@needs_mnist
def test_mnist_local_subset_and_limit_train():
    dm = MNISTDataModule(root=SHARED_DATA, download=False, in_features=784, num_classes=10,
                         limit_train=1000, val_fraction=0.1, seed=0)
    dm.prepare_data()
    dm.setup()
    sizes = dm.sizes()
    assert sizes["train"] + sizes["val"] == 1000 and sizes["val"] == 100
    assert sizes["test"] > 0
    x, _ = dm.datasets["train"].tensors
    assert x.shape[1] == 784 and 0.0 <= x.min() and x.max() <= 1.0


def test_sequential_mlp_matches_manual_mlp_initialisation():
    torch.manual_seed(0)
    manual = ManualMLP([20, 16, 8, 3], activation="tanh")
    torch.manual_seed(0)
    seq = sequential_mlp([20, 16, 8, 3], activation="tanh")
    x = torch.randn(5, 20)
    torch.testing.assert_close(manual(x), seq(x))


def test_classification_task_rejects_wrong_logits():
    task = ClassificationTask(torch.nn.Linear(4, 5), torch.optim.SGD, num_classes=3)
    with pytest.raises(ValueError, match=r"expected logits of shape \(2, 3\), got \(2, 5\)"):
        task.step((torch.randn(2, 4), torch.tensor([0, 1])), "train")


# --------------------------------------------------------------------------- runs
def check_run_dir(out: Path, metrics: dict) -> None:
    """A run directory holds what the README promises."""
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/loss"] > 0
    assert metrics["n_params"] > 0 and metrics["wall_time_s"] > 0 and metrics["device"] == "cpu"
    assert (out / "config.yaml").is_file()
    resolved = OmegaConf.load(out / "config.yaml")
    assert "${" not in OmegaConf.to_yaml(resolved)
    rows = read_csv(out / "csv" / "metrics.csv")
    assert {"train/loss", "val/acc", "test/acc"} <= set(rows[0])
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "plots" / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_experiment_runs_end_to_end(name, tmp_path):
    if name in DATA_OVERRIDES and "mnist" in name and not HAVE_MNIST:
        pytest.skip(f"no local MNIST copy at {SHARED_DATA} (no network)")
    metrics = run(make_cfg([*exp_overrides(name), *TINY], tmp_path))
    check_run_dir(tmp_path, metrics)
    assert metrics["name"] == name


def test_synthetic_data_with_torch_mlp_and_scheduler(tmp_path):
    cfg = make_cfg(["data=synthetic", "model=torch_mlp", "scheduler=cosine", "optimizer=sgd",
                    *TINY], tmp_path)
    metrics = run(cfg)
    check_run_dir(tmp_path, metrics)


def test_same_seed_same_metrics(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=5", "seed=3",
                 "plots=false"]
    first = run(make_cfg(overrides, tmp_path / "a"))
    second = run(make_cfg(overrides, tmp_path / "b"))
    other = run(make_cfg([*overrides, "seed=4"], tmp_path / "c"))
    for key in ("test/acc", "test/loss", "val/acc_best"):
        assert first[key] == second[key], key
    assert first["test/loss"] != other["test/loss"]


def test_resume_from_checkpoint(tmp_path):
    overrides = [*TINY, "trainer.limit_train_batches=4", "plots=false"]
    first = run(make_cfg([*overrides, "trainer.max_epochs=2"], tmp_path / "a"))
    assert first["epochs"] == 2
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = run(make_cfg([*overrides, "trainer.max_epochs=3", f"ckpt_path={last}"],
                           tmp_path / "b"))
    assert resumed["epochs"] == 3
    epochs = {row["epoch"] for row in read_csv(tmp_path / "b" / "csv" / "metrics.csv")
              if row["train/loss"]}
    assert epochs == {"2"}  # only the third epoch was trained again


def test_summary_of_job_directories(tmp_path):
    for job, (hidden, acc) in enumerate([(16, 0.5), (32, 0.75)]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(
            f"- +exp=manual_mlp_digits\n- model.hidden={hidden}\n")
        (tmp_path / str(job) / "metrics.json").write_text(
            json.dumps({"test/acc": acc, "n_params": hidden, "device": "cpu"}))
    (tmp_path / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text(
        "- +exp=manual_mlp_digits\n- model.hidden=64\n")  # a job that failed
    csv_path, md_path = write_summary(tmp_path)
    rows = read_csv(csv_path)
    assert [(r["model.hidden"], r["test/acc"], r["status"]) for r in rows] == [
        ("16", "0.5", "ok"), ("32", "0.75", "ok"), ("64", "", "failed")]
    md = md_path.read_text()
    assert "Common overrides: `exp=manual_mlp_digits`" in md
    assert "| job | model.hidden | test/acc | n_params | device | status |" in md
    assert "| 1 | 32 | 0.7500 | 32 | cpu | ok |" in md


# --------------------------------------------------------------------------- command line
def test_cli_help_lists_experiments():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert "exp: " + ", ".join(EXPERIMENTS) in result.stdout
    assert "+exp=NAME" in result.stdout


def test_cli_unknown_experiment_names_the_choices(tmp_path):
    result = cli("+exp=nope", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'exp/nope'" in result.stderr
    assert "Available options in 'exp':\n\t" + "\n\t".join(EXPERIMENTS) in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_cli_unknown_group_option_names_the_choices(tmp_path):
    result = cli("data=cifar", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'data/cifar'" in result.stderr
    assert "Available options in 'data':\n\t" + "\n\t".join(
        sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))) \
        in result.stderr


def test_cli_unknown_key_fails_before_training(tmp_path):
    result = cli("model.hiden=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not override 'model.hiden'" in result.stderr
    assert "Key 'hiden' not in 'ManualMLPModel'" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_bad_value_fails_before_training(tmp_path):
    cfg = make_cfg(["model.activation=relux", *TINY], tmp_path)
    with pytest.raises(Exception, match="Activation: expected one of identity, relu, leaky_relu, "
                                        "tanh, sigmoid, gelu, got 'relux'"):
        run(cfg)
    assert not (tmp_path / "csv").exists()  # stopped before the trainer was built


def test_cli_multirun_writes_summary(tmp_path):
    result = cli("-m", "+exp=manual_mlp_digits", "model.hidden=16,32",
                 f"hydra.sweep.dir={tmp_path}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(tmp_path / "summary.csv")
    assert [r["model.hidden"] for r in rows] == ["16", "32"]
    assert all(r["status"] == "ok" and 0 <= float(r["test/acc"]) <= 1 for r in rows)
    assert int(rows[0]["n_params"]) < int(rows[1]["n_params"])
    md = (tmp_path / "summary.md").read_text()
    assert "| job | model.hidden | test/acc |" in md.replace(" test/loss |", "")
    assert "Summary written to" in result.stdout


@needs_mnist
def test_cli_mlp_mnist_manual_and_torch_identical(tmp_path):
    """The experiment's own sweep: ManualMLP and nn.Sequential, same seed, same numbers."""
    result = cli("+exp=mlp_mnist", f"data.root={SHARED_DATA}", "data.download=false",
                 "data.limit_train=1000", "trainer.max_epochs=2",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["model"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert set(rows) == {"manual_mlp", "torch_mlp"}
    manual, torch_ = rows["manual_mlp"], rows["torch_mlp"]
    assert manual["test/acc"] == torch_["test/acc"]
    assert float(manual["test/acc"]) > 0.5  # 10 classes: chance is 0.1
    assert float(manual["test/loss"]) == pytest.approx(float(torch_["test/loss"]), rel=1e-4)
    assert manual["n_params"] == torch_["n_params"]


@pytest.mark.slow
def test_cli_default_command_reaches_95_percent(tmp_path):
    """The README's main command: ManualMLP on digits, offline, test accuracy >= 0.95."""
    result = cli(f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.95
    assert "manual_mlp_digits: test/loss=" in result.stdout
    check_run_dir(tmp_path, metrics)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_trainer_with_bf16_uses_cuda(tmp_path):
    cfg = make_cfg([*TINY, "trainer=gpu", "trainer.precision=bf16-mixed"], tmp_path)
    metrics = run(cfg)
    assert metrics["device"].startswith("cuda") and metrics["precision"] == "bf16-mixed"
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.slow
def test_cli_ddp_two_cpu_processes_on_gloo(tmp_path):
    result = cli("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.strategy.process_group_backend=gloo", *TINY,
                 f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"] == "cpu x2 (DDPStrategy)"
    assert metrics["epochs"] == 1 and "val/acc_best" in metrics
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "plots" / "curves.png").is_file()
    assert result.stdout.count("manual_mlp_digits: test/loss=") == 1  # rank zero only
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hydra", "checkpoints", "config.yaml", "csv", "metrics.json", "plots", "run.log"]
