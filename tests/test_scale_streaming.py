"""Streaming (partial_fit) and multi-process fits: a streamed fit equals the in-memory fit,
and two gloo processes over shards equal one process over all the data."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lamods
from lamods import LinearRegression, RidgeRegression

F64 = torch.float64


def regression_data(n: int = 300, d: int = 6, k: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(0.5, 3, d, dtype=F64) + 2.0
    W = torch.randn(d, k, generator=g, dtype=F64)
    Y = X @ W + 1.5 + 0.1 * torch.randn(n, k, generator=g, dtype=F64)
    return X, Y


def stream(model, X, Y, sizes):
    start = 0
    for size in sizes:
        model.partial_fit(X[start:start + size], Y[start:start + size])
        start += size
    assert start == X.shape[0]
    return model


SIZES = [1, 7, 50, 2, 140, 100]


@pytest.mark.parametrize("make", [
    lambda: RidgeRegression(alpha=3.0),
    lambda: RidgeRegression(alpha=0.5, fit_intercept=False),
    lambda: LinearRegression(),
    lambda: LinearRegression(fit_intercept=False),
])
@pytest.mark.parametrize("vector", [True, False])
def test_streamed_equals_in_memory(make, vector):
    X, Y = regression_data()
    if vector:
        Y = Y[:, 0]
    full = make().fit(X, Y)
    streamed = stream(make(), X, Y, SIZES)
    assert int(streamed.n_samples_seen_) == 300
    torch.testing.assert_close(streamed.coef_, full.coef_, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(streamed.intercept_, full.intercept_, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(streamed.predict(X), full.predict(X), rtol=1e-10, atol=1e-9)


def test_streamed_matches_sklearn_ridge():
    from sklearn.linear_model import Ridge

    X, Y = regression_data(seed=1)
    sk = Ridge(alpha=2.0).fit(X.numpy(), Y.numpy())
    model = stream(RidgeRegression(alpha=2.0), X, Y, [100, 100, 100])
    torch.testing.assert_close(model.coef_, torch.from_numpy(sk.coef_), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.intercept_, torch.from_numpy(sk.intercept_), rtol=1e-10,
                               atol=1e-10)


def test_streamed_collinear_is_minimum_norm():
    X, Y = regression_data(seed=2)
    X = torch.cat([X, X[:, :2] * 2.0 - X[:, 2:3]], 1)  # two exactly collinear columns
    full = LinearRegression().fit(X, Y)  # the svd method: minimum-norm coefficients
    streamed = stream(LinearRegression(), X, Y, [150, 150])
    torch.testing.assert_close(streamed.coef_, full.coef_, rtol=1e-7, atol=1e-7)


def test_partial_fit_errors():
    X, Y = regression_data()
    model = RidgeRegression().partial_fit(X[:10], Y[:10])
    with pytest.raises(ValueError, match=r"^RidgeRegression.partial_fit: expected X with 6 "
                       r"features \(as the earlier batches\), got 5"):
        model.partial_fit(X[:10, :5], Y[:10])
    with pytest.raises(ValueError, match=r"^RidgeRegression.partial_fit: expected y of shape "
                       r"\(n_batch, 2\) \(as the earlier batches\), got \(10,\)"):
        model.partial_fit(X[:10], Y[:10, 0])
    with pytest.raises(TypeError, match=r"^RidgeRegression.partial_fit: expected X of the "
                       r"streamed dtype torch.float64, got torch.float32"):
        model.partial_fit(X[:10].float(), Y[:10].float())
    bad = X[:10].clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^RidgeRegression.partial_fit: expected a finite X"):
        model.partial_fit(bad, Y[:10])
    assert int(model.n_samples_seen_) == 10  # the refused batches changed nothing
    with pytest.raises(RuntimeError, match=r"^LinearRegression.partial_fit: expected a fresh "
                       r"module or one fitted by partial_fit, got a model fitted by fit"):
        LinearRegression().fit(X, Y).partial_fit(X, Y)


def test_fit_after_partial_fit_drops_the_stream():
    X, Y = regression_data()
    model = RidgeRegression().partial_fit(X[:10], Y[:10]).fit(X, Y)
    assert int(model.n_samples_seen_) == 0 and model.scatter_xx_.numel() == 0


def test_state_dict_round_trip_continues_the_stream():
    X, Y = regression_data()
    a = RidgeRegression().partial_fit(X[:100], Y[:100])
    b = RidgeRegression(dtype=F64)
    b.load_state_dict(a.state_dict())
    a.partial_fit(X[100:], Y[100:])
    b.partial_fit(X[100:], Y[100:])
    torch.testing.assert_close(a.coef_, b.coef_)


# -- two gloo processes over shards ------------------------------------------------------
def _shard_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        X, Y = regression_data(n=400)
        # uneven shards, several batches per rank (same number of calls on every rank)
        shard = slice(0, 150) if rank == 0 else slice(150, 400)
        Xs, Ys = X[shard], Y[shard]
        model = RidgeRegression(alpha=1.0)
        for part in torch.tensor_split(torch.arange(Xs.shape[0]), 3):
            model.partial_fit(Xs[part], Ys[part])
        torch.save({"coef": model.coef_, "intercept": model.intercept_,
                    "n": int(model.n_samples_seen_)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "result")
    mp.spawn(_shard_worker, args=(2, init, out), nprocs=2, join=True)
    X, Y = regression_data(n=400)
    ref = RidgeRegression(alpha=1.0).fit(X, Y)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["n"] == 400
        torch.testing.assert_close(got["coef"], ref.coef_, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got["intercept"], ref.intercept_, rtol=1e-10, atol=1e-10)


def test_exported():
    assert lamods.RidgeRegression is RidgeRegression


# -- k-means ---------------------------------------------------------------------------
def blobs(n: int = 600, d: int = 4, k: int = 5, seed: int = 3, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    centers = 6 * torch.randn(k, d, generator=g, dtype=F64)
    X = centers[torch.arange(n) % k] + torch.randn(n, d, generator=g, dtype=F64)
    return X.to(dtype), centers.to(dtype)


def test_fit_batches_equals_fit_from_same_init():
    X, _ = blobs()
    g = torch.Generator().manual_seed(7)
    init = X[torch.randperm(600, generator=g)[:5]]
    full = lamods.KMeans(5, init=init, tol=0.0).fit(X)
    batches = list(torch.split(X, [100, 37, 263, 200]))
    streamed = lamods.KMeans(5, init=init, tol=0.0).fit_batches(batches)
    torch.testing.assert_close(streamed.cluster_centers_, full.cluster_centers_, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(streamed.inertia_, full.inertia_, rtol=1e-12, atol=0)
    # tol = 0 stops once the centres no longer move: at most one step after fit's stop
    assert int(full.n_iter_) <= int(streamed.n_iter_) <= int(full.n_iter_) + 1


def test_fit_batches_matches_sklearn_and_takes_a_dataloader():
    from sklearn.cluster import KMeans as SkKMeans

    X, _ = blobs(seed=4)
    init = X[:5].clone()
    sk = SkKMeans(5, init=init.numpy(), n_init=1, tol=1e-4, algorithm="lloyd").fit(X.numpy())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=128)
    ours = lamods.KMeans(5, init=init).fit_batches(loader)
    torch.testing.assert_close(ours.cluster_centers_, torch.from_numpy(sk.cluster_centers_),
                               rtol=1e-8, atol=1e-8)
    assert abs(float(ours.inertia_) - sk.inertia_) <= 1e-8 * sk.inertia_


def test_fit_batches_kmeanspp_close_to_fit():
    X, _ = blobs(seed=5)
    ours = lamods.KMeans(5, seed=0).fit_batches(torch.split(X, 150))
    best = lamods.KMeans(5, n_init=5, seed=0).fit(X)
    assert float(ours.inertia_) <= 1.01 * float(best.inertia_)


def test_partial_fit_is_the_running_mean_and_near_lloyd():
    X, _ = blobs(seed=6)
    init = X[:5].clone()
    # one batch with N = 0 before: each centre moves to the mean of its points (one Lloyd step)
    one = lamods.KMeans(5, init=init).partial_fit(X)
    lloyd1 = lamods.KMeans(5, init=init, max_iter=1).fit(X)
    torch.testing.assert_close(one.cluster_centers_, lloyd1.cluster_centers_, rtol=1e-12,
                               atol=1e-12)
    first = torch.cdist(X, init).argmin(1)  # the labels of the one step
    torch.testing.assert_close(one.counts_, torch.bincount(first, minlength=5).to(F64))
    mb = lamods.KMeans(5, seed=0)
    for _ in range(3):
        for batch in torch.split(X, 60):
            mb.partial_fit(batch)
    assert int(mb.n_iter_) == 30 and float(mb.counts_.sum()) == 1800
    full = lamods.KMeans(5, n_init=5, seed=0).fit(X)
    inertia = float(((X[:, None] - mb.cluster_centers_) ** 2).sum(-1).min(1).values.sum())
    assert inertia <= 1.05 * float(full.inertia_)


def test_kmeans_batch_errors():
    X, _ = blobs()
    km = lamods.KMeans(5, seed=0).partial_fit(X[:50])
    with pytest.raises(ValueError, match=r"^KMeans.partial_fit: expected batches with 4 "
                       r"features \(as the first\), got 3"):
        km.partial_fit(X[:50, :3])
    with pytest.raises(TypeError, match=r"^KMeans.partial_fit: expected batches of the first "
                       r"batch's dtype torch.float64, got torch.float32"):
        km.partial_fit(X[:50].float())
    with pytest.raises(ValueError, match=r"^KMeans.partial_fit: expected a first batch of at "
                       r"least n_clusters = 5 rows"):
        lamods.KMeans(5).partial_fit(X[:3])
    with pytest.raises(RuntimeError, match=r"^KMeans.partial_fit: expected a fresh module"):
        lamods.KMeans(5, seed=0).fit(X).partial_fit(X)
    with pytest.raises(TypeError, match=r"^KMeans.fit_batches: expected an iterable of batches"):
        lamods.KMeans(5).fit_batches(X)
    with pytest.raises(TypeError, match=r"^KMeans.fit_batches: expected a re-iterable of "
                       r"batches .* got a one-shot generator"):
        lamods.KMeans(5).fit_batches(b for b in torch.split(X, 100))
    with pytest.raises(ValueError, match=r"^KMeans.fit_batches: expected an iterable of at "
                       r"least one batch"):
        lamods.KMeans(5).fit_batches([])
    bad = X[:100].clone()
    bad[7, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^KMeans.fit_batches: expected a finite X"):
        lamods.KMeans(5, seed=0).fit_batches([X[:100], bad])


def test_kmeans_partial_fit_state_dict_round_trip():
    X, _ = blobs()
    a = lamods.KMeans(5, seed=0).partial_fit(X[:100])
    b = lamods.KMeans(5, dtype=F64)
    b.load_state_dict(a.state_dict())
    a.partial_fit(X[100:200])
    b.partial_fit(X[100:200])
    torch.testing.assert_close(a.cluster_centers_, b.cluster_centers_)


def _kmeans_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        X, _ = blobs()
        shard = X[:250] if rank == 0 else X[250:]
        lloyd = lamods.KMeans(5, init=X[:5].clone(), tol=0.0).fit_batches(torch.split(shard, 90))
        mb = lamods.KMeans(5, seed=0)
        for batch in torch.split(shard, 125)[:2]:  # two batches on every rank
            mb.partial_fit(batch)
        torch.save({"lloyd": lloyd.cluster_centers_, "inertia": lloyd.inertia_,
                    "mb": mb.cluster_centers_}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_kmeans_two_gloo_processes_equal_one_process(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "result")
    mp.spawn(_kmeans_worker, args=(2, init, out), nprocs=2, join=True)
    X, _ = blobs()
    ref = lamods.KMeans(5, init=X[:5].clone(), tol=0.0).fit(X)
    # mini-batch: rank 0's batches are X[:125], X[125:250], rank 1's X[250:375], X[375:500]:
    # one process sees the union of each step's batches
    mb_first = lamods.KMeans(5, seed=0)._initial_centers("t", X[:125])  # rank 0's seeds
    mb = lamods.KMeans(5, init=mb_first)
    mb.partial_fit(torch.cat([X[:125], X[250:375]]))
    mb.partial_fit(torch.cat([X[125:250], X[375:500]]))
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(got["lloyd"], ref.cluster_centers_, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["inertia"], ref.inertia_, rtol=1e-12, atol=0)
        torch.testing.assert_close(got["mb"], mb.cluster_centers_, rtol=1e-12, atol=1e-12)


# -- NMF ---------------------------------------------------------------------------------
def nmf_data(n: int = 240, d: int = 30, rank: int = 5, seed: int = 8):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, rank, generator=g, dtype=F64) @ torch.rand(rank, d, generator=g,
                                                                  dtype=F64)
    X = X + 0.05 * torch.rand(n, d, generator=g, dtype=F64)
    X[torch.rand(n, d, generator=g) < 0.2] = 0.0
    return X


@pytest.mark.parametrize("solver,loss", [("mu", "frobenius"), ("mu", "kullback-leibler"),
                                         ("hals", "frobenius")])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_nmf_transform_is_row_separable(solver, loss, tol):
    X = nmf_data()
    model = lamods.NMF(5, solver=solver, beta_loss=loss, max_iter=60, tol=tol).fit(X)
    Z = X[:40].clone()
    Z[3] *= 2.0 ** 14  # a row outside the ordinary range: its own scale (Note [NMF scaling])
    Z[5] = 0.0
    whole = model.transform(Z)
    shards = torch.cat([model.transform(Z[:7]), model.transform(Z[7:8]), model.transform(Z[8:])])
    torch.testing.assert_close(shards, whole, rtol=1e-12, atol=1e-14)
    assert bool((whole[5] == 0).all())
    # each row alone is the same too
    for i in (0, 3, 20):
        torch.testing.assert_close(model.transform(Z[i:i + 1])[0], whole[i], rtol=1e-12,
                                   atol=1e-14)


def _nmf_stream(model, batches, epochs=1):
    for _ in range(epochs):
        for batch in batches:
            model.partial_fit(batch)
    return model


beta_div = lamods.classic.beta_divergence


def _frobenius(X, W, H):
    return float((X - W @ H).norm())


@pytest.mark.parametrize("loss", ["frobenius", "kullback-leibler"])
def test_nmf_partial_fit_equals_sklearn_minibatch_from_the_same_init(loss):
    import warnings

    from sklearn.decomposition import MiniBatchNMF

    from lamods.classic.nmf import _initialize

    X = nmf_data(n=600, seed=9)
    batches = list(torch.split(X, 100))
    ours = _nmf_stream(lamods.NMF(5, beta_loss=loss, tol=0.0, seed=0), batches, epochs=4)
    # scikit-learn from the same initial H (our NNDSVDa of the first batch), same batches
    H0 = _initialize(batches[0], 5, "nndsvda", torch.Generator().manual_seed(0))[1]
    sk = MiniBatchNMF(5, init="custom", beta_loss=loss, tol=0.0, forget_factor=0.7,
                      fresh_restarts_max_iter=30, max_iter=200, transform_max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(4):
            for i, batch in enumerate(batches):
                if epoch == 0 and i == 0:
                    sk.partial_fit(batch.numpy(), W=torch.ones(100, 5, dtype=F64).numpy(),
                                   H=H0.numpy())
                else:
                    sk.partial_fit(batch.numpy())
        W_sk = torch.from_numpy(sk.transform(X.numpy()))
    H_sk = torch.from_numpy(sk.components_)
    assert bool((ours.components_ >= 0).all()) and int(ours.n_iter_) == 24
    # the same online algorithm: MU of W from a constant row does not depend on the constant
    # (scikit-learn starts every row from the batch's, we from the row's), tol = 0 in both
    torch.testing.assert_close(ours.components_, H_sk, rtol=1e-10, atol=1e-12)
    if loss == "frobenius":
        err_ours = _frobenius(X, ours.transform(X), ours.components_)
        err_sk = _frobenius(X, W_sk, H_sk)
    else:
        err_ours = float(beta_div(X, ours.transform(X), ours.components_, loss))
        err_sk = float(beta_div(X, W_sk, H_sk, loss))
    assert err_ours == pytest.approx(err_sk, rel=1e-10)
    # and the online fit is a real fit: near the in-memory one's error
    full = lamods.NMF(5, beta_loss=loss, max_iter=200).fit(X)
    err_full = (_frobenius(X, full.transform(X), full.components_) if loss == "frobenius"
                else float(beta_div(X, full.transform(X), full.components_, loss)))
    assert err_ours <= 1.25 * err_full, (err_ours, err_full)


def test_nmf_partial_fit_first_step_closed_form():
    from lamods.classic.nmf import _initialize

    X = nmf_data(seed=10)
    model = lamods.NMF(4, tol=0.0, seed=0, forget_factor=0.5).partial_fit(X[:80])
    H0 = _initialize(X[:80], 4, "nndsvda", torch.Generator().manual_seed(0))[1]
    # the batch's W: 30 MU iterations with H0 fixed from sqrt(mean_i / k), row by row
    W = (X[:80].mean(1, keepdim=True) / 4).sqrt().expand(80, 4).clone()
    for _ in range(30):
        W = W * (X[:80] @ H0.mT) / (W @ H0 @ H0.mT)
    A = 0.5 * H0 + H0 * (W.mT @ X[:80])
    B = 0.5 * torch.ones_like(H0) + W.mT @ W @ H0
    torch.testing.assert_close(model.components_numerator_, A, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.components_denominator_, B, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.components_, A / B, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.reconstruction_err_, (X[:80] - W @ H0).norm(),
                               rtol=1e-10, atol=0)


def test_nmf_partial_fit_errors():
    X = nmf_data()
    model = lamods.NMF(4, seed=0).partial_fit(X[:50])
    with pytest.raises(ValueError, match=r"^NMF.partial_fit: expected X with 30 features \(as "
                       r"the earlier batches\), got 29"):
        model.partial_fit(X[:50, :29])
    with pytest.raises(TypeError, match=r"^NMF.partial_fit: expected X of the streamed dtype "
                       r"torch.float64, got torch.float32"):
        model.partial_fit(X[:50].float())
    with pytest.raises(ValueError, match=r"^NMF.partial_fit: expected a non-negative input, "
                       r"got 1 negative entries"):
        bad = X[:50].clone()
        bad[2, 3] = -1.0
        model.partial_fit(bad)
    bad = X[:50].clone()
    bad[4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"^NMF.partial_fit: expected a finite X"):
        model.partial_fit(bad)
    assert int(model.n_iter_) == 1  # the refused batches changed nothing
    with pytest.raises(ValueError, match=r"^NMF.partial_fit: expected solver='mu' \(online "
                       r"multiplicative updates, as scikit-learn's MiniBatchNMF\), got 'hals'"):
        lamods.NMF(4, solver="hals").partial_fit(X)
    with pytest.raises(RuntimeError, match=r"^NMF.partial_fit: expected a fresh module or one "
                       r"fitted by partial_fit, got a model fitted by fit"):
        lamods.NMF(4, max_iter=20).fit(X).partial_fit(X)
    with pytest.raises(ValueError, match=r"^NMF.partial_fit: expected n_components <= "
                       r"min\(n_batch, n_features\) = 3 for the first batch with "
                       r"init='nndsvda', got 4; use init='random'"):
        lamods.NMF(4).partial_fit(X[:3])
    for bad_rho in (0, 1.5, float("nan"), "0.7"):
        with pytest.raises(ValueError, match=r"^NMF: expected forget_factor in \(0, 1\], got"):
            lamods.NMF(4, forget_factor=bad_rho)


def test_nmf_fit_after_partial_fit_drops_the_stream_and_state_dict_continues():
    X = nmf_data()
    model = lamods.NMF(4, seed=0).partial_fit(X[:50]).fit(X)
    assert model.components_numerator_.numel() == 0
    assert model.components_denominator_.numel() == 0
    a = lamods.NMF(4, seed=0).partial_fit(X[:100])
    b = lamods.NMF(4, dtype=F64)
    b.load_state_dict(a.state_dict())
    a.partial_fit(X[100:])
    b.partial_fit(X[100:])
    torch.testing.assert_close(a.components_, b.components_, rtol=0, atol=0)


def _nmf_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared machine: no oversubscription
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        X = nmf_data(n=300)
        result = {}
        for loss in ("frobenius", "kullback-leibler"):
            model = lamods.NMF(5, beta_loss=loss, seed=0)  # tol > 0: per-row stopping
            # step t: rank 0 streams X[60 t : 60 t + 20], rank 1 X[60 t + 20 : 60 t + 60]
            for t in range(5):
                lo = 60 * t + (0 if rank == 0 else 20)
                model.partial_fit(X[lo:lo + (20 if rank == 0 else 40)])
            result[loss] = (model.components_, model.reconstruction_err_)
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_nmf_two_gloo_processes_equal_one_process(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "result")
    mp.spawn(_nmf_worker, args=(2, init, out), nprocs=2, join=True)
    X = nmf_data(n=300)
    for loss in ("frobenius", "kullback-leibler"):
        # one process over each step's union of batches (in rank order)
        ref = _nmf_stream(lamods.NMF(5, beta_loss=loss, seed=0), torch.split(X, 60))
        for rank in range(2):
            H, err = torch.load(f"{out}.{rank}")[loss]
            torch.testing.assert_close(H, ref.components_, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(err, ref.reconstruction_err_, rtol=1e-10, atol=0)


def test_fused_assign_step_equals_brute_force_over_blocks():
    # Note [fused assign]: blocks of 64 rows (the last one partial) give the argmin of the
    # exact distances and the per-cluster sums of an independent index_add
    from lamods._lloyd import estep

    g = torch.Generator().manual_seed(11)
    X = torch.randn(1000, 7, generator=g, dtype=F64)
    C = torch.randn(5, 7, generator=g, dtype=F64)
    ref = torch.cdist(X, C).argmin(1)
    labels, sums = estep(X, C, 64, sums=True)
    assert torch.equal(labels, ref)
    torch.testing.assert_close(sums, torch.zeros(5, 7, dtype=F64).index_add_(0, ref, X),
                               rtol=1e-13, atol=1e-13)
    labels2, part = estep(X, C, 64, sums=False)
    assert torch.equal(labels2, ref)
    exact = (X[:, None] - C).square().sum(-1).min(1).values
    torch.testing.assert_close(part + X.square().sum(1), exact, rtol=1e-12, atol=1e-12)


def test_fit_batches_rejects_a_nonfinite_batch_on_a_later_pass():
    # the later passes check finiteness on each batch's sums (no extra pass over it)
    X, _ = blobs(seed=8)
    bad = X[:100].clone()
    bad[3, 1] = float("nan")

    class Flaky:
        """The first pass reads finite batches, the later ones a NaN."""

        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            yield X[:100] if self.passes == 1 else bad
            yield X[100:]

    with pytest.raises(ValueError, match=r"^KMeans.fit_batches: expected a finite X, got 1 NaN "
                                         r"or infinite entries$"):
        lamods.KMeans(5, init=X[:5].clone(), tol=0.0).fit_batches(Flaky())


def test_fit_and_fit_batches_equal_sklearn_after_the_same_iterations():
    # fixed iteration count on both sides (tol = 0 and max_iter below scikit-learn's strict
    # convergence), several assign blocks (chunk_rows gives 4096 rows at k = 16)
    from sklearn.cluster import KMeans as SkKMeans

    g = torch.Generator().manual_seed(12)
    X = torch.randn(9000, 8, generator=g, dtype=F64) + 3.0
    init = X[:16].clone()
    sk = SkKMeans(16, init=init.numpy(), n_init=1, max_iter=5, tol=0.0,
                  algorithm="lloyd").fit(X.numpy())
    assert sk.n_iter_ == 5
    full = lamods.KMeans(16, init=init, max_iter=5, tol=0.0).fit(X)
    streamed = lamods.KMeans(16, init=init, max_iter=5, tol=0.0).fit_batches(torch.chunk(X, 3))
    for model in (full, streamed):
        assert int(model.n_iter_) == 5
        torch.testing.assert_close(model.cluster_centers_, torch.from_numpy(sk.cluster_centers_),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(float(model.inertia_), sk.inertia_, rtol=1e-10, atol=0)
    assert torch.equal(full.labels_, torch.from_numpy(sk.labels_).long())


@pytest.mark.parametrize("frac", [0.01, 0.2, 0.9])
def test_incremental_sums_equal_fresh_sums(frac):
    # Note [incremental sums]: the moved rows' update (and the fresh sum past a quarter)
    # equals index_add over every row, to float64 rounding
    from lamods._lloyd import update_sums

    g = torch.Generator().manual_seed(3)
    X = torch.randn(2000, 7, generator=g, dtype=torch.float64)
    old = torch.randint(0, 5, (2000,), generator=g)
    new = torch.where(torch.rand(2000, generator=g) < frac,
                      torch.randint(0, 5, (2000,), generator=g), old)
    sums = torch.zeros(5, 7, dtype=torch.float64).index_add_(0, old, X)
    got = update_sums(X, new, old, new != old, sums)
    want = torch.zeros(5, 7, dtype=torch.float64).index_add_(0, new, X)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _spy_assign(monkeypatch, screen: bool) -> list[tuple[int, bool]]:
    """Record ``(rows, with_bounds)`` of every full-precision assign step of a k-means fit:
    through the float32 screen (Note [float32 screen]) or, with it switched off, through
    ``two_nearest`` (bounds) and ``estep`` (plain steps)."""
    import lamods._lloyd as core

    calls: list[tuple[int, bool]] = []
    if screen:
        real = core.Float32Screen.two_nearest

        def spy(self, X, x_sq, C, chunk, slack, rows=None, *, bounds=True):
            calls.append((X.shape[0] if rows is None else rows.numel(), bounds))
            return real(self, X, x_sq, C, chunk, slack, rows, bounds=bounds)

        monkeypatch.setattr(core.Float32Screen, "two_nearest", spy)
    else:
        monkeypatch.setattr(core.Float32Screen, "applies", staticmethod(lambda X, k: False))
        real_two, real_e = core.two_nearest, core.estep

        def two(Xs, *args):
            calls.append((Xs.shape[0], True))
            return real_two(Xs, *args)

        def plain(Xs, *args, **kw):
            calls.append((Xs.shape[0], False))
            return real_e(Xs, *args, **kw)

        monkeypatch.setattr(core, "two_nearest", two)
        monkeypatch.setattr(core, "estep", plain)
    return calls


@pytest.mark.parametrize("screen", [True, False])
@pytest.mark.parametrize("max_iter", [3, 12, 40])
def test_hamerly_bounds_give_lloyds_iterations(monkeypatch, max_iter, screen):
    # Note [Hamerly bounds]: on clustered data most rows are skipped after a few iterations,
    # and every iteration still equals scikit-learn's Lloyd (labels, centres, count), with
    # and without the float32 screen
    from sklearn.cluster import KMeans as SkKMeans

    g = torch.Generator().manual_seed(21)
    means = 6.0 * torch.randn(12, 5, generator=g, dtype=F64)
    X = means[torch.randint(0, 12, (6000,), generator=g)] + torch.randn(6000, 5, generator=g,
                                                                         dtype=F64)
    init = X[:12].clone()
    calls = _spy_assign(monkeypatch, screen)
    ours = lamods.KMeans(12, init=init, max_iter=max_iter, tol=0.0).fit(X)
    sk = SkKMeans(12, init=init.numpy(), n_init=1, max_iter=max_iter, tol=0.0,
                  algorithm="lloyd").fit(X.numpy())
    assert int(ours.n_iter_) == sk.n_iter_
    assert torch.equal(ours.labels_, torch.from_numpy(sk.labels_).long())
    torch.testing.assert_close(ours.cluster_centers_, torch.from_numpy(sk.cluster_centers_),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(float(ours.inertia_), sk.inertia_, rtol=1e-10, atol=0)
    rows = [r for r, bounds in calls if bounds]
    assert rows[0] == len(X)
    if max_iter > 3 and sk.n_iter_ > 3:
        assert min(rows[1:]) < len(X) // 4  # the bounds skipped most rows at some iteration


@pytest.mark.parametrize("screen", [True, False])
def test_hamerly_bounds_fall_back_to_plain_steps_without_structure(monkeypatch, screen):
    # uniform noise: the bounds prune little, so after three full passes Lloyd runs plain
    # steps; the iterations still equal scikit-learn's
    from sklearn.cluster import KMeans as SkKMeans

    g = torch.Generator().manual_seed(5)
    X = torch.randn(5000, 16, generator=g, dtype=F64)
    init = X[:10].clone()
    calls = _spy_assign(monkeypatch, screen)
    ours = lamods.KMeans(10, init=init, max_iter=15, tol=0.0).fit(X)
    sk = SkKMeans(10, init=init.numpy(), n_init=1, max_iter=15, tol=0.0,
                  algorithm="lloyd").fit(X.numpy())
    assert int(ours.n_iter_) == sk.n_iter_ == 15
    assert torch.equal(ours.labels_, torch.from_numpy(sk.labels_).long())
    torch.testing.assert_close(ours.cluster_centers_, torch.from_numpy(sk.cluster_centers_),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(float(ours.inertia_), sk.inertia_, rtol=1e-10, atol=0)
    with_bounds = sum(bounds for _, bounds in calls)
    assert with_bounds <= 4 and len(calls) - with_bounds >= 11


def _near_ties(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows next to the bisector of two centers (offsets 1e-10 .. 1e-3 of their distance,
    both signs), far from the origin, plus ordinary rows; the exact labels, from float64
    differences ``||x - c||^2`` (which decide offsets down to about 1e-12)."""
    g = torch.Generator().manual_seed(seed)
    d = 24
    C = 40.0 + torch.randn(5, d, generator=g, dtype=F64)
    u = (C[1] - C[0]) / (C[1] - C[0]).norm()
    t = torch.logspace(-10, -3, 400, dtype=F64) * (C[1] - C[0]).norm()
    t = torch.cat([t, -t])
    noise = torch.randn(t.numel(), d, generator=g, dtype=F64)
    noise -= (noise @ u).unsqueeze(1) * u  # stay on the bisector's parallel planes
    X = torch.cat([(C[0] + C[1]) / 2 + t.unsqueeze(1) * u + 0.01 * noise,
                   40.0 + 2 * torch.randn(2000, d, generator=g, dtype=F64)])
    exact = (X.unsqueeze(1) - C.unsqueeze(0)).square().sum(-1).argmin(1)
    return X, C, exact


