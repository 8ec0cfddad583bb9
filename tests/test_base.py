"""The one estimator base: every fit-style module behaves the same way (lamods.base)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

import lamods
from lamods import (
    NMF,
    PCA,
    Estimator,
    KernelRidgeHead,
    KMeans,
    LinearRegression,
    LinearSVMHead,
    NotFittedError,
    NystromFeatures,
    RidgeRegression,
    SpectralClustering,
)

F32, F64 = torch.float32, torch.float64
ROOT = Path(__file__).resolve().parents[1]


def _X(n: int = 40, d: int = 5, seed: int = 0) -> np.ndarray:
    """Non-negative float64 data (NMF needs it) with some structure."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d)) @ rng.standard_normal((d, d)))


# (builder, needs y, what a fitted module is called with, the fitted buffer to inspect)
ESTIMATORS = {
    "PCA": (lambda: PCA(2), False, "transform", "components_"),
    "PCA-randomized": (lambda: PCA(2, solver="randomized", seed=0), False, "transform",
                       "components_"),
    "KMeans": (lambda: KMeans(3, n_init=2, seed=0), False, "predict", "cluster_centers_"),
    "NMF": (lambda: NMF(2, init="random", seed=0, max_iter=50), False, "transform",
            "components_"),
    "LinearRegression": (lambda: LinearRegression(), True, "predict", "coef_"),
    "RidgeRegression": (lambda: RidgeRegression(0.5), True, "predict", "coef_"),
    "SpectralClustering": (lambda: SpectralClustering(2, gamma=0.1, seed=0, n_init=2), False,
                           "predict", "embedding_"),
    "NystromFeatures": (lambda: NystromFeatures(5, 10, lengthscale=2.0, seed=0), False,
                        "forward", "landmarks_"),
    "KernelRidgeHead": (lambda: KernelRidgeHead("rbf", 0.5, lengthscale=2.0), True, "forward",
                        "dual_coef_"),
    "LinearSVMHead": (lambda: LinearSVMHead(5, 2, C=1.0), "labels", "forward", None),
    "NystromKernelRidge": (lambda: lamods.NystromKernelRidge("rbf", 0.5, n_centers=10, seed=0,
                                                             lengthscale=2.0), True, "predict",
                           "coef_"),
}
IDS = list(ESTIMATORS)


def _fit(key: str, est: Estimator, X: object) -> Estimator:
    _, needs_y, _, _ = ESTIMATORS[key]
    n = len(X)
    if needs_y == "labels":
        return est.fit(X, torch.arange(n) % 2)
    if needs_y:
        return est.fit(X, np.asarray(X)[:, 0] * 2.0 - 1.0)
    return est.fit(X)


def _use(key: str, est: Estimator, X: object) -> torch.Tensor:
    return getattr(est, ESTIMATORS[key][2])(X)


def _state(key: str, est: Estimator) -> torch.Tensor:
    buf = ESTIMATORS[key][3]
    return est.linear.weight if buf is None else getattr(est, buf)


@pytest.mark.parametrize("key", IDS)
def test_is_one_estimator_base(key):
    est = ESTIMATORS[key][0]()
    assert isinstance(est, Estimator) and isinstance(est, torch.nn.Module)


@pytest.mark.parametrize("key", IDS)
def test_numpy_float64_gives_float64_state_and_tensor_output(key):
    X = _X()
    est = _fit(key, ESTIMATORS[key][0](), X)
    assert est is not None and est.is_fitted()
    assert _state(key, est).dtype == F64
    out = _use(key, est, X[:4])
    assert isinstance(out, torch.Tensor)
    if out.is_floating_point():
        assert out.dtype == F64
    assert est.n_features_in_ == 5


@pytest.mark.parametrize("key", IDS)
def test_state_follows_float32_data_and_explicit_dtype_wins(key):
    X = torch.from_numpy(_X()).float()
    assert _state(key, _fit(key, ESTIMATORS[key][0](), X)).dtype == F32
    est = ESTIMATORS[key][0]().set_params(dtype=F64)
    assert _state(key, _fit(key, est, X)).dtype == F64


