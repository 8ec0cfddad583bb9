"""PCA module and functional pca(): scikit-learn agreement, streaming, DDP, state, errors."""

from __future__ import annotations

import importlib
import re
import threading

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from lamods.decomp import PCA, pca
from lamods.testing import ModuleBattery, Tolerance, assert_close, check_gradients

# the package's ``pca`` attribute is the function; the module is reached by its full name
pca_module = importlib.import_module("lamods.decomp.pca")

F64 = torch.float64
RTOL = 1e-8


def _data(n=300, d=20, dtype=F64):
    """Correlated data with a decaying, well-separated spectrum plus an offset."""
    scales = 0.8 ** torch.arange(d, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64))
    return (torch.randn(n, d, dtype=F64) * scales @ Q.T + 3.0).to(dtype)


def _close(ours: torch.Tensor, theirs: np.ndarray, what: str, rtol=RTOL, atol=1e-12):
    torch.testing.assert_close(ours, torch.from_numpy(np.asarray(theirs)), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------
# scikit-learn agreement (float64, 1e-8 relative)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("solver", "sk_solver"), [("full", "full"),
                                                   ("covariance", "covariance_eigh"),
                                                   ("randomized", "full")])
@pytest.mark.parametrize("whiten", [False, True], ids=["plain", "whiten"])
def test_matches_sklearn(solver, sk_solver, whiten):
    X = _data()
    ours = PCA(5, solver=solver, whiten=whiten, n_iter=12, dtype=F64).fit(X)
    sk = SkPCA(5, svd_solver=sk_solver, whiten=whiten).fit(X.numpy())
    # same sign rule as scikit-learn, so no sign alignment is needed
    _close(ours.components_, sk.components_, "components_", atol=1e-10)
    _close(ours.explained_variance_, sk.explained_variance_, "explained_variance_")
    _close(ours.explained_variance_ratio_, sk.explained_variance_ratio_, "ratio")
    _close(ours.singular_values_, sk.singular_values_, "singular_values_")
    _close(ours.mean_, sk.mean_, "mean_")
    _close(ours.noise_variance_, sk.noise_variance_, "noise_variance_")
    Xt = _data(50)
    _close(ours.transform(Xt), sk.transform(Xt.numpy()), "transform", atol=1e-9)
    Y = ours(Xt)
    _close(ours.inverse_transform(Y), sk.inverse_transform(Y.numpy()), "inverse_transform",
           atol=1e-9)


@pytest.mark.parametrize("n_components", [0.9, None, 20])
def test_n_components_float_and_none_match_sklearn(n_components):
    X = _data(200, 20)
    ours = PCA(n_components, solver="full", dtype=F64).fit(X)
    sk = SkPCA(n_components, svd_solver="full").fit(X.numpy())
    assert ours.n_components_ == sk.n_components_
    _close(ours.explained_variance_, sk.explained_variance_, "explained_variance_")


def test_auto_solver_follows_sklearn_rule():
    model = PCA(3, dtype=F64)
    assert model._choose_solver(2000, 50, 3) == "covariance"
    assert model._choose_solver(300, 100, 3) == "full"
    assert model._choose_solver(600, 800, 3) == "randomized"
    assert model._choose_solver(600, 800, 0.5) == "full"


def test_full_solver_keeps_ill_conditioned_variances():
    # variances down to 1e-12 relative: the covariance solver squares the condition number,
    # the SVD of the centered data does not
    d = 8
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64))
    X = torch.randn(400, d, dtype=F64) * torch.logspace(0, -6, d, dtype=F64) @ Q.T
    full = PCA(solver="full", dtype=F64).fit(X)
    sk = SkPCA(svd_solver="full").fit(X.numpy())
    _close(full.explained_variance_, sk.explained_variance_, "full solver variances", rtol=1e-6)


def test_center_false_decomposes_second_moments():
    X = _data(100, 6)
    model = PCA(3, solver="full", center=False, dtype=F64).fit(X)
    assert torch.equal(model.mean_, torch.zeros(6, dtype=F64))
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    assert_close(model.singular_values_, S[:3], what="uncentered singular values")
    assert_close(model(X), X @ model.components_.T, what="uncentered transform")


# ---------------------------------------------------------------------------
# Streaming and distributed
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("center", [True, False])
def test_partial_fit_equals_fit(center):
    X = _data(301, 12)
    stream = PCA(4, center=center, dtype=F64)
    for batch in X.split([1, 60, 100, 140]):
        assert stream.partial_fit(batch) is stream
    full = PCA(4, solver="full", center=center, dtype=F64).fit(X)
    assert int(stream.n_samples_seen_) == 301
    tol = Tolerance(1e-9, 1e-11)
    for name in ("components_", "explained_variance_", "explained_variance_ratio_",
                 "singular_values_", "mean_", "noise_variance_"):
        assert_close(getattr(stream, name), getattr(full, name), what=name, tolerance=tol)
    assert stream.scatter_.shape == (12, 12)