def test_float32_screen_labels_are_exact_near_ties():
    # Note [float32 screen]: float32 alone mislabels rows within its rounding of a tie;
    # the screen re-checks exactly those in float64
    import lamods._lloyd as core

    X, C, exact = _near_ties(0)
    Xs, x_sq, frame = core.center_scale(X)
    Cs = frame.apply(C)
    c_bound = torch.maximum(x_sq.max(), Cs.square().sum(1).max())
    slack = (8 * torch.finfo(F64).eps * (x_sq + c_bound)).sqrt()
    screen = core.Float32Screen(Xs, x_sq, c_bound)
    f32_only = core._two_smallest(Xs.float(), Cs.float(), 4096)[0]
    assert (f32_only != exact).any()  # the data defeat float32 alone
    labels, _, _ = screen.two_nearest(Xs, x_sq, Cs, 4096, slack, bounds=False)
    assert torch.equal(labels, exact)
    assert 0 < screen.rechecked < X.shape[0] // 2
    rows = torch.arange(0, X.shape[0], 3)
    sub, upper, lower = screen.two_nearest(Xs, x_sq, Cs, 4096, slack, rows)
    assert torch.equal(sub, exact[rows])
    # the bounds hold against distances taken as differences (Note [Hamerly bounds])
    dist = (Xs[rows].unsqueeze(1) - Cs.unsqueeze(0)).square().sum(-1).sqrt()
    nearest = dist.gather(1, sub.unsqueeze(1))[:, 0]
    second = dist.scatter(1, sub.unsqueeze(1), float("inf")).amin(1)
    assert bool((upper >= nearest).all()) and bool((lower <= second).all())


