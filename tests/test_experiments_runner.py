"""The runner around an experiment (issue 14): run directories that never collide, typed
configs that fail before training, ``experiments.eval`` and ``Task.load_from_checkpoint``,
safe loading, logger and callbacks groups, the Optuna sweep, failed sweep jobs, a quiet
console and ``trainer=gpu`` without CUDA.

Command-line runs are subprocesses from the repo root with every output under ``tmp_path``
(``paths.root=...`` or ``hydra.*.dir=...``); everything is tiny and on the CPU.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from experiment_helpers import REPO, TINY, make_cfg

from experiments.run import run
from experiments.schema import ConfigError
from experiments.tasks import ClassificationTask, Task


def cli(*args: str, module: str = "experiments.run") -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- run directories
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    args = [sys.executable, "-m", "experiments.run", f"paths.root={tmp_path}", *TINY]
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2  # HH-MM-SS_PID-XXXX: never the same directory
    for d in runs:
        assert json.loads((d / "metrics.json").read_text())["test/acc"] >= 0
        assert len(read_csv(d / "csv" / "metrics.csv")) > 0


# --------------------------------------------------------------------------- typed configs
@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=ten", ["trainer.max_epochs", "Integer", "'ten'"]),
    ("optimizer.lr=fast", ["optimizer.lr", "Float", "'fast'"]),
    ("model.hidden=abc", ["model.net.sizes", "model.hidden", "positive int", "'abc'"]),
    ("+model.hiden=64", ["model.hiden", "ManualMLPModel"]),
    ("data.batch_size=[1]", ["data.batch_size", "Integer"]),
])
def test_bad_override_fails_before_training_naming_the_key(override, expected, tmp_path):
    result = cli(override, f"paths.root={tmp_path}")
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, (text, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.ckpt"))
    assert "Total params" not in result.stdout  # no model summary: nothing was built


def test_unknown_model_key_added_in_process_fails(tmp_path):
    with pytest.raises(ConfigError, match="model.hiden: unknown key .*ManualMLPModel"):
        run(make_cfg(["+model.hiden=64", *TINY], tmp_path))
    assert not (tmp_path / "csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_trainer_without_cuda_says_to_use_cpu(tmp_path):
    cfg = make_cfg(["trainer=gpu", *TINY], tmp_path)
    assert cfg.trainer.accelerator == "gpu"  # composes
    with pytest.raises(ConfigError, match=r"trainer.accelerator.*Use trainer=cpu"):
        run(cfg)
    result = cli("trainer=gpu", f"paths.root={tmp_path}")
    assert result.returncode != 0 and "Use trainer=cpu" in result.stderr


# --------------------------------------------------------------------------- eval, reload
def test_load_from_checkpoint_and_eval_entry_point(tmp_path):
    out = tmp_path / "run"
    metrics = run(make_cfg([*TINY, "model=pca_classifier", "model.n_components=8",
                            "model.hidden=[]", "plots=false"], out))
    best = out / "checkpoints" / "best.ckpt"
    task = Task.load_from_checkpoint(best)  # the class that saved it, from its configs
    assert type(task) is ClassificationTask and task.hparams.num_classes == 10
    same = ClassificationTask.load_from_checkpoint(best)
    x = torch.rand(4, 64)
    task.eval(), same.eval()
    torch.testing.assert_close(task(x), same(x))
    assert task.net[0].is_fitted()  # the fitted PCA came back from the checkpoint's buffers

    result = cli(f"ckpt_path={best}", f"paths.root={tmp_path}", "trainer.limit_test_batches=2",
                 module="experiments.eval")
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluated,) = (tmp_path / "outputs" / "eval").glob("*/*/metrics.json")
    scores = json.loads(evaluated.read_text())
    assert scores["test/acc"] == metrics["test/acc"]  # the same batches, the same weights
    assert scores["task"] == "ClassificationTask" and "(eval): test/loss=" in result.stdout


class _Payload:
    """Unpickling this creates ``marker``: proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    out = tmp_path / "run"
    run(make_cfg([*TINY, "plots=false"], out))
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["extra"] = _Payload(marker)
    evil = out / "checkpoints" / "evil.ckpt"
    torch.save(ckpt, evil)

    with pytest.raises(pickle.UnpicklingError):
        Task.load_from_checkpoint(evil)
    with pytest.raises(pickle.UnpicklingError):
        run(make_cfg([*TINY, "trainer.max_epochs=2", f"ckpt_path={evil}"], out))
    result = cli(f"ckpt_path={evil}", f"paths.root={tmp_path}", module="experiments.eval")
    assert result.returncode != 0 and "Weights only load failed" in result.stderr
    assert not marker.exists()
    unsafe = {"weights_only": False}
    with pytest.raises(ValueError, match="weights_only=True only"):
        Task.load_from_checkpoint(evil, **unsafe)


