"""No silent wrong answers (issue 13, part B): the NaN policy of lamods.base, NaN rows that
stay in their own row, divergence detection, whitening statistics, NMF edge cases,
transactional add_adapters, no references to the caller's data, and range robustness
(float32 data at 1e-30 and 1e30) of k-means, the RBF kernel and NMF."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.decomposition import NMF as SkNMF
from sklearn.metrics.pairwise import rbf_kernel
from torch import nn

import lamods
from lamods import (
    NMF,
    PCA,
    ConvergenceError,
    KernelRidgeHead,
    KMeans,
    LinearRegression,
    LinearSVMHead,
    NystromFeatures,
    PCAWhitening,
    SpectralClustering,
    ZCAWhitening,
    add_adapters,
)
from lamods.classic.nmf import beta_divergence
from lamods.distances import sq_distances
from lamods.layers import RBFKernel, kernel_ridge

F32, F64 = torch.float32, torch.float64
NAN, INF = float("nan"), float("inf")


def _X(n: int = 40, d: int = 5, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """Non-negative data (NMF needs it) with some structure."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=F64) @ torch.randn(d, d, generator=g,
                                                                   dtype=F64)).abs().to(dtype)


def _blobs(n: int = 200, d: int = 4, centers: int = 3, seed: int = 0) -> torch.Tensor:
    X, _ = make_blobs(n, d, centers=centers, random_state=seed)
    return torch.from_numpy(X)


def _with_nan(X: torch.Tensor, row: int = 3, col: int = 1) -> torch.Tensor:
    bad = X.clone()
    bad[row, col] = NAN
    return bad


# ---------------------------------------------------------------------------
# 1. The policy: fits refuse non-finite data, fitted methods non-finite rows
# ---------------------------------------------------------------------------
_Y = torch.linspace(0, 1, 40, dtype=F64)
_LABELS = torch.arange(40) % 2

FIT_PATHS = {
    "KMeans.fit": (lambda X: KMeans(3, seed=0).fit(X), "KMeans.fit", "X"),
    "KMeans.fit_predict": (lambda X: KMeans(3, seed=0).fit_predict(X), "KMeans.fit", "X"),
    "SpectralClustering.fit_predict": (
        lambda X: SpectralClustering(2, seed=0).fit_predict(X), "SpectralClustering.fit", "X"),
    "NMF.fit": (lambda X: NMF(2).fit(X), "NMF.fit", "X"),
    "NMF.fit_transform": (lambda X: NMF(2).fit_transform(X), "NMF.fit", "X"),
    "NystromFeatures.fit": (lambda X: NystromFeatures(5, 4, seed=0).fit(X),
                            "NystromFeatures.fit", "X"),
    "NystromFeatures.fit-kmeans": (
        lambda X: NystromFeatures(5, 4, landmarks="kmeans", seed=0).fit(X),
        "NystromFeatures.fit", "X"),
    "KernelRidgeHead.fit": (lambda X: KernelRidgeHead().fit(X, _Y), "KernelRidgeHead.fit", "X"),
    "KernelRidgeHead.fit-Y": (lambda X: KernelRidgeHead().fit(X.nan_to_num(0.0), X[:, 1]),
                              "KernelRidgeHead.fit", "Y"),
    "PCA.fit": (lambda X: PCA(2).fit(X), "PCA.fit", "X"),
    "PCA.fit_transform": (lambda X: PCA(2).fit_transform(X), "PCA.fit", "X"),
    "PCA.partial_fit": (lambda X: PCA(2).partial_fit(X), "PCA.partial_fit", "X"),
    "LinearRegression.fit": (lambda X: LinearRegression().fit(X, _Y), "LinearRegression.fit",
                             "X"),
    "LinearRegression.fit-y": (lambda X: LinearRegression().fit(X.nan_to_num(0.0), X[:, 1]),
                               "LinearRegression.fit", "y"),
    "LinearRegression.fit_gd": (lambda X: LinearRegression().fit_gd(X, _Y, n_iter=2),
                                "LinearRegression.fit_gd", "X"),
    "LinearSVMHead.fit": (lambda X: LinearSVMHead(5, 2).fit(X, _LABELS), "LinearSVMHead.fit",
                          "Z"),
}


