"""Packaging: the core needs only torch and numpy; the wheel ships ``lamods`` alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: what the core must not need (the experiments extra and the test-only references)
NOT_CORE = ("sklearn", "scipy", "lightning", "pytorch_lightning", "lightning_fabric", "hydra",
            "omegaconf", "torchvision", "torchmetrics", "matplotlib", "pandas", "pytest")


def test_core_imports_and_fits_with_torch_and_numpy_only(tmp_path):
    """As in a venv with only torch and numpy: every other top-level package is blocked."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys

        BLOCKED = {NOT_CORE!r}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        import lamods
        for mod in pkgutil.walk_packages(lamods.__path__, "lamods."):
            if mod.name != "lamods.testing":  # the test helpers use pytest
                importlib.import_module(mod.name)
        X = np.random.default_rng(0).standard_normal((50, 6))
        pca = lamods.PCA(2).fit(X)
        assert pca.components_.dtype == lamods.PCA(1).fit(X).mean_.dtype
        print("ok", str(pca.components_.dtype), lamods.KMeans(3, seed=0).fit(X).predict(X[:2]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok torch.float64")


@pytest.mark.slow
def test_wheel_holds_lamods_only_and_requires_torch_and_numpy(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("lamods-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"lamods", meta_name.split("/")[0]}, tops
    assert "lamods/base.py" in names and "lamods/distances.py" in names
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    core = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires
                  if "extra ==" not in r)
    assert core == ["numpy", "torch"], requires
    extras = {r.split("extra ==")[1].strip().strip("'\"") for r in requires if "extra ==" in r}
    assert {"experiments", "dev"} <= extras
