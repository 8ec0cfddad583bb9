"""Issue 17's ``cnn_digits``: the same small CNN with lamods.ManualConv2d and with nn.Conv2d
trains to the same numbers (in-process runs on tiny settings, CPU, run dirs in tmp_path)."""

from __future__ import annotations

import doctest

import pytest
import torch
from experiment_helpers import TINY, make_cfg

import experiments.models
from experiments.models import small_cnn
from experiments.run import run
from experiments.train import build
from lamods import ManualConv2d


def test_small_cnn_docstring_examples():
    result = doctest.testmod(experiments.models, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_cnn_digits_composes_as_a_two_job_sweep(tmp_path):
    from experiment_helpers import CONFIGS
    from omegaconf import OmegaConf

    exp = OmegaConf.load(CONFIGS / "exp" / "cnn_digits.yaml")
    assert exp.hydra.mode == "MULTIRUN"
    assert exp.hydra.sweeper.params.model == "manual_cnn,torch_cnn"
    cfg = make_cfg(["+exp=cnn_digits"], tmp_path)
    torch.manual_seed(cfg.seed)  # as train() seeds before building
    _, task = build(cfg)
    convs = [m for m in task.net.modules() if isinstance(m, ManualConv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(1, 16, (1, 1)),
                                                                          (16, 32, (2, 2))]
    torch.manual_seed(cfg.seed)
    _, ref = build(make_cfg(["+exp=cnn_digits", "model=torch_cnn"], tmp_path))
    assert not any(isinstance(m, ManualConv2d) for m in ref.net.modules())
    # the same seed draws the same weights in both
    for (n, a), (_, b) in zip(task.net.state_dict().items(), ref.net.state_dict().items()):
        assert torch.equal(a, b), n


def test_manual_and_torch_cnn_train_to_the_same_numbers(tmp_path):
    overrides = ["+exp=cnn_digits", *TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=8",
                 "plots=false", "model.channels=[4,8]"]
    ours = run(make_cfg([*overrides, "model=manual_cnn"], tmp_path / "manual"))
    ref = run(make_cfg([*overrides, "model=torch_cnn"], tmp_path / "torch"))
    assert ours["n_params"] == ref["n_params"] > 0
    assert ours["test/acc"] == ref["test/acc"]
    assert ours["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-4)
    assert ours["val/acc_best"] == ref["val/acc_best"]


def test_small_cnn_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"expected image_shape \(C, H, W\) with C\*H\*W = "
                                         r"in_features = 64, got \[1, 28, 28\]"):
        small_cnn("manual", 64, [1, 28, 28], [4], 10)
    with pytest.raises(ValueError, match=r"expected conv in \('manual', 'torch'\), got 'fft'"):
        small_cnn("fft", 64, [1, 8, 8], [4], 10)
