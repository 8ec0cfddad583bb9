"""Issue 9's experiments: ``clustering_digits`` (k-means and spectral clustering against
scikit-learn's) and ``linreg`` (normal equation, gradient descent and scikit-learn on the
diabetes data), both studies (configs/study/): their work is all analysis, nothing is trained.

Runs are in-process through :func:`experiments.run.run` on small settings, everything on the
CPU, run directories in ``tmp_path``.
"""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import SHARED_DATA, make_cfg, needs_mnist
from omegaconf import OmegaConf
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, Ridge

from experiments.data import DiabetesDataModule
from experiments.run import run

CLUSTER_METHODS = ("kmeans", "sklearn_kmeans", "spectral", "sklearn_spectral")
LINREG_METHODS = ("normal_eq", "gd", "sklearn", "ridge", "sklearn_ridge")


def check_report_only_run(out: Path, metrics: dict, name: str, plot: str) -> None:
    """A study's run directory: config, metrics and the study's plot, no training."""
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["name"] == name and metrics["device"] == "cpu" and "n_params" not in metrics
    assert metrics["wall_time_s"] > 0
    assert "${" not in OmegaConf.to_yaml(OmegaConf.load(out / "config.yaml"))
    assert (out / "plots" / plot).stat().st_size > 1000
    assert not (out / "checkpoints").exists() and not (out / "csv").exists()


