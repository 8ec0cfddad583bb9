"""NystromKernelRidge (FALKON): against exact kernel ridge and a dense solve of the Nystrom
normal equations."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lamods
from lamods import KernelRidgeHead, NystromKernelRidge
from lamods.layers import RBFKernel
from lamods.layers._kernel_stream import KnmStream
from lamods.layers.kernel_heads import _upper_gram

F64 = torch.float64


def data(n: int = 300, d: int = 4, seed: int = 0, k: int | None = None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sin(X @ torch.randn(d, generator=g, dtype=F64)) + 0.05 * torch.randn(
        n, generator=g, dtype=F64)
    if k is not None:
        y = torch.stack([y, y.square(), -y][:k], 1)
    return X, y


def test_all_points_as_centres_is_exact_kernel_ridge():
    X, y = data(200)
    exact = KernelRidgeHead("rbf", alpha=0.1, lengthscale=1.5).fit(X, y)
    falkon = NystromKernelRidge("rbf", 0.1, n_centers=200, maxiter=50, rtol=1e-12, seed=0,
                                lengthscale=1.5).fit(X, y)
    Xq, _ = data(50, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(falkon(Xq), exact(Xq), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("k", [None, 3])
def test_matches_dense_nystrom_solve(k):
    X, y = data(300, k=k)
    alpha, m = 0.5, 60
    model = NystromKernelRidge("rbf", alpha, n_centers=m, maxiter=100, rtol=1e-12, seed=3,
                               lengthscale=2.0, block_rows=137).fit(X, y)
    C = model.centers_
    # C is m distinct rows of X
    match = (C[:, None] == X[None]).all(-1)  # (m, n): centre i is row j
    assert C.shape == (m, 4) and bool((match.sum(1) == 1).all())
    assert len(set(match.int().argmax(1).tolist())) == m
    kern = RBFKernel(lengthscale=2.0).double()
    Knm, Kmm = kern(X, C), kern(C, C)
    Y = y if k else y[:, None]
    # (K_nm^T K_nm + alpha K_mm) beta = K_nm^T y, solved densely (jitter: Note [FALKON ...])
    jitter = torch.finfo(F64).eps * m * float(Kmm.diagonal().mean())
    H = Knm.mT @ Knm + alpha * (Kmm + jitter * torch.eye(m, dtype=F64))
    beta = torch.linalg.solve(H, Knm.mT @ Y)
    torch.testing.assert_close(model.coef_, beta, rtol=1e-7, atol=1e-7 * float(beta.abs().max()))
    Xq, _ = data(30, seed=5)
    ref = kern(Xq, C) @ beta
    torch.testing.assert_close(model.predict(Xq), ref if k else ref[:, 0], rtol=1e-7,
                               atol=1e-7)


def test_block_rows_do_not_change_the_result():
    X, y = data(250)
    kw = {"n_centers": 50, "seed": 1, "maxiter": 200, "rtol": 1e-10}
    a = NystromKernelRidge("rbf", 0.3, block_rows=7, **kw).fit(X, y)
    b = NystromKernelRidge("rbf", 0.3, block_rows=1000, **kw).fit(X, y)
    torch.testing.assert_close(a.coef_, b.coef_, rtol=1e-9, atol=1e-9)


def test_preconditioner_needs_few_iterations():
    # a badly conditioned system (kappa(H) ~ 1e11 here): FALKON converges in tens of
    # iterations where plain CG on H does not converge in a thousand
    X, y = data(600)
    model = NystromKernelRidge("rbf", 1e-2, n_centers=100, maxiter=150, rtol=1e-8, seed=0,
                               lengthscale=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y)
    assert int(model.n_iter_) < 150
    kern = RBFKernel(lengthscale=2.0).double()
    Knm, Kmm = kern(X, model.centers_), kern(model.centers_, model.centers_)
    H = Knm.mT @ Knm + 1e-2 * Kmm
    with pytest.raises(lamods.ConvergenceError):
        lamods.cg(H, Knm.mT @ y, rtol=1e-8, maxiter=1000)


def test_maxiter_warns():
    X, y = data(300)
    with pytest.warns(lamods.ConvergenceWarning, match=r"^NystromKernelRidge.fit: conjugate "
                      r"gradient stopped at maxiter=1"):
        NystromKernelRidge("rbf", 1e-4, n_centers=80, maxiter=1, rtol=1e-12, seed=0).fit(X, y)


def test_float32_close_to_float64():
    X, y = data(300)
    m64 = NystromKernelRidge("rbf", 0.1, n_centers=50, seed=0, maxiter=200).fit(X, y)
    m32 = NystromKernelRidge("rbf", 0.1, n_centers=50, seed=0, maxiter=200,
                             rtol=1e-5).fit(X.float(), y.float())
    assert m32.coef_.dtype == torch.float32
    p64, p32 = m64.predict(X), m32.predict(X.float()).double()
    assert float((p32 - p64).abs().max()) < 1e-3 * float(p64.abs().max())


def test_state_dict_round_trip():
    X, y = data(100)
    a = NystromKernelRidge("rbf", 0.1, n_centers=20, seed=0).fit(X, y)
    b = NystromKernelRidge("rbf", 0.1, n_centers=20, dtype=F64)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.predict(X), a.predict(X))


def test_errors():
    X, y = data(30)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.fit: expected n_centers <= "
                       r"n_samples = 30, got 31"):
        NystromKernelRidge(n_centers=31).fit(X, y)
    with pytest.raises(lamods.NotFittedError, match=r"^NystromKernelRidge.predict: this "
                       r"NystromKernelRidge is not fitted yet"):
        NystromKernelRidge().predict(X)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge: expected alpha > 0, got 0"):
        NystromKernelRidge(alpha=0)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge: expected block_rows to be a "
                       r"positive int, got 0"):
        NystromKernelRidge(block_rows=0)
    bad = X.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.fit: expected a finite X"):
        NystromKernelRidge(n_centers=5).fit(bad, y)
    model = NystromKernelRidge(n_centers=5, seed=0).fit(X, y)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.predict: expected finite rows"):
        model.predict(bad)


# -- the fused kernel pass (Note [fused RBF pass]) ------------------------------------------
def _dense(X, C, lengthscale):
    return RBFKernel(lengthscale=lengthscale, dtype=F64)(X.double(), C.double())


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-12), (torch.float32, 2e-6)])
def test_fused_pass_equals_dense_products(dtype, tol):
    X, y = data(500, d=6, seed=2)
    C = X[torch.randperm(500, generator=torch.Generator().manual_seed(0))[:70]]
    X, C = X.to(dtype), C.to(dtype)
    stream = KnmStream(RBFKernel(1.7, dtype=dtype), X, C, rows=64)
    assert stream.fused and stream.acc_dtype == F64
    K = _dense(X, C, 1.7)  # float64 from the (rounded) data
    V = torch.randn(70, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    Y = torch.stack([y, -y], 1).to(dtype)
    ref_gv, ref_ky, ref_g = K.mT @ (K @ V), K.mT @ Y.double(), K.mT @ K
    # relative to the size of the sums: float32 rounding of the blocks, float64 sums
    for got, ref in ((stream.gram_products(V), ref_gv), (stream.cross(Y), ref_ky),
                     (stream.statistics(Y)[0], ref_g), (stream.statistics(Y)[1], ref_ky)):
        assert got.dtype == F64
        assert float((got - ref).abs().max()) <= tol * float(ref.abs().max())


def test_fused_pass_equals_the_kernel_module_blocks():
    # the generic path (the kernel module's own _prepare / _block) on the same data
    X, _ = data(300, d=5, seed=4)
    X = 1e3 + 10 * X  # far from the origin: the centring matters
    C = X[:40]
    fused = KnmStream(RBFKernel(20.0).double(), X, C, rows=33)
    generic = KnmStream(lamods.layers.LaplacianKernel(20.0).double(), X, C)
    generic.kernel = fused.kernel  # the same RBF kernel, through the generic path
    generic.Xp, generic.Cp, generic.ctx = fused.kernel._prepare(X, C, False)
    assert fused.fused and not generic.fused
    V = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(fused.gram_products(V), generic.gram_products(V), rtol=1e-12,
                               atol=1e-12 * float(generic.gram_products(V).abs().max()))
    torch.testing.assert_close(fused.block(0), RBFKernel(20.0).double()(X[:33], C), rtol=1e-12,
                               atol=1e-14)


def test_fused_pass_falls_back_where_gamma_would_overflow():
    # lengthscale 1e-30 on float32 data of spread 1: gamma ~ 1e60 overflows float32
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    kern = RBFKernel(1e-30)
    stream = KnmStream(kern, X, X[:10])
    assert not stream.fused
    torch.testing.assert_close(stream.block(0), kern(X, X[:10]))  # the identity on X[:10]
    assert bool(torch.isfinite(stream.gram_products(torch.ones(10, 1, dtype=F64))).all())


def test_float32_fit_equals_the_dense_solution():
    # the fast path (float32 blocks, float64 CG and preconditioner) against a float64 dense
    # solve of the same system: (K_nm^T K_nm + alpha (K_mm + jitter I)) beta = K_nm^T y, with
    # FALKON's float32 jitter (Note [FALKON preconditioner])
    X, y = data(1000, d=5, seed=6)
    X32, y32 = X.float(), y.float()
    alpha, m = 2.0, 80
    model = NystromKernelRidge("rbf", alpha, n_centers=m, maxiter=100, rtol=1e-9, seed=0,
                               lengthscale=1.5).fit(X32, y32)
    assert model.coef_.dtype == torch.float32
    C = model.centers_
    Knm, Kmm = _dense(X32, C, 1.5), _dense(C, C, 1.5)
    jitter = torch.finfo(torch.float32).eps * m * float(Kmm.diagonal().mean())
    beta = torch.linalg.solve(Knm.mT @ Knm + alpha * (Kmm + jitter * torch.eye(m, dtype=F64)),
                              Knm.mT @ y32.double()[:, None])
    Xq, _ = data(200, d=5, seed=7)
    ref = (_dense(Xq.float(), C, 1.5) @ beta)[:, 0]
    got = model.predict(Xq.float()).double()
    # float32 rounding: of the data's kernel blocks and of coef_ and the prediction
    assert float((got - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_float32_fit_with_the_laplacian_kernel_equals_the_dense_solution():
    # the generic (unfused) path with float32 blocks and float64 sums
    X, y = data(600, d=3, seed=8)
    X32, y32 = X.float(), y.float()
    m = 60
    model = NystromKernelRidge("laplacian", 1.0, n_centers=m, maxiter=100, rtol=1e-9, seed=0,
                               lengthscale=2.0).fit(X32, y32)
    C = model.centers_.double()
    kern = lamods.layers.LaplacianKernel(2.0, dtype=F64)
    Knm, Kmm = kern(X32.double(), C), kern(C, C)
    jitter = torch.finfo(torch.float32).eps * m * float(Kmm.diagonal().mean())
    beta = torch.linalg.solve(Knm.mT @ Knm + Kmm + jitter * torch.eye(m, dtype=F64),
                              Knm.mT @ y32.double()[:, None])
    ref = (Knm @ beta)[:, 0]
    got = model.predict(X32).double()
    # float32 rounding of the blocks (exp of |x - c|_1 / l up to ~5: ~5 u each), amplified
    # by the system's conditioning (measured 2.8e-5 relative)
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


# -- partial_fit (Note [streamed Nystrom statistics]) ------------------------------------
def _streamed(X, y, centers, parts, **kw):
    model = NystromKernelRidge("rbf", 0.5, n_centers=centers.shape[0], lengthscale=1.3, **kw)
    for i, part in enumerate(torch.tensor_split(torch.arange(X.shape[0]), parts)):
        model.partial_fit(X[part], y[part], centers=centers if i == 0 else None)
    return model


@pytest.mark.parametrize("k", [None, 2])
def test_partial_fit_equals_fit_and_the_in_memory_statistics(k):
    X, y = data(700, d=4, seed=9, k=k)
    full = NystromKernelRidge("rbf", 0.5, n_centers=60, maxiter=300, rtol=1e-13, seed=0,
                              lengthscale=1.3).fit(X, y)
    C = full.centers_
    one = _streamed(X, y, C, 1)
    many = _streamed(X, y, C, 5, block_rows=17)
    assert int(many.n_samples_seen_) == 700 and int(one.n_samples_seen_) == 700
    K = _dense(X, C, 1.3)
    Y = y if k else y[:, None]
    torch.testing.assert_close(many.gram_, K.mT @ K, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(many.cross_, K.mT @ Y, rtol=1e-12, atol=1e-10)
    scale = float(full.coef_.abs().max())
    torch.testing.assert_close(many.coef_, one.coef_, rtol=0, atol=1e-9 * scale)
    torch.testing.assert_close(many.coef_, full.coef_, rtol=0, atol=1e-7 * scale)
    Xq, _ = data(40, d=4, seed=10)
    assert many.predict(Xq).shape == full.predict(Xq).shape
    torch.testing.assert_close(many.predict(Xq), full.predict(Xq), rtol=1e-7, atol=1e-7)


def test_partial_fit_draws_centres_from_the_first_batch():
    X, y = data(300, seed=11)
    a = NystromKernelRidge("rbf", 0.5, n_centers=30, seed=4).partial_fit(X[:100], y[:100])
    g = torch.Generator().manual_seed(4)
    torch.testing.assert_close(a.centers_, X[:100][torch.randperm(100, generator=g)[:30]])
    a.partial_fit(X[100:], y[100:])
    b = _streamed(X, y, a.centers_, 1)
    b.set_params(alpha=0.5)
    torch.testing.assert_close(a.coef_, NystromKernelRidge(
        "rbf", 0.5, n_centers=30).partial_fit(X, y, centers=a.centers_).coef_, rtol=1e-9,
        atol=1e-9)


def test_partial_fit_state_dict_round_trip_continues_the_stream():
    X, y = data(300, seed=12)
    C = X[:25]
    a = _streamed(X[:150], y[:150], C, 2)
    b = NystromKernelRidge("rbf", 0.5, n_centers=25, lengthscale=1.3, dtype=F64)
    b.load_state_dict(a.state_dict())
    a.partial_fit(X[150:], y[150:])
    b.partial_fit(X[150:], y[150:])
    torch.testing.assert_close(a.coef_, b.coef_)
    torch.testing.assert_close(a.coef_, _streamed(X, y, C, 1).coef_, rtol=1e-9, atol=1e-9)


def test_fit_drops_the_streaming_statistics():
    X, y = data(200, seed=13)
    model = _streamed(X, y, X[:20], 2)
    model.fit(X, y)
    assert model.gram_.numel() == 0 and int(model.n_samples_seen_) == 0


def test_partial_fit_errors():
    X, y = data(100, seed=14)
    name = r"^NystromKernelRidge.partial_fit: "
    with pytest.raises(ValueError, match=name + r"expected a first batch of at least "
                       r"n_centers=20 rows \(the centres are drawn from it\), got 10"):
        NystromKernelRidge(n_centers=20).partial_fit(X[:10], y[:10])
    with pytest.raises(ValueError, match=name + r"expected centers of shape \(n_centers, "
                       r"n_features\) = \(20, 4\), got \(19, 4\)"):
        NystromKernelRidge(n_centers=20).partial_fit(X, y, centers=X[:19])
    model = NystromKernelRidge(n_centers=20, seed=0).partial_fit(X, y)
    with pytest.raises(ValueError, match=name + r"expected centers only on the first call "
                       r"\(it fixes them\), got centers after 100 samples"):
        model.partial_fit(X, y, centers=X[:20])
    with pytest.raises(ValueError, match=name + r"expected y of shape \(n_batch,\) \(as the "
                       r"earlier batches\), got \(100, 2\)"):
        model.partial_fit(X, torch.stack([y, y], 1))
    with pytest.raises(TypeError, match=name + r"expected X of the streamed dtype "
                       r"torch.float64, got torch.float32"):
        model.partial_fit(X.float(), y.float())
    with pytest.raises(RuntimeError, match=name + r"expected a fresh module or one fitted by "
                       r"partial_fit, got a model fitted by fit"):
        NystromKernelRidge(n_centers=20, seed=0).fit(X, y).partial_fit(X, y)


def _gloo_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        X, y = data(400, seed=15)
        shard = slice(0, 150) if rank == 0 else slice(150, 400)  # uneven shards
        Xs, ys = X[shard], y[shard]
        model = NystromKernelRidge("rbf", 0.5, n_centers=30, lengthscale=1.3, seed=rank)
        # the centres: drawn from rank 0's first batch and broadcast
        for part in torch.tensor_split(torch.arange(Xs.shape[0]), 3):
            model.partial_fit(Xs[part], ys[part])
        torch.save({"coef": model.coef_, "centers": model.centers_,
                    "n": int(model.n_samples_seen_)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_partial_fit_two_gloo_processes_equal_one_process(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "result")
    mp.spawn(_gloo_worker, args=(2, init, out), nprocs=2, join=True)
    X, y = data(400, seed=15)
    first = X[:150][torch.tensor_split(torch.arange(150), 3)[0]]  # rank 0's first batch
    g = torch.Generator().manual_seed(0)
    C = first[torch.randperm(first.shape[0], generator=g)[:30]]
    ref = _streamed(X, y, C, 1)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["n"] == 400
        torch.testing.assert_close(got["centers"], C, rtol=0, atol=0)
        torch.testing.assert_close(got["coef"], ref.coef_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("m, block", [(1, 512), (7, 3), (130, 32), (64, 64)])
def test_upper_gram_is_t_t_transpose(m, block):
    T = torch.randn(m, m, generator=torch.Generator().manual_seed(m), dtype=F64).triu()
    torch.testing.assert_close(_upper_gram(T, block), T @ T.mT, rtol=1e-13, atol=1e-13)