@pytest.mark.parametrize("key", IDS)
def test_integer_data_becomes_the_default_float_dtype(key):
    X = np.rint(_X() * 3).astype(np.int64)
    est = _fit(key, ESTIMATORS[key][0](), X)
    assert _state(key, est).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("key", IDS)
def test_transform_casts_to_the_fitted_dtype(key):
    """Note [input dtype rule]: other float and integer inputs are cast, results in the
    fitted dtype, equal to the result on the input cast by hand."""
    X = torch.from_numpy(_X())
    est = _fit(key, ESTIMATORS[key][0](), X)
    a = _use(key, est, X[:4].float())
    b = _use(key, est, X[:4].float().double())
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("key", IDS)
def test_clone_get_params_set_params(key):
    est = ESTIMATORS[key][0]()
    params = est.get_params()
    import inspect

    sig = inspect.signature(type(est).__init__).parameters
    assert set(params) == {p for p in sig if p != "self" and sig[p].kind != sig[p].VAR_KEYWORD}
    twin = clone(est)
    assert type(twin) is type(est) and twin is not est and not twin.is_fitted() or (
        ESTIMATORS[key][3] is None)
    for k, v in twin.get_params().items():
        if not isinstance(v, (torch.Tensor, torch.nn.Module, torch.Generator)):
            assert v == params[k], k
    # a fitted module clones to an unfitted one with the same parameters
    fitted = _fit(key, ESTIMATORS[key][0](), _X())
    assert clone(fitted).get_params().keys() == params.keys()
    with pytest.raises(ValueError, match=rf"Invalid parameter 'nonsense' for estimator "
                                         rf"{type(est).__name__}"):
        est.set_params(nonsense=1)
    # a bad value raises and leaves the module as it was
    before = est.get_params()
    with pytest.raises((ValueError, TypeError)):
        est.set_params(dtype=torch.int64)
    assert est.get_params() == before


def test_clone_keeps_kernel_parameters():
    head = KernelRidgeHead("rbf", 0.5, lengthscale=0.3)
    twin = clone(head)
    assert twin.get_params()["kernel_params"] == {"lengthscale": 0.3}
    assert float(twin.kernel_module.lengthscale) == pytest.approx(0.3)
    assert twin.get_params()["alpha"] == 0.5
    twin.set_params(alpha=2.0, kernel_params={"lengthscale": 1.5})
    assert float(twin.alpha) == pytest.approx(2.0)
    assert float(twin.kernel_module.lengthscale) == pytest.approx(1.5)
    km = KMeans(4, tol=0.0, device=torch.device("cpu"))
    assert clone(km).get_params()["device"] == torch.device("cpu")


@pytest.mark.parametrize("key", [k for k in IDS if ESTIMATORS[k][3] is not None])
def test_unfitted_raises_the_one_not_fitted_error(key):
    est = ESTIMATORS[key][0]()
    method = ESTIMATORS[key][2]
    with pytest.raises(NotFittedError, match=rf"^{type(est).__name__}\.{method}: this "
                                             rf"{type(est).__name__} is not fitted yet; call fit"):
        _use(key, est, _X()[:3])
    err = NotFittedError("x")
    assert isinstance(err, RuntimeError) and isinstance(err, ValueError)
    assert isinstance(err, AttributeError)
    assert est.n_features_in_ == 0


@pytest.mark.parametrize("key", IDS)
def test_state_dict_loads_into_an_unfitted_module_of_any_size(key):
    X = torch.from_numpy(_X(60, 5))
    est = _fit(key, ESTIMATORS[key][0](), X)
    fresh = ESTIMATORS[key][0]().to(F64)
    fresh.load_state_dict(est.state_dict())
    torch.testing.assert_close(_use(key, fresh, X[:4]), _use(key, est, X[:4]))


def test_inconsistent_state_raises_at_load_time():
    pca = PCA(2).fit(_X())
    state = pca.state_dict()
    state["mean_"] = torch.zeros(7, dtype=F64)  # components_ say 5 features
    with pytest.raises(RuntimeError, match=r"PCA: the fitted state does not fit together: "
                                           r"mean_ has shape \(7,\), expected d = 5"):
        PCA(2).load_state_dict(state)
    km = KMeans(3, seed=0).fit(_X())
    with pytest.raises(RuntimeError, match=r"KMeans: the fitted state does not fit together: "
                                           r"cluster_centers_ has shape \(3, 5\), expected k = 4"):
        KMeans(4).load_state_dict(km.state_dict())


