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
