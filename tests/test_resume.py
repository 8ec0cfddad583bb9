"""Exact resume: a run stopped by SIGTERM after N of 2N epochs and resumed from its
``last.ckpt`` ends with the same numbers as a run that was never stopped (same seed, CPU),
in the same run directory, with every epoch in its CSV log once.

The stop is real: a callback sends the process ``SIGTERM`` at the end of epoch N, Lightning
stops at the next step boundary and :class:`experiments.callbacks.LastCheckpoint` has the
state of that epoch's end. The run uses a step scheduler so the scheduler's state is part of
what must come back.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from experiment_helpers import TINY, make_cfg

from experiments.run import run

N = 2
BASE = [*TINY, "trainer.limit_train_batches=5", f"trainer.max_epochs={2 * N}", "plots=false",
        "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.7", "seed=5"]
SIGTERM = ["+callbacks.sigterm._target_=experiment_helpers.SigtermAfter",
           f"+callbacks.sigterm.epochs={N}"]


def epoch_rows(path: Path) -> dict[tuple[int, str], str]:
    """``(epoch, metric) -> value`` of every epoch-level value in a CSV log."""
    out: dict[tuple[int, str], str] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row["epoch"]:
                continue
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    assert (int(row["epoch"]), key) not in out, f"epoch {row['epoch']} twice"
                    out[int(row["epoch"]), key] = value
    return out


def test_sigterm_then_resume_is_bit_exact(tmp_path):
    whole = run(make_cfg(BASE, tmp_path / "whole"))
    out = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        run(make_cfg([*BASE, *SIGTERM], out))
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file() and not (out / "metrics.json").exists()
    stopped = epoch_rows(out / "csv" / "metrics.csv")
    assert max(epoch for epoch, _ in stopped) == N - 1  # stopped after N epochs

    resumed = run(make_cfg([*BASE, f"ckpt_path={last}"], out))
    for key in ("test/acc", "test/loss", "val/acc_best", "epochs"):
        assert resumed[key] == whole[key], key  # to the last digit
    # the same run directory, its log appended: every epoch once, the same values
    assert epoch_rows(out / "csv" / "metrics.csv") == epoch_rows(tmp_path / "whole" / "csv" /
                                                                  "metrics.csv")
    assert resumed["best_checkpoint"] == str(out / "checkpoints" / "best.ckpt")


def test_last_checkpoint_follows_every_epoch(tmp_path):
    """``last.ckpt`` is the last epoch's state even when that epoch was not the best."""
    import torch

    run(make_cfg([*TINY, "trainer.max_epochs=3", "plots=false"], tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert {"torch", "numpy", "python"} <= set(
        next(v for k, v in last["callbacks"].items() if k.startswith("RNGState")))