@pytest.mark.parametrize("key", ["PCA-randomized", "KMeans", "NMF", "NystromFeatures"])
def test_same_seed_same_result_in_float32_and_float64(key):
    X = _X(60, 5)
    a = _fit(key, ESTIMATORS[key][0](), X)
    b = _fit(key, ESTIMATORS[key][0](), X.astype(np.float32))
    torch.testing.assert_close(_state(key, b).double(), _state(key, a), rtol=2e-3, atol=2e-3)


def test_kernel_ridge_float64_matches_scikit_learn_exactly():
    """Hyperparameters given as floats are built in the final dtype (no float32 rounding)."""
    from sklearn.kernel_ridge import KernelRidge

    X = _X(50, 4)
    y = np.sin(X[:, 0])
    ours = KernelRidgeHead("rbf", 1e-3, lengthscale=0.7, dtype=F64).fit(X, y)(X).numpy()
    ref = KernelRidge(alpha=1e-3, kernel="rbf", gamma=1 / (2 * 0.7**2)).fit(X, y).predict(X)
    assert np.abs(ours - ref).max() < 1e-11
    # and when the dtype comes from the data instead
    ours = KernelRidgeHead("rbf", 1e-3, lengthscale=0.7).fit(X, y)(X).numpy()
    assert np.abs(ours - ref).max() < 1e-11


def test_rbf_accepts_gamma_as_scikit_learn_does():
    from sklearn.metrics.pairwise import rbf_kernel

    X = _X(20, 3)
    K = lamods.RBFKernel(gamma=0.3, dtype=F64)(torch.from_numpy(X)).numpy()
    assert np.abs(K - rbf_kernel(X, gamma=0.3)).max() < 1e-12
    with pytest.raises(ValueError, match="RBFKernel: expected at most one of lengthscale and "
                                         "gamma"):
        lamods.RBFKernel(1.0, gamma=0.5)


@pytest.mark.parametrize("bad", [None, "abc", [[1, 2], [3]], np.array([[1 + 2j, 0]]),
                                 np.array([["a", "b"]])])
def test_array_likes_that_are_not_numbers_are_refused(bad):
    with pytest.raises(TypeError, match=r"^PCA\.fit: expected (X as a tensor or an array-like|"
                                        r"X of a real numeric dtype)"):
        PCA(1).fit(bad)


# -- the tree: one copy of each shared piece ------------------------------------------
def _modules() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text()) for p in (ROOT / "lamods").rglob("*.py")}


def test_no_package_imports_another_packages_private_modules():
    bad = []
    for path, tree in _modules().items():
        rel = path.relative_to(ROOT / "lamods").parts
        own = rel[0] if len(rel) > 1 else None
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "lamods."):
                parts = node.module.split(".")
                if len(parts) >= 3 and parts[2].startswith("_") and parts[1] != own:
                    bad.append(f"{path.name}: {node.module}")
                if own == "layers" and parts[1] == "classic":
                    bad.append(f"{path.name}: layers imports {node.module}")
    assert bad == []


def test_one_copy_of_each_shared_piece():
    defs: dict[str, list[str]] = {}
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defs.setdefault(node.name, []).append(path.name)
    for name in ("NotFittedError", "SingularSystemError", "check_features", "check_finite",
                 "check_positive_int", "check_matrix", "make_generator", "sq_distances",
                 "is_fitted", "_load_from_state_dict", "get_params"):
        assert len(defs.get(name, [])) <= 1 or name in ("_load_from_state_dict", "get_params"), (
            name, defs.get(name))
    # fitted-state loading: only the base and the sparse projection's own layout
    assert sorted(defs["_load_from_state_dict"]) == ["base.py", "mf.py", "projection.py"]
    # seeds become generators in one place (docstring examples aside)
    seeding = [path.name for path, tree in _modules().items() for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr == "manual_seed"]
    assert seeding == ["_random.py"] or sorted(seeding) == ["_random.py", "als.py"], seeding