@pytest.mark.parametrize("path", list(FIT_PATHS))
@pytest.mark.parametrize("bad", [NAN, INF])
def test_every_fit_path_refuses_nonfinite_data(path, bad):
    fit, name, what = FIT_PATHS[path]
    X = _X()
    X[3, 1] = bad
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: expected a finite {what}, got 1 "
                       r"NaN or infinite entries"):
        fit(X)


def _fitted(key: str):
    X = _X()
    return {
        "KMeans": lambda: KMeans(3, seed=0).fit(X),
        "SpectralClustering": lambda: SpectralClustering(2, gamma=0.1, seed=0).fit(X),
        "NMF": lambda: NMF(2, max_iter=50).fit(X),
        "NystromFeatures": lambda: NystromFeatures(5, 10, lengthscale=2.0, seed=0).fit(X),
        "KernelRidgeHead": lambda: KernelRidgeHead("rbf", 0.5, lengthscale=2.0).fit(X, _Y),
        "PCA": lambda: PCA(2).fit(X),
        "LinearRegression": lambda: LinearRegression().fit(X, _Y),
        "LinearSVMHead": lambda: LinearSVMHead(5, 2).fit(X, _LABELS),
    }[key]()


FITTED_METHODS = [
    ("KMeans", "predict", 5), ("KMeans", "transform", 5), ("KMeans", "forward", 5),
    ("SpectralClustering", "predict", 5), ("SpectralClustering", "transform", 5),
    ("NMF", "transform", 5), ("NMF", "inverse_transform", 2),
    ("NystromFeatures", "forward", 5), ("KernelRidgeHead", "forward", 5),
    ("PCA", "transform", 5), ("PCA", "inverse_transform", 2),
    ("LinearRegression", "predict", 5), ("LinearSVMHead", "forward", 5),
]


@pytest.mark.parametrize("key,method,width", FITTED_METHODS,
                         ids=[f"{k}.{m}" for k, m, _ in FITTED_METHODS])
def test_every_fitted_method_refuses_nonfinite_rows(key, method, width):
    est = _fitted(key)
    X = torch.rand(10, width, dtype=F64)
    X[3, 0], X[5, width - 1], X[8, 0] = NAN, INF, -INF
    what = {"inverse_transform": "Y" if key == "PCA" else "W"}.get(method, "X")
    if key == "LinearSVMHead":
        what = "X"
    named = "predict" if (key, method) == ("KMeans", "forward") else method  # forward = predict
    with pytest.raises(ValueError, match=rf"^{key}\.{named}: expected finite rows in {what}, "
                       r"got 3 rows with NaN or infinite entries \(first: row 3\)$"):
        getattr(est, method)(X)
    # a leading batch shape: the first bad row by its index
    with pytest.raises(ValueError, match=r"got 3 rows with NaN or infinite entries "
                       r"\(first: index \(0, 3\)\)$"):
        getattr(est, method)(X.reshape(2, 5, width))


@pytest.mark.parametrize("key", ["KernelRidgeHead", "NystromFeatures", "PCA"])
def test_unchecked_nan_rows_stay_in_their_own_rows(key):
    """Inside torch.func transforms the check cannot run (Note [NaN policy]): a NaN row
    must then give NaN in its own output row only."""
    X = _blobs(60, 3)
    est = {"KernelRidgeHead": lambda: KernelRidgeHead("rbf", 0.1, lengthscale=2.0).fit(
               X, X[:, 0] ** 2),
           "NystromFeatures": lambda: NystromFeatures(3, 20, lengthscale=2.0, seed=0).fit(X),
           "PCA": lambda: PCA(2).fit(X)}[key]()
    Xq = _blobs(12, 3, seed=1)
    clean = est(Xq)
    out, _ = torch.func.vjp(est, _with_nan(Xq, 4, 2))
    out = out.reshape(12, -1)
    assert bool(out[4].isnan().all())
    keep = torch.arange(12) != 4
    assert bool(torch.isfinite(out[keep]).all())
    torch.testing.assert_close(out[keep], clean.reshape(12, -1)[keep], rtol=1e-12, atol=1e-12)


def test_unchecked_nan_rows_get_label_minus_one():
    """KMeans / SpectralClustering labels have no NaN: a row the check cannot see (here
    inside torch.func.vmap) is labelled -1, never cluster 0."""
    X = _blobs()
    km = KMeans(3, seed=0).fit(X)
    Xq = _with_nan(X[:8], 2, 0)
    labels = torch.func.vmap(km.predict)(Xq.unsqueeze(1))[:, 0]
    assert int(labels[2]) == -1
    keep = torch.arange(8) != 2
    assert torch.equal(labels[keep], km.labels_[:8][keep])