def test_decided_labels_codes_label_and_count():
    # Note [float32 screen]: one reduction per block; a row is decided when exactly one
    # partial distance lies less than its gap above the smallest
    import lamods._lloyd as core

    g = torch.Generator().manual_seed(3)
    X = torch.randn(3000, 6, generator=g)
    C = torch.randn(9, 6, generator=g)
    C[5] = C[2]  # a duplicated center: its rows tie exactly
    ref, p1, p2 = core._two_smallest(X, C, 256)
    for gap in (1e-6, 0.05):
        labels, undecided = core._decided_labels(X, C, torch.full((3000,), gap), 256)
        assert torch.equal(undecided, p2 - p1 < gap)
        assert torch.equal(labels[~undecided], ref[~undecided])
        assert bool(undecided[(ref == 2) | (ref == 5)].all())
        assert bool((~undecided).any())


@pytest.mark.parametrize("k", [2, 201])
def test_kmeans_screen_for_few_and_many_centers(monkeypatch, k):
    # k above CODE_MAX_K takes the two-minima pass for the plain steps too
    import lamods._lloyd as core

    g = torch.Generator().manual_seed(k)
    X = torch.randn(1500, 3, generator=g, dtype=F64)
    init = X[:k].clone()
    ours = lamods.KMeans(k, init=init, max_iter=8, tol=0.0).fit(X)
    monkeypatch.setattr(core.Float32Screen, "applies", staticmethod(lambda X, k: False))
    plain = lamods.KMeans(k, init=init, max_iter=8, tol=0.0).fit(X)
    assert torch.equal(ours.labels_, plain.labels_)
    torch.testing.assert_close(ours.cluster_centers_, plain.cluster_centers_, rtol=1e-12,
                               atol=1e-12)


