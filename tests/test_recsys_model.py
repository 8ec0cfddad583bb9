"""MatrixFactorization, its fitting functions, recommendations and metrics (lamods.recsys)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lamods
from lamods.recsys import (
    MatrixFactorization,
    Ratings,
    evaluate,
    fit_als,
    fit_gibbs,
    fit_sgd,
    ndcg_at_k,
    precision_at_k,
    random_split,
    ranking_metrics,
    recall_at_k,
    ridge_rows,
    rmse,
    synthetic_ratings,
)
from lamods.recsys.train import mf_backward
from lamods.testing import check_gradients

NOISE = 0.1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared, oversubscribed CPU more threads were ~10x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic():
    syn = synthetic_ratings(150, 120, 3, density=0.3, noise=NOISE, seed=0)
    train, test = random_split(syn.data, (0.9, 0.1), seed=0)
    return syn, train, test


def _reference(model: MatrixFactorization, users, items, interactions):
    """r_ui = mu + b_u + b_i + q_i^T (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j), by loops."""
    out = []
    for u, i in zip(users.tolist(), items.tolist()):
        vec = model.user_factors[u]
        if model.implicit:
            n_u = sorted({j for uu, j in interactions if uu == u})
            if n_u:
                vec = vec + model.implicit_factors[n_u].sum(0) / len(n_u) ** 0.5
        r = model.global_mean + model.item_factors[i] @ vec
        if model.biased:
            r = r + model.user_bias[u] + model.item_bias[i]
        out.append(r)
    return torch.stack(out)


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("biased", [False, True])
def test_forward_matches_formula(implicit: bool, biased: bool) -> None:
    model = MatrixFactorization(5, 7, 3, biased=biased, implicit=implicit, dtype=torch.float64)
    with torch.no_grad():
        model.global_mean.fill_(3.2)
        if biased:
            model.user_bias.normal_()
            model.item_bias.normal_()
    pairs = [(0, 1), (0, 4), (0, 4), (2, 6), (3, 0)]
    model.set_interactions(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
    users = torch.tensor([[0, 2], [4, 0]])
    items = torch.tensor([[3, 3], [1, 6]])
    out = model(users, items)
    assert out.shape == (2, 2)
    torch.testing.assert_close(out.reshape(-1), _reference(model, users.reshape(-1),
                                                            items.reshape(-1), pairs))


def test_loss_matches_surprise_objective_and_gradcheck() -> None:
    model = MatrixFactorization(4, 5, 2, implicit=True, dtype=torch.float64)
    model.set_interactions(torch.tensor([0, 0, 1, 3]), torch.tensor([1, 2, 2, 4]))
    users, items = torch.tensor([0, 1, 3, 0]), torch.tensor([4, 2, 0, 1])
    ratings = torch.tensor([4.0, 2.0, 5.0, 3.0], dtype=torch.float64)
    reg, reg_b = 0.3, 0.1
    loss = model.loss(users, items, ratings, reg=reg, reg_bias=reg_b, reduction="sum")
    n_u = {0: [1, 2], 1: [2], 3: [4]}
    expected = 0.0
    pred = model(users, items).detach()
    for n, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        y_sq = sum(float(model.implicit_factors.detach()[j].pow(2).sum()) for j in n_u[u])
        expected += 0.5 * float(ratings[n] - pred[n]) ** 2 + 0.5 * reg * (
            float(model.user_factors.detach()[u].pow(2).sum())
            + float(model.item_factors.detach()[i].pow(2).sum())
            + y_sq) + 0.5 * reg_b * (float(model.user_bias.detach()[u]) ** 2
                                     + float(model.item_bias.detach()[i]) ** 2)
    assert abs(float(loss.detach()) - expected) < 1e-10
    # no hand-written backward: autograd's gradient of the whole loss, checked anyway
    names = [n for n, _ in model.named_parameters()]

    def fn(*params):
        return torch.func.functional_call(model, dict(zip(names, params)), (users, items))

    check_gradients(fn, *[p.detach() for p in model.parameters()], gradgrad=False)


@pytest.mark.parametrize("biased", [True, False])
def test_hand_written_gradient_equals_autograd(biased: bool) -> None:
    """mf_backward (Note [hand-written gradient]) against autograd of loss(), float64."""
    torch.manual_seed(0)
    model = MatrixFactorization(5, 7, 3, biased=biased, dtype=torch.float64)
    with torch.no_grad():
        model.global_mean.fill_(3.2)
        if biased:
            model.user_bias.normal_()
            model.item_bias.normal_()
    users = torch.tensor([0, 4, 4, 1, 0, 2, 4])  # repeated users and items accumulate
    items = torch.tensor([6, 1, 1, 0, 3, 6, 2])
    ratings = torch.tensor([4.0, 2.0, 5.0, 1.0, 3.0, 4.5, 2.0], dtype=torch.float64)
    reg, reg_b = 0.3, 0.07
    model.loss(users, items, ratings, reg=reg, reg_bias=reg_b).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad.fill_(123.0)  # replaced, not accumulated
    mf_backward(model, users, items, ratings, reg=reg, reg_bias=reg_b)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-12, atol=1e-12, msg=n)
    assert expected["user_factors"][3].abs().sum() == 0  # rows outside the batch: zero


def test_fit_sgd_manual_and_autograd_backward_agree(synthetic) -> None:
    syn, train, test = synthetic
    fits = {}
    for backward in ("manual", "autograd"):
        torch.manual_seed(0)
        model = MatrixFactorization(150, 120, 3, dtype=torch.float64)
        fit_sgd(model, train, epochs=3, batch_size=512, lr=0.02, reg=0.05, reg_bias=0.01,
                lr_decay=0.9, backward=backward)
        fits[backward] = model
    for (n, a), b in zip(fits["manual"].named_parameters(), fits["autograd"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=n)
    with pytest.raises(ValueError, match="fit_sgd: expected implicit=False and a dense "
                                         "optimizer for backward='manual', got implicit=True"):
        fit_sgd(MatrixFactorization(150, 120, 3, implicit=True), train, backward="manual")
    with pytest.raises(ValueError, match="mf_backward: expected a model without the implicit"):
        mf_backward(MatrixFactorization(2, 2, 1, implicit=True), torch.tensor([0]),
                    torch.tensor([0]), torch.ones(1))


def test_sparse_gradients_equal_dense() -> None:
    dense = MatrixFactorization(6, 8, 3, implicit=True)
    sparse = MatrixFactorization(6, 8, 3, implicit=True, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    for m in (dense, sparse):
        m.set_interactions(torch.tensor([0, 1, 1, 5]), torch.tensor([2, 3, 7, 7]))
        m.loss(torch.tensor([0, 1, 5, 1]), torch.tensor([1, 2, 3, 1]),
               torch.tensor([1.0, 2.0, 3.0, 4.0]), reg=0.1).backward()
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        assert q.grad.is_sparse == (q.dim() == 2), name
        torch.testing.assert_close(q.grad.to_dense(), p.grad, msg=name)


def test_state_dict_round_trip_keeps_interactions() -> None:
    model = MatrixFactorization(5, 6, 2, implicit=True)
    model.set_interactions(torch.tensor([0, 1, 1, 4]), torch.tensor([2, 3, 5, 0]))
    fresh = MatrixFactorization(5, 6, 2, implicit=True)
    fresh.load_state_dict(model.state_dict())
    u, i = torch.tensor([0, 1, 4, 3]), torch.tensor([1, 1, 2, 5])
    torch.testing.assert_close(fresh(u, i), model(u, i), rtol=0, atol=0)


def test_bad_input_messages() -> None:
    model = MatrixFactorization(5, 6, 2)
    with pytest.raises(IndexError, match=re.escape(
            "MatrixFactorization: expected user_ids in [0, 5), got 5")):
        model(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(TypeError, match="MatrixFactorization: expected item_ids of an integer "
                                        "dtype, got dtype torch.float32"):
        model(torch.tensor([0]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match=re.escape(
            "MatrixFactorization: expected user_ids and item_ids of one shape, got (2,) and (1,)")):
        model(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="MatrixFactorization: expected n_factors to be a "
                                         "positive int, got 0"):
        MatrixFactorization(5, 6, 0)
    with pytest.raises(ValueError, match="fit_als: expected a model with implicit=False"):
        fit_als(MatrixFactorization(5, 6, 2, implicit=True),
                Ratings(torch.tensor([0]), torch.tensor([0]), torch.ones(1), n_users=5,
                        n_items=6))
    with pytest.raises(ValueError, match=r"fit_sgd: expected ratings over 5 users and 6 items "
                                         r"\(the model's\), got 2 users and 6 items"):
        fit_sgd(model, Ratings(torch.tensor([1]), torch.tensor([0]), torch.ones(1), n_items=6))
    with pytest.raises(ValueError, match="fit_sgd: expected optimizer to be one of 'adam', "
                                         "'sparse_adam', 'adagrad', 'sgd', got 'lbfgs'"):
        fit_sgd(model, Ratings(torch.tensor([0]), torch.tensor([0]), torch.ones(1), n_users=5,
                               n_items=6), optimizer="lbfgs")


# -- recovery on synthetic low-rank ratings ----------------------------------------------
def test_sgd_recovers_low_rank_ratings(synthetic) -> None:
    syn, train, test = synthetic
    model = MatrixFactorization(150, 120, 3, rating_range=None)
    hist = fit_sgd(model, train, epochs=40, batch_size=1024, lr=0.03, reg=1e-3, val=test,
                   track_train=True)
    assert len(hist.val_rmse) == len(hist.train_rmse) == 40
    assert hist.val_rmse[-1] < 1.5 * NOISE, hist.val_rmse[-1]


@pytest.mark.slow
def test_svdpp_sparse_adam_recovers(synthetic) -> None:
    syn, train, test = synthetic
    model = MatrixFactorization(150, 120, 3, implicit=True, sparse=True)
    fit_sgd(model, train, epochs=60, batch_size=1024, lr=0.02, reg=1e-3,
            optimizer="sparse_adam")
    assert evaluate(model, test)["rmse"] < 1.6 * NOISE


def test_svdpp_sparse_adam_learns() -> None:
    syn = synthetic_ratings(40, 30, 2, density=0.5, noise=NOISE, seed=2)
    model = MatrixFactorization(40, 30, 2, implicit=True, sparse=True)
    before = evaluate(model, syn.data)["rmse"]
    hist = fit_sgd(model, syn.data, epochs=10, batch_size=128, lr=0.02, reg=1e-3,
                   optimizer="sparse_adam", track_train=True)
    assert hist.train_rmse[-1] < 0.5 * before


def test_als_recovers_low_rank_ratings(synthetic) -> None:
    syn, train, test = synthetic
    model = MatrixFactorization(150, 120, 3, dtype=torch.float64)
    fit_als(model, train, epochs=25, reg=1e-3)
    assert evaluate(model, test)["rmse"] < 1.3 * NOISE


def test_gibbs_recovers_low_rank_ratings(synthetic) -> None:
    syn, train, test = synthetic
    model, hist = fit_gibbs(train, 3, samples=10, burn_in=15, seed=0, val=test)
    assert model.n_factors == 30 and len(hist.val_rmse) == 10
    result = evaluate(model, test)["rmse"]
    assert abs(result - hist.val_rmse[-1]) < 1e-6   # the model predicts the running average
    assert result < 1.3 * NOISE


# -- ALS is the closed-form ridge solution -----------------------------------------------
def test_ridge_rows_is_closed_form() -> None:
    g = torch.Generator().manual_seed(1)
    n_rows, n_cols, k, n = 7, 9, 3, 40
    rows = torch.randint(0, n_rows - 1, (n,), generator=g)   # last row has no rating
    cols = torch.randint(0, n_cols, (n,), generator=g)
    t = torch.randn(n, generator=g, dtype=torch.float64)
    feats = torch.randn(n_cols, k, generator=g, dtype=torch.float64)
    reg, reg_b = 0.3, 0.05
    for weighted in (True, False):
        x, b = ridge_rows(rows, cols, t, feats, n_rows, reg, reg_bias=reg_b, weighted=weighted)
        for r in range(n_rows - 1):
            sel = rows == r
            z = np.concatenate([feats[cols[sel]].numpy(), np.ones((int(sel.sum()), 1))], 1)
            s = int(sel.sum()) if weighted else 1
            d = np.diag([reg] * k + [reg_b]) * s
            ref = np.linalg.solve(z.T @ z + d, z.T @ t[sel].numpy())
            np.testing.assert_allclose(x[r].numpy(), ref[:k], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b[r].item(), ref[k], rtol=1e-9, atol=1e-12)
        assert x[-1].abs().sum() == 0 and b[-1] == 0


def test_fit_als_item_side_is_ridge_optimal_given_users(synthetic) -> None:
    syn, train, _ = synthetic
    model = MatrixFactorization(150, 120, 4, dtype=torch.float64)
    reg = 0.05
    fit_als(model, train, epochs=3, reg=reg)
    # the last half-step solved the items with the users fixed: redo it in closed form
    t = train.ratings.double() - model.global_mean - model.user_bias[train.users]
    q, b_i = ridge_rows(train.items, train.users, t.detach(), model.user_factors.detach(), 120,
                        reg)
    torch.testing.assert_close(model.item_factors.detach(), q)
    torch.testing.assert_close(model.item_bias.detach(), b_i)


def test_als_and_sgd_minimise_the_same_objective(synthetic) -> None:
    syn, train, _ = synthetic
    reg = 0.05
    als = MatrixFactorization(150, 120, 3, dtype=torch.float64)
    fit_als(als, train, epochs=30, reg=reg)
    # the items were solved last: the gradient of the summed loss on their side is zero;
    # the users' side is near its fixed point
    als.zero_grad()
    als.loss(train.users, train.items, train.ratings.double(), reg=reg,
             reduction="sum").backward()
    assert als.item_factors.grad.abs().max() < 1e-9
    assert als.item_bias.grad.abs().max() < 1e-9
    assert als.user_factors.grad.abs().max() < 2e-2


# -- unseen users/items, recommendations, similar items ----------------------------------
def test_unseen_user_and_item_get_the_baseline() -> None:
    syn = synthetic_ratings(40, 30, 2, density=0.5, seed=1)
    keep = (syn.data.users != 7) & (syn.data.items != 3)
    train = syn.data.subset(keep)
    for fit in ("sgd", "als"):
        model = MatrixFactorization(40, 30, 2, rating_range=(0, 10))
        if fit == "sgd":
            fit_sgd(model, train, epochs=3, batch_size=128)
        else:
            fit_als(model, train, epochs=3)
        mu = model.global_mean
        pred = model.predict(torch.tensor([7, 7, 5]), torch.tensor([9, 3, 3]))
        expected = torch.stack([mu + model.item_bias[9], mu, mu + model.user_bias[5]])
        torch.testing.assert_close(pred, expected.detach())


def test_recommend_excludes_seen_and_ranks_by_score() -> None:
    model = MatrixFactorization(6, 10, 3)
    model.set_interactions(torch.tensor([0, 0, 2]), torch.tensor([1, 4, 9]))
    users = torch.tensor([0, 2, 5])
    items, scores = model.recommend(users, k=4)
    assert items.shape == scores.shape == (3, 4)
    full = model.score_all(users)
    for row, u in enumerate(users.tolist()):
        seen = {0: {1, 4}, 2: {9}, 5: set()}[u]
        assert not seen & set(items[row].tolist())
        allowed = [j for j in range(10) if j not in seen]
        best = sorted(allowed, key=lambda j: -float(full[row, j]))[:4]
        assert items[row].tolist() == best
    items, _ = model.recommend(users, k=4, exclude_seen=False)
    assert items[0].tolist() == full[0].topk(4).indices.tolist()
    with pytest.raises(ValueError, match="expected k <= n_items"):
        model.recommend(users, k=11)


def test_similar_items_is_cosine() -> None:
    model = MatrixFactorization(3, 8, 4)
    items, sims = model.similar_items(torch.tensor([2, 5]), k=3)
    q = model.item_factors.detach()
    for row, i in enumerate([2, 5]):
        cos = torch.nn.functional.cosine_similarity(q[i].unsqueeze(0), q, dim=1)
        cos[i] = -2
        assert items[row].tolist() == cos.topk(3).indices.tolist()
        torch.testing.assert_close(sims[row], cos.topk(3).values)


# -- metrics -----------------------------------------------------------------------------
def test_ranking_metric_values() -> None:
    rec = torch.tensor([[3, 0, 1], [2, 1, 0]])
    rel = torch.tensor([[True, False, False, True], [False, False, False, True]])
    torch.testing.assert_close(precision_at_k(rec, rel),
                               torch.tensor([2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(recall_at_k(rec, rel), torch.tensor([1.0, 0.0],
                                                                    dtype=torch.float64))
    torch.testing.assert_close(ndcg_at_k(rec, rel), torch.tensor([1.0, 0.0],
                                                                  dtype=torch.float64))
    # hits at ranks 2 and 3 of 2 relevant: (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    ndcg = ndcg_at_k(torch.tensor([[1, 0, 3]]), torch.tensor([[True, False, False, True]]))
    expected = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert abs(float(ndcg) - expected) < 1e-12
    assert abs(float(rmse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])))
               - 0.5 ** 0.5) < 1e-6


def test_ranking_metrics_of_an_oracle_model() -> None:
    # a model whose item bias alone ranks the relevant test items first
    n_users, n_items = 4, 12
    model = MatrixFactorization(n_users, n_items, 2, init_std=0.0)
    users = torch.tensor([0, 0, 1, 2, 3, 3])
    items = torch.tensor([5, 6, 5, 7, 1, 2])
    test = Ratings(users, items, torch.tensor([5.0, 4.0, 5.0, 2.0, 5.0, 1.0]), n_users=n_users,
                   n_items=n_items)
    with torch.no_grad():
        model.item_bias.copy_(torch.tensor([0, 3, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0.0]))
    model.set_interactions(torch.tensor([1]), torch.tensor([0]))
    out = ranking_metrics(model, test, k=3)
    # users 0, 1, 3 have relevant items (rating >= 4); user 2 does not count
    assert out["users"] == 3
    assert abs(out["recall@3"] - 1.0) < 1e-12
    assert abs(out["precision@3"] - (2 / 3 + 1 / 3 + 1 / 3) / 3) < 1e-12
    assert 0 < out["ndcg@3"] <= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
def test_cuda_fit_and_recommend() -> None:
    syn = synthetic_ratings(50, 40, 2, density=0.5, seed=0)
    data = syn.data.to("cuda")
    model = MatrixFactorization(50, 40, 2, device="cuda")
    fit_sgd(model, data, epochs=5, batch_size=256)
    als = MatrixFactorization(50, 40, 2, device="cuda")
    fit_als(als, data, epochs=3)
    items, _ = als.recommend(torch.arange(5, device="cuda"), k=3)
    assert items.device.type == "cuda"
    gibbs, _ = fit_gibbs(data, 2, samples=3, burn_in=1, device="cuda")
    assert evaluate(gibbs, data)["rmse"] < 1.0


# -- no silent NaN (issue 13): non-finite ratings refused, divergence raises ---------------
def _state(model: MatrixFactorization) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _poisoned() -> Ratings:
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    data.ratings[7] = float("nan")  # changed in place after the checks of Ratings
    return data


@pytest.mark.parametrize("fit", ["sgd", "als", "gibbs"])
def test_fits_refuse_non_finite_ratings(fit: str) -> None:
    data = _poisoned()
    model = MatrixFactorization(30, 20, 2)
    before = _state(model)
    with pytest.raises(ValueError, match=f"fit_{fit}: expected a finite ratings tensor, got 1 "
                                         "NaN or infinite entries"):
        if fit == "sgd":
            fit_sgd(model, data, epochs=1)
        elif fit == "als":
            fit_als(model, data, epochs=1)
        else:
            fit_gibbs(data, 2, samples=1, burn_in=0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("implicit", [False, True])   # hand-written and autograd backward
def test_fit_sgd_divergence_raises_and_leaves_the_model(implicit: bool) -> None:
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    model = MatrixFactorization(30, 20, 3, implicit=implicit)
    before = _state(model)
    with pytest.raises(lamods.ConvergenceError, match=re.escape(
            "fit_sgd: expected a finite training loss, got nan at epoch 1 (lr=10000, "
            "optimizer='sgd'); lower lr (or raise reg); the model is left as it was")):
        fit_sgd(model, data, epochs=3, optimizer="sgd", lr=1e4, batch_size=16)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert model.rating_range is None


def test_fit_sgd_reports_the_epoch_that_diverged() -> None:
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    model = MatrixFactorization(30, 20, 3)
    # lr grows 1e3-fold per epoch: fine at first, divergent later
    with pytest.raises(lamods.ConvergenceError, match=r"got (nan|inf) at epoch [2-6] \(lr="):
        fit_sgd(model, data, epochs=6, optimizer="sgd", lr=1e-3, lr_decay=1e3, batch_size=16)


def test_fit_als_singular_and_overflow_raise() -> None:
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    model = MatrixFactorization(30, 20, 3, init_std=0.0)   # zero item factors, no ridge
    before = _state(model)
    with pytest.raises(lamods.SingularSystemError, match=re.escape(
            "fit_als: expected positive-definite ridge systems, got 30 singular ones at "
            "epoch 1 (reg=0.0, reg_bias=0.0); use reg > 0")):
        fit_als(model, data, epochs=2, reg=0.0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    huge = Ratings(data.users, data.items, data.ratings * 1e30)   # float32 Gram overflows
    with pytest.raises(lamods.ConvergenceError, match=re.escape(
            "fit_als: expected finite factors, got 60 NaN or infinite entries at epoch 1 "
            "(reg=0.1, reg_bias=0.1); the ratings overflow the dtype")):
        fit_als(MatrixFactorization(30, 20, 2), huge, epochs=2, reg=0.1)
    with pytest.raises(lamods.ConvergenceError, match=re.escape(
            "fit_gibbs: expected finite factors, got 60 NaN or infinite entries at sweep 1 "
            "(alpha=1); the ratings overflow the dtype")):
        fit_gibbs(huge, 2, samples=2, burn_in=0, dtype=torch.float32)
    with pytest.raises(lamods.SingularSystemError, match="ridge_rows: expected positive-"
                                                         "definite ridge systems, got 2 singular"):
        ridge_rows(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.ones(2),
                   torch.zeros(2, 2), 2, 0.0)


# -- the row solver, the Gibbs sampler's draws -------------------------------------------
@pytest.mark.parametrize("path", ["outer", "padded"])
@pytest.mark.parametrize("weighted", [False, True])
def test_row_systems_match_dense_sums(path: str, weighted: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lamods.recsys import _rows

    if path == "padded":
        monkeypatch.setattr(_rows, "BUDGET", 20)   # forces small padded chunks
    g = torch.Generator().manual_seed(3)
    n_rows, n_cols, d, n = 9, 7, 3, 50
    rows = torch.randint(0, n_rows - 1, (n,), generator=g)   # the last row has no entry
    cols = torch.randint(0, n_cols, (n,), generator=g)
    t = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.rand(n, generator=g, dtype=torch.float64) if weighted else None
    z = torch.randn(n_cols, d, generator=g, dtype=torch.float64)
    seen = {}
    for r, gram, rhs in _rows.RowIndex(rows, cols, n_rows, n_cols).systems(z, t, w):
        for j, row in enumerate(r.tolist()):
            seen[row] = (gram[j], rhs[j])
    assert sorted(seen) == sorted(set(rows.tolist()))
    for row, (gram, rhs) in seen.items():
        sel = rows == row
        ww = w[sel] if weighted else torch.ones(int(sel.sum()), dtype=torch.float64)
        zz = z[cols[sel]]
        torch.testing.assert_close(gram, (zz * ww.unsqueeze(1)).T @ zz)
        torch.testing.assert_close(rhs, zz.T @ t[sel])


def test_gamma_and_wishart_draws_match_scipy() -> None:
    from scipy import stats

    from lamods.recsys.bayes import _gamma, _wishart

    g = torch.Generator().manual_seed(0)
    for shape in (0.4, 1.0, 7.5, 3000.0):
        x = _gamma(torch.full((4000,), shape, dtype=torch.float64), 2.0, g).numpy()
        assert stats.kstest(x, stats.gamma(shape, scale=0.5).cdf).pvalue > 1e-3, shape
    scale = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    draws = torch.stack([_wishart(6.0, scale, g) for _ in range(2000)])
    # E[W] = df S; Var[W_jl] = df (S_jl^2 + S_jj S_ll)
    torch.testing.assert_close(draws.mean(0), 6.0 * scale, rtol=0.05, atol=0.05)
    var = 6.0 * (scale ** 2 + torch.outer(scale.diagonal(), scale.diagonal()))
    torch.testing.assert_close(draws.var(0), var, rtol=0.15, atol=0.1)


@pytest.mark.parametrize("dual", [True, False])
def test_side_features_draw_is_the_matrix_normal(dual: bool) -> None:
    """beta | X ~ MN(K^-1 F^T X, K^-1, C C^T): mean and row covariance against dense algebra."""
    from lamods.recsys._rows import RowIndex
    from lamods.recsys.bayes import _SideFeatures

    g = torch.Generator().manual_seed(1)
    n, m = (5, 8) if dual else (8, 5)
    rows = torch.arange(n).repeat_interleave(3)
    cols = torch.randint(0, m, (3 * n,), generator=g)
    by_row, by_col = RowIndex(rows, cols, n, m), RowIndex(cols, rows, m, n)
    side = _SideFeatures(by_row, by_col, rows, 0.7, torch.float64)
    assert side.dual == dual
    F = torch.zeros(n, m, dtype=torch.float64)
    F.index_put_((rows, cols), torch.full((3 * n,), 3 ** -0.5, dtype=torch.float64),
                 accumulate=True)
    torch.testing.assert_close(side.F.to_dense(), F)
    K = F.T @ F + 0.7 * torch.eye(m, dtype=torch.float64)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    cov_chol = torch.tensor([[1.0, 0.0], [0.5, 0.2]], dtype=torch.float64)
    draws = torch.stack([side.draw(X, cov_chol, g) for _ in range(4000)])
    mean = torch.linalg.solve(K, F.T @ X)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.05, rtol=0)
    # column 0 of beta: row covariance K^-1 times (C C^T)_00 = 1
    emp = torch.cov(draws[:, :, 0].T)
    torch.testing.assert_close(emp, torch.linalg.inv(K), atol=0.05, rtol=0)


def test_gibbs_with_implicit_side_features_recovers_and_is_seeded(synthetic) -> None:
    syn, train, test = synthetic
    model, hist = fit_gibbs(train, 3, samples=10, burn_in=10, implicit=True, seed=0, val=test)
    again, _ = fit_gibbs(train, 3, samples=10, burn_in=10, implicit=True, seed=0)
    torch.testing.assert_close(model.user_factors, again.user_factors, rtol=0, atol=0)
    assert evaluate(model, test)["rmse"] < 1.3 * NOISE
    assert abs(evaluate(model, test)["rmse"] - hist.val_rmse[-1]) < 1e-6


# -- blocked top-k (issue 16): no users x items matrix, same answer as the dense one -----
@pytest.mark.parametrize("blocks", [(1, 1), (2, 3), (5, 64), (1024, 1 << 16)])
def test_topk_scores_match_a_dense_reference(blocks) -> None:
    from lamods.recsys.topk import topk_scores

    g = torch.Generator().manual_seed(0)
    n_q, n_items, d, k = 7, 23, 4, 5
    queries = torch.randn(n_q, d, generator=g, dtype=torch.float64)
    items = torch.randn(n_items, d, generator=g, dtype=torch.float64)
    offset = torch.randn(n_items, generator=g, dtype=torch.float64)
    counts = torch.tensor([0, 3, 1, 19, 2, 0, 5])   # query 3 has only 4 allowed items
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    excl = torch.cat([torch.randperm(n_items, generator=g)[:c] for c in counts.tolist()])
    idx, val = topk_scores(queries, items, k, item_offset=offset, exclude_indptr=indptr,
                           exclude_items=excl, query_block=blocks[0], item_block=blocks[1])
    dense = queries @ items.T + offset
    for b in range(n_q):
        dense[b, excl[indptr[b]:indptr[b + 1]]] = float("-inf")
    ref = dense.topk(k, dim=1)
    torch.testing.assert_close(val, ref.values)
    finite = torch.isfinite(ref.values)
    assert torch.equal(idx[finite], ref.indices[finite])
    assert (~finite).sum() == 1 and not torch.isfinite(val[3, 4])   # 4 allowed, k = 5


def test_recommend_and_similar_items_blocked_equal_unblocked() -> None:
    model = MatrixFactorization(9, 40, 3, implicit=True, dtype=torch.float64)
    with torch.no_grad():
        model.user_bias.normal_()
        model.item_bias.normal_()
        model.global_mean.fill_(3.0)
    g = torch.Generator().manual_seed(2)
    model.set_interactions(torch.randint(0, 9, (60,), generator=g),
                           torch.randint(0, 40, (60,), generator=g))
    users = torch.arange(9)
    full = model.score_all(users)
    full[model._bags(users)[1], model._bags(users)[0]] = float("-inf")
    for block in (3, 7, 40):
        items, scores = model.recommend(users, k=6, item_block=block)
        ref = full.topk(6, dim=1)
        assert torch.equal(items, ref.indices)
        torch.testing.assert_close(scores, ref.values)
        sim_items, sims = model.similar_items(torch.tensor([4, 0, 39]), k=5, item_block=block)
        assert not (sim_items == torch.tensor([[4], [0], [39]])).any()
        unit = torch.nn.functional.normalize(model.item_factors.detach(), dim=1)
        cos = unit[[4, 0, 39]] @ unit.T
        cos[[0, 1, 2], [4, 0, 39]] = float("-inf")
        torch.testing.assert_close(sims, cos.topk(5, dim=1).values)


def test_recommend_over_120k_items_works_in_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from lamods.recsys import topk

    widths = []
    merge = topk._merge

    def spy(vals, idx, tile, offset, k):
        widths.append(tuple(tile.shape))
        return merge(vals, idx, tile, offset, k)

    monkeypatch.setattr(topk, "_merge", spy)
    n_items = 120_000
    model = MatrixFactorization(6, n_items, 8)
    g = torch.Generator().manual_seed(0)
    model.set_interactions(torch.randint(0, 6, (500,), generator=g),
                           torch.randint(0, n_items, (500,), generator=g))
    users = torch.arange(6)
    items, scores = model.recommend(users, k=10, item_block=16384)
    assert max(w[1] for w in widths) <= 16384 and len(widths) == 8   # 8 tiles of <= 16384
    full = model.score_all(users)
    full[model._bags(users)[1], model._bags(users)[0]] = float("-inf")
    ref = full.topk(10, dim=1)
    assert torch.equal(items, ref.indices)
    torch.testing.assert_close(scores, ref.values)


def test_gibbs_implicit_refuses_a_side_too_large_for_its_dense_gram(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lamods.recsys import bayes

    monkeypatch.setattr(bayes, "MAX_SIDE_DIM", 10)
    data = synthetic_ratings(30, 20, 2, density=0.5, seed=0).data
    with pytest.raises(ValueError, match=re.escape(
            "fit_gibbs: expected min(n_users, n_items) <= 10 with implicit=True (a dense "
            "Gram of that size is factorised), got 20; use implicit=False")):
        fit_gibbs(data, 2, samples=1, burn_in=0, implicit=True)
    with pytest.raises(ValueError, match="fit_gibbs: expected implicit_reg > 0, got 0.0"):
        fit_gibbs(data, 2, samples=1, implicit_reg=0.0)


# -- the Gibbs chain one sweep at a time (issue 16): checkpointable, same draws ------------
def test_gibbs_sampler_continues_exactly_from_its_state(synthetic) -> None:
    from lamods.recsys import GibbsSampler

    _, train, _ = synthetic
    whole = GibbsSampler(train, 3, implicit=True, seed=4)
    for _ in range(5):
        x_u, x_i = whole.sweep()
    first = GibbsSampler(train, 3, implicit=True, seed=4)
    for _ in range(2):
        first.sweep()
    state = first.state_dict()
    first.sweep()  # the saved state is a copy: later sweeps do not change it
    resumed = GibbsSampler(train, 3, implicit=True, seed=99)
    resumed.load_state_dict(state)
    assert resumed.sweeps == 2
    for _ in range(3):
        y_u, y_i = resumed.sweep()
    assert torch.equal(x_u, y_u) and torch.equal(x_i, y_i)
    assert resumed.alpha == whole.alpha and resumed.sweeps == 5


def test_gibbs_sampler_is_fit_gibbs_and_checks_its_state(synthetic) -> None:
    from lamods.recsys import GibbsSampler

    _, train, test = synthetic
    chain = GibbsSampler(train, 2, seed=1)
    draws = [tuple(x.clone() for x in chain.sweep()) for _ in range(4)]
    model, _ = fit_gibbs(train, 2, samples=2, burn_in=2, seed=1)
    # posterior mean of draws 3 and 4, by hand
    mu = train.global_mean
    u, i = test.users, test.items
    by_hand = sum(mu + x_u[u, 2] + x_i[i, 2] + (x_u[u, :2] * x_i[i, :2]).sum(1)
                  for x_u, x_i in draws[2:]) / 2
    lo, hi = train.rating_range
    by_hand = by_hand.clamp(lo, hi).to(model.user_factors.dtype)
    torch.testing.assert_close(model.predict(u, i), by_hand)
    state = chain.state_dict()
    with pytest.raises(ValueError, match=re.escape(
            "GibbsSampler.load_state_dict: expected the keys ['alpha', 'generator', 'lam_i', "
            "'lam_u', 'mean_i', 'mean_u', 'sweeps', 'x_i', 'x_u'], got ['alpha']")):
        chain.load_state_dict({"alpha": state["alpha"]})
    with pytest.raises(ValueError, match=re.escape(
            f"GibbsSampler.load_state_dict: expected x_u of shape ({train.n_users}, 3), "
            f"got ({train.n_users}, 4)")):
        chain.load_state_dict({**state, "x_u": torch.zeros(train.n_users, 4)})
    with pytest.raises(TypeError, match="GibbsSampler: expected train as a Ratings, got list"):
        GibbsSampler([], 2)


@pytest.mark.parametrize("budget", [1 << 24, 40])
def test_gibbs_side_gram_is_the_dense_gram(monkeypatch: pytest.MonkeyPatch, budget) -> None:
    """Note [sparse Gram]: M^T M by sparse M^T times dense column blocks, any block size."""
    from lamods.recsys import bayes
    from lamods.recsys._rows import RowIndex

    monkeypatch.setattr(bayes, "BUDGET", budget)
    g = torch.Generator().manual_seed(0)
    pairs = torch.randperm(23 * 17, generator=g)[:150]
    rows, cols = pairs // 17, pairs % 17
    values = torch.randn(150, generator=g, dtype=torch.float64)
    index, transpose = RowIndex(rows, cols, 23, 17), RowIndex(cols, rows, 17, 23)
    dense = torch.zeros(23, 17, dtype=torch.float64)
    dense[rows, cols] = values
    torch.testing.assert_close(bayes._gram_of_rows(index, transpose, values), dense.T @ dense)
    torch.testing.assert_close(bayes._gram_of_rows(transpose, index, values), dense @ dense.T)


def test_gibbs_draws_do_not_depend_on_how_the_grams_are_summed(
        monkeypatch: pytest.MonkeyPatch, synthetic) -> None:
    """Same seed, same draws to rounding, whether the side Gram is the sparse product or the
    dense one (the code before Note [sparse Gram])."""
    from lamods.recsys import bayes

    _, train, test = synthetic
    fast, _ = fit_gibbs(train, 3, samples=4, burn_in=2, implicit=True, seed=2)

    def dense_gram(index, transpose, values):
        m = index.matrix(values.double()).to_dense()
        return m.T @ m

    monkeypatch.setattr(bayes, "_gram_of_rows", dense_gram)
    slow, _ = fit_gibbs(train, 3, samples=4, burn_in=2, implicit=True, seed=2)
    torch.testing.assert_close(fast.predict(test.users, test.items),
                               slow.predict(test.users, test.items), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_row_systems_are_the_per_row_normal_equations(weighted) -> None:
    """Note [row Gram matrices]: the packed upper triangle of the outer path gives the full,
    symmetric G_r = sum_j w_rj z_j z_j^T and b_r = sum_j t_rj z_j of a loop over the rows."""
    from lamods.recsys._rows import RowIndex

    g = torch.Generator().manual_seed(1)
    pairs = torch.randperm(30 * 20, generator=g)[:200]
    rows, cols = pairs // 20, pairs % 20
    z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    t = torch.randn(200, generator=g, dtype=torch.float64)
    w = torch.rand(200, generator=g, dtype=torch.float64) if weighted else None
    got = {}
    for r, gram, rhs in RowIndex(rows, cols, 30, 20).systems(z, t, w):
        for j, row in enumerate(r.tolist()):
            got[row] = (gram[j], rhs[j])
    assert sorted(got) == sorted(set(rows.tolist()))
    for row, (gram, rhs) in got.items():
        mine = rows == row
        zr = z[cols[mine]]
        wr = w[mine] if weighted else torch.ones(int(mine.sum()), dtype=torch.float64)
        torch.testing.assert_close(gram, (zr * wr[:, None]).T @ zr)
        torch.testing.assert_close(rhs, zr.T @ t[mine])