# ---------------------------------------------------------------------------
# 2. Layers: one bad row never spreads into other rows
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("block_elements", [1 << 24, 50])
def test_rbf_nan_row_stays_in_its_row_and_column(grad, block_elements):
    X = _blobs(20, 3)
    k = RBFKernel(2.0, block_elements=block_elements, dtype=F64)
    bad = _with_nan(X, 3, 1).requires_grad_(grad)
    K = k(bad)
    others = torch.arange(20) != 3
    ref = torch.from_numpy(rbf_kernel(X.numpy(), gamma=1 / 8))
    # row and column 3 are NaN, but for k(x, x) = 1 (an exactly zero distance)
    assert bool(K[3, others].isnan().all()) and bool(K[others, 3].isnan().all())
    torch.testing.assert_close(K[others][:, others], ref[others][:, others].to(K.dtype),
                               rtol=1e-12, atol=1e-14)
    Y = _blobs(7, 3, seed=1)
    # a bad row of X: its row only; a bad row of Y: its column only
    Kx = k(bad, Y)
    assert int(Kx.isnan().sum()) == 7 and bool(Kx[3].isnan().all())
    Ky = k(Y, bad)
    assert int(Ky.isnan().sum()) == 7 and bool(Ky[:, 3].isnan().all())
    torch.testing.assert_close(Kx[others], torch.from_numpy(
        rbf_kernel(X.numpy(), Y.numpy(), gamma=1 / 8))[others], rtol=1e-12, atol=1e-14)


def test_random_fourier_features_nan_row_stays_local():
    rff = lamods.RandomFourierFeatures(3, 64, lengthscale=2.0, seed=0, dtype=F64)
    X = _blobs(10, 3)
    Z = rff(_with_nan(X, 4, 0))
    assert bool(Z[4].isnan().all())
    keep = torch.arange(10) != 4
    torch.testing.assert_close(Z[keep], rff(X)[keep], rtol=0, atol=0)


def test_sq_distances_nan_row_stays_local():
    X = _blobs(15, 3)
    D = sq_distances(_with_nan(X, 5, 0))
    assert int(D.isnan().sum()) == 2 * 14  # row and column 5, the diagonal is exactly 0
    keep = torch.arange(15) != 5
    torch.testing.assert_close(D[keep][:, keep], torch.cdist(X[keep], X[keep]).square(),
                               rtol=1e-10, atol=1e-10)