def test_partial_fit_continues_a_covariance_fit():
    X = _data(200, 8)
    a = PCA(3, solver="covariance", dtype=F64).fit(X[:120]).partial_fit(X[120:])
    b = PCA(3, solver="full", dtype=F64).fit(X)
    assert_close(a.components_, b.components_, what="components", tolerance=Tolerance(1e-9, 1e-10))


def test_partial_fit_after_full_fit_raises():
    X = _data(50, 4)
    model = PCA(2, solver="full", dtype=F64).fit(X)
    with pytest.raises(RuntimeError, match=re.escape(
            "PCA.partial_fit: expected streaming statistics (scatter_), got a model fitted by "
            "the full or randomized solver")):
        model.partial_fit(X)


def test_partial_fit_all_reduce_emulated_with_two_threads(monkeypatch):
    """Note [distributed PCA] with two 'ranks' as threads sharing a summing all-reduce.

    This emulates torch.distributed's all_reduce(SUM) (the only collective used);
    test_partial_fit_gloo_two_processes runs the real thing.
    """
    X = _data(240, 10)
    shards = [X[:90], X[90:]]           # uneven shards
    barrier = threading.Barrier(2)
    slots: list = [None, None]
    rank = threading.local()

    def fake_all_reduce(t):
        slots[rank.id] = t.clone()
        barrier.wait()
        total = slots[0] + slots[1]
        barrier.wait()
        t.copy_(total)
        return t

    monkeypatch.setattr(pca_module, "all_reduce_sum", fake_all_reduce)
    models = [PCA(3, dtype=F64), PCA(3, dtype=F64)]
    errors = []

    def work(r):
        rank.id = r
        try:
            for batch in shards[r].split(30 + 15 * r):
                models[r].partial_fit(batch)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()

    # both ranks must call partial_fit the same number of times: 90/30 = 3, 150/45 -> 4 calls
    shards = [X[:90], X[90:225]]         # 3 batches of 30 and 3 batches of 45
    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ref = PCA(3, solver="full", dtype=F64).fit(X[:225])
    for m in models:
        assert int(m.n_samples_seen_) == 225
        assert_close(m.components_, ref.components_, what="components",
                     tolerance=Tolerance(1e-9, 1e-10))
        assert_close(m.explained_variance_, ref.explained_variance_, what="variances")


