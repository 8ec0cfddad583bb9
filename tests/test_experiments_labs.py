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


@pytest.mark.parametrize("module", ["experiments.studies.lsa", "experiments.data.stdlib_docs"])
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