def test_kernel_ridge_nan_query_row_stays_local():
    X = _blobs(60, 3)
    Y = X[:, :2] ** 2
    Xq = _blobs(10, 3, seed=1)
    clean = kernel_ridge(X, Y, Xq, "rbf", alpha=0.1, lengthscale=2.0)
    out = kernel_ridge(X, Y, _with_nan(Xq, 6, 2), "rbf", alpha=0.1, lengthscale=2.0)
    assert bool(out[6].isnan().all())
    keep = torch.arange(10) != 6
    torch.testing.assert_close(out[keep], clean[keep], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# 3. Clustering labels: a NaN row, or one with no affinity, is never cluster 0
# ---------------------------------------------------------------------------
def test_kmeans_and_spectral_predict_refuse_nan_rows():
    X = _blobs(90)
    Xq = _with_nan(X[:10], 7, 0)
    for est in (KMeans(3, seed=0).fit(X),
                SpectralClustering(3, gamma=0.5, seed=0, n_init=2).fit(X)):
        name = type(est).__name__
        with pytest.raises(ValueError, match=rf"^{name}\.(predict|transform): expected finite "
                           r"rows in X, got 1 row with NaN or infinite entries \(first: row 7\)"):
            est.predict(Xq)


def test_spectral_predict_refuses_points_with_no_affinity():
    X = _blobs(90)
    sc = SpectralClustering(3, gamma=0.5, seed=0, n_init=2).fit(X)
    far = torch.cat([X[:4], X[4:5] + 1e3])  # exp(-0.5 * 1e6) = 0: no affinity at all
    with pytest.raises(ValueError, match=r"^SpectralClustering.predict: expected every row of "
                       r"X to have a positive affinity to some training point, got 1 row with "
                       r"zero affinity to all of them \(first: row 4\)"):
        sc.predict(far)
    assert torch.equal(sc.predict(X[:4]), sc.labels_[:4])


# ---------------------------------------------------------------------------
# 4. Iterative fits that diverge say so
# ---------------------------------------------------------------------------
def test_lloyd_divergence_raises_convergence_error(monkeypatch):
    import lamods._lloyd as core

    calls = {"n": 0}
    real_update = core.update_sums

    def faulty_update(*args):
        # the sums of iterations 2, 3, ... go through update_sums (Note [incremental sums])
        out = real_update(*args)
        calls["n"] += 1
        if calls["n"] == 2:  # the third iteration: a non-finite center appears
            out = out.clone()
            out[0, 0] = NAN
        return out

    monkeypatch.setattr(core, "update_sums", faulty_update)
    with pytest.raises(ConvergenceError, match=r"^KMeans.fit: Lloyd's iterations diverged: the "
                       r"cluster centers became non-finite at iteration 3$"):
        KMeans(3, init="random", tol=0.0, max_iter=50, seed=0).fit(_blobs(300))


@pytest.mark.parametrize("solver,tol,what,at", [
    ("mu", 1e-4, "loss", 10), ("mu", 0.0, "W or H", 10),
    ("hals", 1e-4, "projected gradient", 5), ("hals", 0.0, "W or H", 10)])
def test_nmf_divergence_raises_convergence_error(monkeypatch, solver, tol, what, at):
    import lamods.classic.nmf as mod

    target = "_mu_h" if solver == "mu" else "_hals_w"
    real = getattr(mod, target)
    calls = {"n": 0}

    def faulty(*args):
        out = real(*args)
        calls["n"] += 1
        # the 4th H update (MU), or the 4th iteration's H sweep (HALS: two sweeps each;
        # the next W sweep's projected gradient sees it)
        if calls["n"] == (4 if solver == "mu" else 8):
            first = out[0] if isinstance(out, tuple) else out
            first = first.clone()
            first[0, 0] = NAN
            out = (first, *out[1:]) if isinstance(out, tuple) else first
        return out

    monkeypatch.setattr(mod, target, faulty)
    solver_text = "multiplicative updates" if solver == "mu" else "HALS sweeps"
    with pytest.raises(ConvergenceError, match=rf"^NMF.fit: the {solver_text} diverged: "
                       rf"non-finite {what} at iteration {at} "):
        NMF(3, solver=solver, tol=tol, max_iter=100).fit(_X())


# ---------------------------------------------------------------------------
# 5. Whitening: a bad batch never reaches the running statistics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ZCAWhitening, PCAWhitening])
def test_whitening_refuses_nan_batch_and_keeps_running_stats(cls):
    g = torch.Generator().manual_seed(0)
    layer = cls(4, dtype=F64)
    layer(torch.randn(64, 4, generator=g, dtype=F64))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    bad = torch.randn(32, 4, generator=g, dtype=F64)
    bad[9, 2] = NAN
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: expected finite rows in the batch, "
                       r"got 1 row with NaN or infinite entries \(first: row 9\); the running "
                       r"statistics were left unchanged$"):
        layer(bad)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k
    layer.eval()
    x = torch.randn(8, 4, generator=g, dtype=F64)
    y = layer(x)
    assert bool(torch.isfinite(y).all())
    # in eval mode a NaN row gives NaN in its own row only
    y_bad = layer(_with_nan(x, 2, 0))
    assert bool(y_bad[2].isnan().all())
    keep = torch.arange(8) != 2
    torch.testing.assert_close(y_bad[keep], y[keep], rtol=0, atol=0)


@pytest.mark.slow
def test_whitening_compiled_nan_batch_leaves_running_stats_unchanged():
    """While torch.compile traces, the check cannot run: the update is masked instead."""
    torch._dynamo.reset()
    layer = ZCAWhitening(3, dtype=F64)
    layer(torch.randn(20, 3, dtype=F64))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    compiled = torch.compile(layer, backend="eager")
    bad = _with_nan(torch.randn(20, 3, dtype=F64), 2, 1)
    with pytest.raises(RuntimeError):  # eigh of the NaN batch covariance fails
        compiled(bad)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_whitening_refuses_a_batch_whose_covariance_overflows():
    layer = ZCAWhitening(3)
    before = layer.running_cov.clone()
    with pytest.raises(ValueError, match=r"^ZCAWhitening: expected a batch whose covariance fits "
                       r"in torch.float32, got entries up to 3e\+30"):
        layer(torch.tensor([[3e30, 0.0, 1.0], [-3e30, 1.0, 0.0], [0.0, 2.0, 2.0]]))
    assert torch.equal(layer.running_cov, before) and int(layer.num_batches_tracked) == 0