def _gloo_worker(rank: int, world: int, port: int, X: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        model = PCA(3, dtype=F64)
        for batch in X.chunk(world)[rank].split(25):
            model.partial_fit(batch)
        out[rank] = (model.components_.clone(), model.explained_variance_.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_partial_fit_gloo_two_processes():
    import socket

    import torch.multiprocessing as mp

    X = _data(200, 6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_gloo_worker, args=(2, port, X, out), nprocs=2, join=True)
    ref = PCA(3, solver="full", dtype=F64).fit(X)
    for r in range(2):
        comps, ev = out[r]
        assert_close(comps, ref.components_, what=f"rank {r} components",
                     tolerance=Tolerance(1e-9, 1e-10))
        assert_close(ev, ref.explained_variance_, what=f"rank {r} variances")


# ---------------------------------------------------------------------------
# Module conventions: the shared battery on a fitted PCA, state, errors
# ---------------------------------------------------------------------------
class TestPCABattery(ModuleBattery):
    name = "PCA.transform"
    in_features = 7
    casts_inputs = True
    whiten = False

    def build(self, *, device, dtype):
        X = torch.randn(60, 7, device=device, dtype=dtype) @ torch.randn(
            7, 7, device=device, dtype=dtype)
        return PCA(3, solver="full", whiten=self.whiten, device=device, dtype=dtype).fit(X)

    def reference(self, module, params, x):
        y = (x - module.mean_) @ module.components_.T
        return y / module.explained_variance_.sqrt() if self.whiten else y


class TestPCAWhitenBattery(TestPCABattery):
    whiten = True


def test_state_dict_into_an_unfitted_module_and_to():
    X = _data(80, 5)
    model = PCA(2, dtype=F64).fit(X)
    fresh = PCA(2, dtype=F64)
    fresh.load_state_dict(model.state_dict())
    assert fresh.n_components_ == 2 and fresh.n_features_in_ == 5
    torch.testing.assert_close(fresh(X), model(X), rtol=0, atol=0)
    f32 = fresh.to(torch.float32)
    assert f32.components_.dtype == torch.float32 and f32.n_samples_seen_.dtype == torch.int64


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: PCA(2).transform(torch.randn(3, 4)), RuntimeError,
         "PCA.transform: this PCA is not fitted yet; call fit(X) or partial_fit(X) first"),
        (lambda: PCA(2).inverse_transform(torch.randn(3, 2)), RuntimeError,
         "PCA.inverse_transform: this PCA is not fitted yet"),
        (lambda: PCA(6).fit(torch.randn(5, 8)), ValueError,
         "PCA.fit: expected n_components <= min(n_samples, n_features) = 5, got 6"),
        (lambda: PCA(2).fit(torch.tensor([[1.0, float("nan")], [0.0, 1.0], [2.0, 3.0]])),
         ValueError, "PCA.fit: expected a finite X, got 1 NaN or infinite entries"),
        (lambda: PCA(2).fit(torch.randn(2, 3, 4)), ValueError,
         "PCA.fit: expected data of shape (n_samples, n_features), got shape (2, 3, 4)"),
        (lambda: PCA(2).fit(torch.randn(5, 4, dtype=torch.complex64)), TypeError,
         "PCA.fit: expected real X, got complex dtype torch.complex64"),
        (lambda: PCA(1.5), ValueError, "PCA: expected a float n_components in (0, 1), got 1.5"),
        (lambda: PCA(0.5, solver="randomized"), ValueError,
         "PCA: expected an int n_components with solver='randomized', got 0.5"),
        (lambda: PCA(2, solver="arpack"), ValueError,
         "PCA: expected solver in ('auto', 'full', 'randomized', 'covariance'), got 'arpack'"),
        (lambda: PCA(2).fit(torch.randn(1, 4)), ValueError,
         "PCA.fit: expected at least 2 samples (rows) in X, got 1"),
        (lambda: PCA(2).fit(torch.randn(9, 4)).transform(torch.randn(3, 5)), ValueError,
         "PCA.transform: expected input with last dimension 4, got 5"),
    ],
    ids=["unfitted", "unfitted-inverse", "k>rank", "nan", "3-d", "complex", "float>1",
         "randomized-float", "solver", "one-row", "features"],
)
def test_bad_input_messages(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# ---------------------------------------------------------------------------
# Functional pca(): differentiable
# ---------------------------------------------------------------------------
def test_functional_matches_module():
    X = _data(120, 8)
    res = pca(X, 3)
    model = PCA(3, solver="full", dtype=F64).fit(X)
    tol = Tolerance(1e-9, 1e-10)
    assert_close(res.components, model.components_, what="components", tolerance=tol)
    assert_close(res.explained_variance, model.explained_variance_, what="variance", tolerance=tol)
    assert_close(res.scores, model(X), what="scores", tolerance=tol)


def test_functional_gradcheck_and_batch():
    X = torch.randn(2, 9, 4, dtype=F64)
    check_gradients(lambda x: pca(x, 2).scores, X)
    res = pca(X, 2)
    for i in range(2):
        assert_close(res.scores[i], pca(X[i], 2).scores, what="batched scores")


def test_functional_rank_deficient_n_less_than_d_reconstruction_gradient():
    # n = 6 < d = 10: the covariance has 5 nonzero and 5 repeated zero eigenvalues
    X = torch.randn(6, 10, dtype=F64)

    def loss(x, decompose):
        res = decompose(x)
        recon = res.scores @ res.components + res.mean
        return (recon - x).square().sum() + res.explained_variance.sum()

    x = X.clone().requires_grad_()
    loss(x, lambda z: pca(z, 3)).backward()
    assert torch.isfinite(x.grad).all()

    def ref(z):
        zc = z - z.mean(0)
        _, S, Vh = torch.linalg.svd(zc, full_matrices=False)
        comps = Vh[:3]
        return pca_module.PCAResult(zc @ comps.T, comps, S[:3] ** 2 / 5, z.mean(0))

    for _ in range(3):
        E = torch.randn_like(X)
        h = 1e-6
        fd = (loss(X + h * E, ref) - loss(X - h * E, ref)) / (2 * h)
        torch.testing.assert_close((x.grad * E).sum(), fd, rtol=1e-6, atol=1e-8)


def test_functional_errors():
    with pytest.raises(ValueError, match=re.escape(
            "pca: expected k <= min(n_samples, n_features) = 3, got 4")):
        pca(torch.randn(3, 5), 4)
    with pytest.raises(ValueError, match=re.escape(
            "pca: expected at least 2 samples (rows), got 1")):
        pca(torch.randn(1, 5), 1)
