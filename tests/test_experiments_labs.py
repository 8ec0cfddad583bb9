"""Issue 17's studies (configs/study/, nothing trained, each makes its own offline data):
``lsa_stdlib`` (TF-IDF + LSA of the standard library's docstrings), ``image_svd`` (image
compression by truncated SVD), ``stability_lab`` (conditioning and the cond x eps bounds),
``spectral_pictures`` (power iteration vs Lanczos, the Fiedler vector).

Runs are in-process through :func:`experiments.run.run` on small settings, CPU, run
directories in ``tmp_path``.
"""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import pytest
import torch
from experiment_helpers import make_cfg
from omegaconf import OmegaConf

from experiments.run import run


def check_study_run(out: Path, metrics: dict, name: str, files: list[str]) -> None:
    """A study's run directory: config, metrics, its plots/files, nothing trained."""
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["name"] == name and "n_params" not in metrics and metrics["wall_time_s"] > 0
    assert "${" not in OmegaConf.to_yaml(OmegaConf.load(out / "config.yaml"))
    for f in files:
        assert (out / f).stat().st_size > 500, f
    assert not (out / "checkpoints").exists() and not (out / "csv").exists()


@pytest.mark.parametrize("module", ["experiments.studies.lsa", "experiments.data.stdlib_docs",
                                    "experiments.studies.image_svd",
                                    "experiments.studies.stability",
                                    "experiments.studies.spectral"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- LSA
def test_lsa_stdlib_end_to_end(tmp_path, capsys):
    cfg = make_cfg(["+exp=lsa_stdlib", "study.max_docs=40", "study.k=8", "study.n_topics=3",
                    "study.n_nearest=3", "study.queries=[compress data with gzip]"], tmp_path)
    assert cfg.get("data") is None and cfg.get("model") is None
    metrics = run(cfg)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("lsa_stdlib: lsa/n_docs=40 ")
    check_study_run(tmp_path, metrics, "lsa_stdlib",
                    ["plots/singular_values.png", "plots/documents.png", "lsa_topics.md"])
    assert metrics["lsa/n_docs"] == 40 and metrics["lsa/k"] == 8
    assert 0 < metrics["lsa/density"] < 0.5 and 0 < metrics["lsa/energy"] < 1
    # randomized SVD of the sparse matrix against the exact singular values
    assert metrics["lsa/max_sv_rel_error"] < 1e-3
    s = metrics["lsa/singular_values"]
    assert len(s) == 8 and s == sorted(s, reverse=True)
    assert [t["dim"] for t in metrics["lsa/topics"]] == [1, 2, 3]
    assert all(len(t["positive"]) == 8 for t in metrics["lsa/topics"])
    # the first 40 modules by name include bz2 (its docstrings speak of compression)
    nearest = metrics["lsa/queries"]["compress data with gzip"]["lsa"]
    assert len(nearest) == 3 and "bz2" in nearest
    assert "compress data with gzip" in (tmp_path / "lsa_topics.md").read_text()


# --------------------------------------------------------------------------- image
def test_image_svd_end_to_end(tmp_path):
    cfg = make_cfg(["+exp=image_svd", "study.downsample=4", "study.ks=[1,5,20,200]",
                    "study.shown=[5]", "study.repeats=1"], tmp_path)
    metrics = run(cfg)
    check_study_run(tmp_path, metrics, "image_svd", ["plots/reconstructions.png",
                                                     "plots/psnr.png"])
    m, n, c = metrics["image/shape"]
    assert (m, n, c) == (107, 160, 3)  # china.jpg, every 4th pixel
    table = metrics["image/table"]
    assert [r["k"] for r in table] == [1, 5, 20]  # k = 200 > min(m, n) is left out
    # Eckart-Young: ||A - A_k||_F^2 = sum_{i > k} s_i^2, per channel
    assert metrics["image/max_closed_form_error"] < 1e-8
    for r in table:
        k = r["k"]
        assert r["storage_per_channel"] == pytest.approx(k * (m + n + 1) / (m * n))
        assert r["storage_whole"] == pytest.approx(k * (m + 3 * n + 1) / (3 * m * n))
        # the randomized rank-k is no better than the best rank-k (up to the clipping)
        assert r["psnr_randomized"] <= r["psnr_per_channel"] + 0.01
        assert r["psnr_randomized"] > r["psnr_per_channel"] - 0.5
    psnrs = [r["psnr_per_channel"] for r in table]
    assert psnrs == sorted(psnrs) and 10 < psnrs[0] < psnrs[-1] < 60
    assert metrics["time/exact_svd_s"] > 0 and metrics["time/randomized_svd_s@k5"] > 0


# --------------------------------------------------------------------------- stability
def test_stability_lab_end_to_end(tmp_path):
    n = 20
    cfg = make_cfg(["+exp=stability_lab", f"study.n={n}", "study.lstsq_shape=[60,10]",
                    "study.kappas=[1.0,1.0e3,1.0e6,1.0e9,1.0e12,1.0e15]",
                    "study.hilbert_sizes=[3,6,9,12]", "study.det_sizes=[20,100,250]",
                    "study.lse_n=200", "study.lse_scales=[1.0,10.0,100.0,1000.0]"], tmp_path)
    m = run(cfg)
    check_study_run(tmp_path, m, "stability_lab", ["plots/stability.png"])
    u64, u32 = 2.0 ** -53, 2.0 ** -24
    kappas = m["stability/solve/kappa"]
    # solve is backward stable: residual ~ u whatever kappa; the inverse's grows with kappa
    assert max(m["stability/solve/solve_residual"]) < 10 * n * u64
    assert m["stability/inv_residual@kappa1e12"] > 1e3 * m["stability/solve_residual@kappa1e12"]
    for k, err in zip(kappas, m["stability/solve/solve_error"]):
        if k * u64 < 1e-2:
            assert err <= n * k * u64 + 10 * u64, (k, err)  # kappa u, up to c_n
    # Hilbert: kappa(H_12) ~ 1e16, all digits lost; H_3 well conditioned
    assert m["stability/solve/hilbert_kappa"][-1] > 1e15
    assert m["stability/solve/hilbert_solve_error"][0] < 1e-13
    # least squares: QR / SVD ~ kappa u; normal equations ~ kappa^2 u, refused (NaN) once
    # X^T X is numerically singular
    ls_k = m["stability/lstsq/kappa"]
    for key in ("qr_error", "svd_error"):
        for k, err in zip(ls_k, m[f"stability/lstsq/{key}"]):
            assert err <= 10 * n * k * u64 + 1e-14, (key, k, err)
    assert m["stability/normal_eq_error@kappa1e6"] > 100 * m["stability/qr_error@kappa1e6"]
    assert m["stability/lstsq/normal_eq_error"][ls_k.index(1e12)] is None
    # float32 loses every digit near kappa = 1 / u_32 = 1.7e7; float64 keeps 4 digits at 1e12
    p = dict(zip(m["stability/precision/kappa"], m["stability/precision/float32_error"]))
    assert p[1.0] < 10 * n * u32 and p[1e9] > 1e-2
    p64 = dict(zip(m["stability/precision/kappa"], m["stability/precision/float64_error"]))
    assert p64[1e12] < 1e-3
    # log|det|: det overflows / underflows at n = 250 (|log10 det| ~ 500), slogdet does not
    for key in ("large", "small"):
        det = m[f"stability/logdet/{key}_det_error"]
        assert det[0] < 1e-12 and det[-1] is None  # inf
        for err, bound in zip(m[f"stability/logdet/{key}_slogdet_error"],
                              m[f"stability/logdet/{key}_bound"]):
            assert err <= bound
    assert m["stability/det_overflow_n"] == 250
    # log-sum-exp in float32: the naive sum overflows (max x > 88.7), the shifted one keeps
    # within its bound
    assert m["stability/lse_naive_overflow_scale"] == 100.0
    for err, bound in zip(m["stability/logsumexp/shifted_error"], m["stability/logsumexp/bound"]):
        assert err <= bound


# --------------------------------------------------------------------------- spectral
def test_spectral_pictures_end_to_end(tmp_path):
    cfg = make_cfg(["+exp=spectral_pictures", "study.n=60", "study.gaps=[0.1,0.03]",
                    "study.shown=[0.1]", "study.max_iter=600", "study.n_points=14",
                    "study.n_samples=120"], tmp_path)
    m = run(cfg)
    check_study_run(tmp_path, m, "spectral_pictures", ["plots/power_vs_lanczos.png",
                                                       "plots/fiedler.png"])
    for gap in ("0.1", "0.03"):
        for method in ("power", "lanczos"):
            errs = m[f"spectral/error@{method}_g{gap}"]
            bounds = m[f"spectral/bound@{method}_g{gap}"]
            assert len(errs) == len(m["spectral/iterations"])
            for t, e, b in zip(m["spectral/iterations"], errs, bounds):
                assert -1e-13 <= e <= b * (1 + 1e-8) + 1e-13, (method, gap, t, e, b)
        # Lanczos needs fewer iterations than power iteration, the more so for a small gap
        assert m[f"spectral/iters_to_tol@lanczos_g{gap}"] < m[f"spectral/iters_to_tol@power_g{gap}"]
    assert m["spectral/iters_to_tol@power_g0.03"] > 2 * m["spectral/iters_to_tol@power_g0.1"]
    assert m["spectral/fiedler_accuracy"] > 0.9 and m["spectral/n_components"] == 1


def test_fiedler_vector_is_the_relaxed_cut():
    from experiments.studies.spectral import fiedler

    res = fiedler(80, 0.05, 8, seed=0)
    f, W, lam = res["f"], res["W"], res["eigenvalues"]
    L = torch.diag(W.sum(1)) - W
    assert abs(float(f.sum())) < 1e-10 and abs(float(f.norm()) - 1) < 1e-12  # f _|_ 1, unit
    # f^T L f = 1/2 sum_ij W_ij (f_i - f_j)^2 = lambda_2, the smallest over x _|_ 1, |x| = 1
    quad = 0.5 * float((W * (f[:, None] - f[None, :]) ** 2).sum())
    assert quad == pytest.approx(float(f @ L @ f), rel=1e-10)
    assert quad == pytest.approx(float(lam[1]), rel=1e-8)
    x = torch.randn(80, dtype=torch.float64)
    x = x - x.mean()
    x = x / x.norm()
    assert float(x @ L @ x) >= float(lam[1])
    assert float(lam[0]) == pytest.approx(0.0, abs=1e-12) and float(lam[1]) > 1e-6