# ---------------------------------------------------------------------------
# 6. NMF: all-zero input, KL on subnormal entries
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["mu", "hals"])
@pytest.mark.parametrize("init", ["nndsvda", "nndsvd", "random"])
def test_nmf_all_zero_matrix_gives_zero_factors_as_sklearn(solver, init):
    Z = np.zeros((5, 4))
    sk = SkNMF(2, solver="cd" if solver == "hals" else "mu", init=init, random_state=0,
               max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(Z)
    model = NMF(2, solver=solver, init=init, seed=0, max_iter=50)
    W = model.fit_transform(torch.from_numpy(Z))
    torch.testing.assert_close(W, torch.from_numpy(W_sk), rtol=0, atol=0)
    torch.testing.assert_close(model.components_, torch.from_numpy(sk.components_), rtol=0,
                               atol=0)
    assert float(model.reconstruction_err_) == sk.reconstruction_err_ == 0.0


@pytest.mark.parametrize("solver", ["mu", "hals"])
def test_nmf_transform_of_all_zero_rows(solver):
    X = _X()
    batch = X[:6].clone()
    batch[2] = 0.0
    # the default tol: an all-zero batch raised ZeroDivisionError; zero rows give zero W
    model = NMF(2, solver=solver, max_iter=100, seed=0).fit(X)
    torch.testing.assert_close(model.transform(torch.zeros(3, 5, dtype=F64)),
                               torch.zeros(3, 2, dtype=F64), rtol=0, atol=0)
    assert bool((model.transform(batch)[2] == 0).all())
    # as scikit-learn, with the same H
    model = NMF(2, solver=solver, max_iter=100, tol=0.0, seed=0).fit(X)
    sk = SkNMF(2, solver="cd" if solver == "hals" else "mu", max_iter=100, tol=0.0)
    sk.components_ = model.components_.numpy()
    sk.n_components_ = sk._n_components = 2
    sk.n_features_in_ = 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.transform(batch.numpy())
        W0_sk = sk.transform(np.zeros((3, 5)))
    torch.testing.assert_close(model.transform(batch), torch.from_numpy(W_sk), rtol=1e-6,
                               atol=1e-8)
    torch.testing.assert_close(model.transform(torch.zeros(3, 5, dtype=F64)),
                               torch.from_numpy(W0_sk), rtol=0, atol=0)


def test_nmf_kl_loss_finite_on_subnormal_entry():
    g = torch.Generator().manual_seed(0)
    W = 2 + torch.rand(4, 2, generator=g)
    H = 2 + torch.rand(2, 3, generator=g)  # WH >= 8: X / WH underflows for a subnormal X
    X = torch.rand(4, 3, generator=g)
    X[0, 0] = 1.4e-45  # the smallest float32 subnormal
    loss = beta_divergence(X, W, H, "kullback-leibler")
    # reference: sum X log(X / WH) - X + WH in float64
    X64, WH64 = X.double(), (W @ H).double()
    ref = (X64 * (X64.log() - WH64.log()) - X64 + WH64).sum()
    assert bool(torch.isfinite(loss))
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------
# 7. add_adapters(inplace=True) that fails part-way leaves the model as it was
# ---------------------------------------------------------------------------
def test_add_adapters_inplace_failure_leaves_model_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        net[4].weight[1, 2] = NAN  # the SVD of the last layer fails, after two were wrapped
    net[2].bias.requires_grad_(False)  # a mixed state of flags to restore
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    layers = [type(m) for m in net]
    with pytest.raises(ValueError, match=r"^LowRankAdapter: expected a finite weight"):
        add_adapters(net, rank=2, init="svd", inplace=True)
    assert [type(m) for m in net] == layers
    assert [p.requires_grad for p in net.parameters()] == flags
    after = net.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v) or (v.isnan() == after[k].isnan()).all() and torch.equal(
            after[k].nan_to_num(), v.nan_to_num()), k
    # and the model still works as before: a clean retry succeeds
    with torch.no_grad():
        net[4].weight[1, 2] = 0.0
    tuned, report = add_adapters(net, rank=2, init="svd", inplace=True)
    assert tuned is net and sum(r.wrapped for r in report.layers) == 3