@pytest.mark.parametrize("module", ["experiments.studies.clustering",
                                    "experiments.studies.linreg", "experiments.data.diabetes"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# --------------------------------------------------------------------------- clustering
def test_clustering_digits_end_to_end(tmp_path, capsys):
    cfg = make_cfg(["+exp=clustering_digits", "study.n_init=3"], tmp_path)
    assert cfg.study._target_ == "experiments.studies.clustering_study"
    assert cfg.data._target_.endswith("DigitsDataModule") and "report" not in cfg
    metrics = run(cfg)
    # the one-line summary shows the study's main figures, not "no test metrics | 0 params"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("clustering_digits: cluster/ari@kmeans=") and "params" not in line
    check_report_only_run(tmp_path, metrics, "clustering_digits", "clusters.png")
    assert metrics["cluster/n_samples"] == 1797 and metrics["cluster/n_clusters"] == 10
    for method in CLUSTER_METHODS:
        for score in ("ari", "nmi"):
            assert 0.0 < metrics[f"cluster/{score}@{method}"] <= 1.0
        assert metrics[f"time/fit_s@{method}"] > 0
    # same data, same n_init: ours as good as scikit-learn's, up to k-means' luck
    assert metrics["cluster/ari@kmeans"] >= metrics["cluster/ari@sklearn_kmeans"] - 0.05
    assert metrics["cluster/ari@kmeans"] > 0.5
    assert metrics["cluster/inertia@kmeans"] <= 1.01 * metrics["cluster/inertia@sklearn_kmeans"]
    assert metrics["cluster/ari@spectral"] >= metrics["cluster/ari@sklearn_spectral"] - 0.05


def test_clustering_rbf_subset_without_plots(tmp_path):
    cfg = make_cfg(["+exp=clustering_digits", "study.max_samples=300", "study.n_init=2",
                    "study.affinity=rbf", "study.gamma=0.1", "study.n_clusters=4",
                    "plots=false", "seed=1"], tmp_path)
    metrics = run(cfg)
    assert metrics["cluster/n_samples"] == 300 and metrics["cluster/n_clusters"] == 4
    assert all(0.0 <= metrics[f"cluster/nmi@{m}"] <= 1.0 for m in CLUSTER_METHODS)
    assert not (tmp_path / "plots").exists()


@needs_mnist
def test_clustering_mnist_local_subset(tmp_path):
    cfg = make_cfg(["+exp=clustering_digits", "data=mnist", f"data.root={SHARED_DATA}",
                    "data.download=false", "data.limit_train=500", "study.splits=[train]",
                    "study.n_init=2"], tmp_path)
    metrics = run(cfg)
    check_report_only_run(tmp_path, metrics, "clustering_digits", "clusters.png")
    assert metrics["cluster/n_samples"] == 450  # limit_train minus the validation tenth
    assert metrics["cluster/ari@kmeans"] > 0.2 and metrics["cluster/ari@spectral"] > 0.2


# --------------------------------------------------------------------------- linreg
def test_diabetes_data_module():
    dm = DiabetesDataModule(in_features=10, num_classes=1, val_fraction=0.0, seed=0)
    dm.setup()
    assert dm.sizes() == {"train": 354, "val": 0, "test": 88}
    x, y = dm.datasets["train"].tensors
    assert x.shape == (354, 10) and y.shape == (354,) and y.is_floating_point()
    with pytest.raises(ValueError, match=r"expected train features of shape \(n, 8\)"):
        DiabetesDataModule(in_features=8, num_classes=1).setup()
    with pytest.raises(ValueError, match=r"expected test_fraction in \[0, 1\), got 1.5"):
        DiabetesDataModule(in_features=10, num_classes=1, test_fraction=1.5)


def test_linreg_end_to_end_matches_sklearn(tmp_path):
    cfg = make_cfg(["+exp=linreg", "study.gd_iters=12000"], tmp_path)
    assert cfg.study._target_ == "experiments.studies.linreg_study"
    assert cfg.data._target_.endswith("DiabetesDataModule")
    metrics = run(cfg)
    check_report_only_run(tmp_path, metrics, "linreg", "loss_curve.png")
    for method in LINREG_METHODS:
        assert metrics[f"test/mse@{method}"] > 0 and 0.3 < metrics[f"test/r2@{method}"] < 1
        assert len(metrics[f"linreg/coef@{method}"]) == 10
    # float64 closed form: scikit-learn's coefficients to 1e-6
    assert metrics["linreg/max_coef_diff@normal_eq"] < 1e-6
    assert metrics["linreg/max_coef_diff@ridge"] < 1e-6
    assert metrics["linreg/intercept_diff@normal_eq"] < 1e-6
    # gradient descent reaches the optimum (condition number ~ 470: 12000 steps are enough)
    assert metrics["linreg/gd_iters"] == 12000
    assert metrics["linreg/max_coef_diff@gd"] < 1e-4
    assert metrics["linreg/train_loss@gd"] == pytest.approx(
        metrics["linreg/train_loss@normal_eq"], rel=1e-10)
    assert metrics["test/mse@normal_eq"] == pytest.approx(metrics["test/mse@sklearn"], rel=1e-9)

    # the same split fitted here with scikit-learn gives the coefficients in metrics.json
    x, y = load_diabetes(return_X_y=True)
    x, y = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    test = np.random.default_rng(0).permutation(len(y))[:88]
    train = np.setdiff1d(np.arange(len(y)), test)
    ref = LinearRegression().fit(x[train], y[train])
    np.testing.assert_allclose(metrics["linreg/coef@normal_eq"], ref.coef_, rtol=0, atol=1e-6)
    ridge = Ridge(1.0).fit(x[train], y[train])
    np.testing.assert_allclose(metrics["linreg/coef@ridge"], ridge.coef_, rtol=0, atol=1e-6)


def test_linreg_short_gd_qr_and_alpha(tmp_path):
    cfg = make_cfg(["+exp=linreg", "study.gd_iters=20", "study.method=qr",
                    "study.alpha=0.1", "plots=false"], tmp_path)
    metrics = run(cfg)
    assert metrics["linreg/gd_iters"] == 20
    # 20 steps are far from the optimum; the closed forms are not
    assert metrics["linreg/train_loss@gd"] > 1.001 * metrics["linreg/train_loss@normal_eq"]
    assert metrics["linreg/max_coef_diff@normal_eq"] < 1e-6
    assert metrics["linreg/max_coef_diff@ridge"] < 1e-6
    assert not (tmp_path / "plots").exists()
