"""Issue 8's experiment ``kernel_mnist``: RFF, Nystrom, exact kernel ridge and deep-kernel heads
against a linear head, accuracy against the number of features
(:mod:`experiments.reports.kernel`).

Runs are in-process through :func:`experiments.run.run` on tiny data, on the CPU, run
directories in ``tmp_path``.
"""

from __future__ import annotations

import doctest
import json

import pytest
import torch
from experiment_helpers import SHARED_DATA, TINY, make_cfg, needs_mnist

import experiments.reports.kernel as kernel
from experiments.models import kernel_classifier_net
from experiments.run import run
from experiments.train import build
from lamods.layers import NystromFeatures, RandomFourierFeatures


def test_docstring_examples():
    assert doctest.testmod(kernel, raise_on_error=True).failed == 0


@pytest.mark.parametrize(("method", "cls"), [("rff", RandomFourierFeatures),
                                             ("nystrom", NystromFeatures),
                                             ("deep", torch.nn.Sequential),
                                             ("linear", torch.nn.Identity)])
def test_model_builds_each_method(method, cls, tmp_path):
    cfg = make_cfg(["+exp=kernel_digits", f"model.method={method}", "model.n_features=32"],
                   tmp_path)
    _, task = build(cfg)
    assert isinstance(task.net[0], cls)
    assert task(torch.rand(3, 64)).shape == (3, 10)
    if method == "nystrom":
        assert task.net[0].is_fitted()  # fitted on the training split by build
    if method == "deep":  # the lengthscale trains with the network
        assert any(n.endswith("log_lengthscale") for n, _ in task.named_parameters())


def test_bad_method_is_a_clear_error():
    with pytest.raises(ValueError, match="method"):
        kernel_classifier_net("svm", 4, 8, 2)


def test_kernel_mnist_runs_end_to_end(tmp_path):
    cfg = make_cfg(["+exp=kernel_digits", *TINY, "report.features=[8,32]",
                    "report.deep_features=16"], tmp_path)
    metrics = run(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    keys = [f"test/acc@{m},D={d}" for m in ("rff", "nystrom") for d in (8, 32)]
    keys += ["test/acc@kernel_ridge", "test/acc@linear", "test/acc@deep,D=16"]
    for key in keys:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/acc@linear"] == metrics["test/acc"]  # the main run is the baseline
    # the exact kernel ridge classifier uses the whole training split (no trainer limits)
    assert metrics["test/acc@kernel_ridge"] > 0.9
    assert metrics["kernel/lengthscale"] == pytest.approx(3.06, abs=0.2)  # median heuristic
    for name in ("curves", "acc_vs_features"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000, name
    sub = json.loads((tmp_path / "nystrom" / "D=32" / "metrics.json").read_text())
    assert sub["test/acc"] == metrics["test/acc@nystrom,D=32"]
    assert sub["n_params"] == 32 * 10 + 10  # only the head trains; landmarks are buffers
    assert not (tmp_path / "linear").exists()  # the main run itself


def test_fixed_lengthscale_and_no_plots(tmp_path):
    cfg = make_cfg(["+exp=kernel_digits", *TINY, "report.features=[8]", "report.methods=[rff]",
                    "report.deep_features=null", "report.lengthscale=2.5", "plots=false"],
                   tmp_path)
    metrics = run(cfg)
    assert metrics["kernel/lengthscale"] == 2.5
    assert "test/acc@rff,D=8" in metrics and not any("deep" in k for k in metrics)
    assert not (tmp_path / "plots" / "acc_vs_features.png").exists()


def test_report_needs_the_kernel_model(tmp_path):
    # the experiment sets model.method: a model without that key fails to compose
    with pytest.raises(Exception, match="Key 'method' not in 'TorchMLPModel'"):
        make_cfg(["+exp=kernel_digits", "model=torch_mlp", *TINY], tmp_path)


@needs_mnist
@pytest.mark.slow
def test_kernel_mnist_on_local_mnist(tmp_path):
    cfg = make_cfg(["+exp=kernel_mnist", f"data.root={SHARED_DATA}",
                    "data.download=false", *TINY, "report.features=[16]",
                    "report.methods=[rff]", "report.deep_features=null"], tmp_path)
    metrics = run(cfg)
    assert metrics["test/acc@kernel_ridge"] > 0.5