# ---------------------------------------------------------------------------
# 8. No module keeps a reference to the caller's data
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["KernelRidgeHead", "NystromFeatures", "NystromFeatures-kmeans",
                                 "SpectralClustering"])
def test_fitted_modules_keep_no_reference_to_the_callers_data(key):
    X = _blobs(60, 3)
    Xq = _blobs(10, 3, seed=1)
    est = {"KernelRidgeHead": lambda: KernelRidgeHead("rbf", 0.1, lengthscale=2.0).fit(
               X, X[:, 0]),
           "NystromFeatures": lambda: NystromFeatures(3, 60, lengthscale=2.0, seed=0).fit(X),
           "NystromFeatures-kmeans": lambda: NystromFeatures(
               3, 10, lengthscale=2.0, landmarks="kmeans", seed=0).fit(X),
           "SpectralClustering": lambda: SpectralClustering(3, gamma=0.5, seed=0).fit(X)}[key]()
    method = est.transform if key == "SpectralClustering" else est
    before = method(Xq).clone()
    X.mul_(3.0).add_(1.0)  # the caller changes its data in place
    torch.testing.assert_close(method(Xq), before, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# 9. Range: float32 data at 1e-30 and 1e30
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_kmeans_is_scale_robust(scale):
    X = _blobs(300, 4).float()
    ref = KMeans(3, n_init=2, seed=0).fit(X)
    km = KMeans(3, n_init=2, seed=0).fit(X * scale)
    assert torch.bincount(km.labels_, minlength=3).min() > 50  # not all in one cluster
    assert torch.equal(km.labels_, ref.labels_)
    torch.testing.assert_close(km.cluster_centers_ / scale, ref.cluster_centers_, rtol=1e-5,
                               atol=1e-5)
    assert torch.equal(km.predict(X * scale), ref.labels_)
    T = km.transform(X[:20] * scale)
    assert bool(torch.isfinite(T).all())
    torch.testing.assert_close(T / scale, ref.transform(X[:20]), rtol=1e-4, atol=1e-4)
    # inertia: s^2 times the unscaled one, rounded to float32 (1e-60 underflows, 1e60
    # overflows: the nearest float32 of the true value)
    true = float(ref.inertia_) * scale * scale
    assert float(km.inertia_) == float(torch.tensor(true, dtype=F32))


def test_kmeans_power_of_two_scaling_is_exact():
    X = _blobs(300, 4).float()
    ref = KMeans(3, n_init=2, seed=0).fit(X)
    km = KMeans(3, n_init=2, seed=0).fit(X * 2.0 ** -90)
    assert torch.equal(km.cluster_centers_, ref.cluster_centers_ * 2.0 ** -90)
    assert int(km.n_iter_) == int(ref.n_iter_)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_rbf_kernel_is_scale_robust(scale):
    X = _blobs(50, 3).float()
    ref = RBFKernel(2.0)(X)
    K = RBFKernel(2.0 * scale)(X * scale)
    assert bool(torch.isfinite(K).all())
    torch.testing.assert_close(K, ref, rtol=1e-4, atol=1e-5)
    Kx = RBFKernel(2.0 * scale)(X[:10] * scale, X[10:] * scale)
    torch.testing.assert_close(Kx, RBFKernel(2.0)(X[:10], X[10:]), rtol=1e-4, atol=1e-5)
    # a lengthscale of 1 at 1e30: distinct points are unrelated (exp(-1e60) = 0), each point
    # is itself; at 1e-30 every pair is the same point (exp(-1e-60) = 1)
    K1 = RBFKernel(1.0)(X * scale)
    expected = torch.eye(50) if scale > 1 else torch.ones(50, 50)
    torch.testing.assert_close(K1, expected, rtol=0, atol=0)


def test_power_of_two_scaling_is_exact_in_sq_distances():
    """Note [power-of-two scaling]: the distances of 2^j X are 4^j those of X, bit for bit
    (the RBF kernel uses the same frame; its log-stored lengthscale is not exactly 2^j l)."""
    for dtype, j in ((F32, 40), (F32, -40), (F64, 200), (F64, -200)):
        X = _blobs(40, 3).to(dtype)
        Y = _blobs(9, 3, seed=1).to(dtype)
        assert torch.equal(sq_distances(X * 2.0 ** j), sq_distances(X) * 4.0 ** j)
        assert torch.equal(sq_distances(X * 2.0 ** j, Y * 2.0 ** j),
                           sq_distances(X, Y) * 4.0 ** j)


def test_kernel_heads_at_1e30():
    X = _blobs(60, 3).float()
    y = X[:, 0].sin()
    s = 1e30
    ref = KernelRidgeHead("rbf", 0.1, lengthscale=2.0).fit(X, y)(X[:10])
    out = KernelRidgeHead("rbf", 0.1, lengthscale=2.0 * s).fit(X * s, y)(X[:10] * s)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
    ny = NystromFeatures(3, 20, lengthscale=2.0 * s, landmarks="kmeans", seed=0).fit(X * s)
    assert bool(torch.isfinite(ny(X * s)).all())


def _nmf_data(dtype: torch.dtype = F32) -> torch.Tensor:
    X = _X(60, 8, dtype=F64)
    return (X / X.max() * 1.5).to(dtype)  # largest entry 1.5: a pow2_scale of exactly 1


NMF_CASES = [("mu", "frobenius"), ("mu", "kullback-leibler"), ("hals", "frobenius")]


@pytest.mark.parametrize("solver,loss", NMF_CASES)
def test_nmf_power_of_two_scaling_is_exact(solver, loss):
    """NMF is scale-covariant: X 2^(2j) gives W, H 2^j exactly (Note [NMF scaling])."""
    X = _nmf_data(F64)
    ref = NMF(3, solver=solver, beta_loss=loss, max_iter=60, seed=0)
    W_ref = ref.fit_transform(X)
    for j in (-50, 50):
        model = NMF(3, solver=solver, beta_loss=loss, max_iter=60, seed=0)
        W = model.fit_transform(X * 2.0 ** (2 * j))
        assert torch.equal(W, W_ref * 2.0 ** j)
        assert torch.equal(model.components_, ref.components_ * 2.0 ** j)
        factor = 2.0 ** (2 * j) if loss == "frobenius" else 2.0 ** j
        assert torch.equal(model.reconstruction_err_, ref.reconstruction_err_ * factor)


@pytest.mark.parametrize("scale,unit", [(1e-30, 2.0 ** -100), (1e30, 2.0 ** 100)])
@pytest.mark.parametrize("solver,loss", NMF_CASES)
def test_nmf_is_scale_robust_in_float32(scale, unit, solver, loss):
    """At 1e-30 / 1e30 (NaN before) NMF runs on X / unit (Note [NMF scaling]): the same
    factorization as the unscaled data X (scale / unit), scaled back, to rounding."""
    X = _nmf_data(F32)
    kw = {"solver": solver, "beta_loss": loss, "max_iter": 100, "tol": 0.0, "seed": 0}
    ref = NMF(3, **kw)
    W_ref = ref.fit_transform(X * (scale / unit))
    model = NMF(3, **kw)
    W = model.fit_transform(X * scale)
    assert bool(torch.isfinite(W).all()) and bool(torch.isfinite(model.components_).all())
    root = unit ** 0.5
    torch.testing.assert_close(W / root, W_ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(model.components_ / root, ref.components_, rtol=1e-3,
                               atol=1e-5)
    factor = unit if loss == "frobenius" else root
    torch.testing.assert_close(float(model.reconstruction_err_) / factor,
                               float(ref.reconstruction_err_), rtol=1e-3, atol=0)
    # transform at that scale: W of the unscaled rows, scaled back
    torch.testing.assert_close(model.transform(X[:5] * scale) / root,
                               ref.transform(X[:5] * (scale / unit)), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_spectral_knn_is_scale_robust(scale):
    X = _blobs(90, 3).float()
    kw = {"affinity": "nearest_neighbors", "n_neighbors": 8, "seed": 0, "n_init": 2}
    ref = SpectralClustering(3, **kw).fit(X)
    sc = SpectralClustering(3, **kw).fit(X * scale)
    assert torch.equal(sc.labels_, ref.labels_)
    assert torch.equal(sc.predict(X[:30] * scale), ref.predict(X[:30]))


def test_policy_is_written_in_the_estimator_docstring():
    doc = " ".join(lamods.base.__doc__.split())
    assert "Note [NaN policy]" in doc
    for phrase in ("naming how many rows hold NaN or infinity", "ConvergenceError",
                   "in its own output row only", "no module keeps a reference"):
        assert phrase in doc, phrase