def test_kmeans_same_with_and_without_float32_screen(monkeypatch):
    import lamods._lloyd as core

    X, C, _ = _near_ties(1)
    init = X[torch.arange(0, X.shape[0], X.shape[0] // 5)][:5]
    ours = lamods.KMeans(5, init=init, max_iter=25, tol=0.0).fit(X)
    monkeypatch.setattr(core.Float32Screen, "applies", staticmethod(lambda X, k: False))
    plain = lamods.KMeans(5, init=init, max_iter=25, tol=0.0).fit(X)
    assert int(ours.n_iter_) == int(plain.n_iter_)
    assert torch.equal(ours.labels_, plain.labels_)
    torch.testing.assert_close(ours.cluster_centers_, plain.cluster_centers_, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(ours.inertia_, plain.inertia_, rtol=1e-12, atol=0)


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_float32_screen_off_when_float32_products_may_be_lowered(precision):
    # TF32 / bfloat16 products would void the float32 error bound of the screen
    import lamods._lloyd as core
    from lamods._precision import float32_gemm_is_ieee

    X = torch.randn(50, 4, dtype=F64)
    before = torch.get_float32_matmul_precision()
    assert core.Float32Screen.applies(X, 3) == float32_gemm_is_ieee(X.device)
    assert not core.Float32Screen.applies(X.float(), 3)
    assert not core.Float32Screen.applies(X, 1)
    try:
        torch.set_float32_matmul_precision(precision)
        assert not float32_gemm_is_ieee(X.device)
        assert not core.Float32Screen.applies(X, 3)
    finally:
        torch.set_float32_matmul_precision(before)
    assert core.Float32Screen.applies(X, 3) == float32_gemm_is_ieee(X.device)