def test_saved_config_naming_foreign_code_is_refused(tmp_path):
    out = tmp_path / "run"
    run(make_cfg([*TINY, "plots=false"], out))
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"_target_": "os.system", "_args_": ["true"]}
    torch.save(ckpt, out / "checkpoints" / "bad.ckpt")
    with pytest.raises(ValueError, match="refusing _target_ 'os.system'"):
        Task.load_from_checkpoint(out / "checkpoints" / "bad.ckpt")


def test_no_weights_only_false_anywhere():
    hits = [str(p) for d in ("experiments", "tests", "lamods") for p in (REPO / d).rglob("*.py")
            if "weights_only=" + "False" in p.read_text()]
    assert hits == []


# --------------------------------------------------------------------------- loggers, callbacks
def test_tensorboard_logger_and_early_stopping(tmp_path):
    metrics = run(make_cfg([*TINY, "trainer.max_epochs=5", "logger=tensorboard",
                            "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                            "callbacks.early_stopping.min_delta=1.0"], tmp_path))
    # val/acc can never improve by 1.0: the first epoch sets the best, the second stops
    assert metrics["epochs"] == 2
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert any(r.get("lr-Adam") for r in rows)  # the LR monitor of callbacks=default
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


# --------------------------------------------------------------------------- sweeps
def test_optuna_search_on_a_tiny_budget(tmp_path):
    result = cli("-m", "hparams_search=manual_mlp_optuna", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.sampler.n_startup_trials=1", f"hydra.sweep.dir={tmp_path}",
                 *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(tmp_path / "summary.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert "optimizer.lr" in rows[0]  # sampled: differs between trials
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.lr" in best


def test_sweep_with_a_failing_job_summarises_the_others(tmp_path):
    result = cli("-m", "model.hidden=16,0", f"hydra.sweep.dir={tmp_path}", *TINY)
    assert result.returncode == 1  # after writing the summary
    rows = read_csv(tmp_path / "summary.csv")
    assert [(r["model.hidden"], r["status"]) for r in rows] == [("16", "ok"), ("0", "failed")]
    assert "model.hidden" in rows[1]["error"]
    assert float(rows[0]["test/acc"]) >= 0
    md = (tmp_path / "summary.md").read_text()
    assert "Failed jobs (1 of 2" in md and "job 1 (model.hidden=0)" in md
    assert "1 of 2 jobs failed: job 1 (model.hidden=0)" in result.stderr
    assert (tmp_path / "1" / "error.txt").is_file()


# --------------------------------------------------------------------------- console
def test_console_is_quiet(tmp_path):
    """A report's extra runs print one summary line each; one model summary, no adverts."""
    result = cli("+exp=randproj_digits", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                 "report.ks=[4,8]", "report.n_points=50", "model.out_features=8",
                 f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.count("Total params") == 1  # the main run's model summary only
    assert "litlogger" not in out + result.stderr and "Tip:" not in out
    assert "epoch 2/2 " in out  # not a terminal: one line per epoch, no bars
    assert "\r" not in out
    assert out.count("randproj_digits sparse k=4: test/") == 1  # each extra run: one line
    assert len(out.encode()) < 20_000
    assert "Warning" not in result.stderr
