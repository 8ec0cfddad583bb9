"""Implicit feedback (weighted ALS, BPR), leave-last-out ranking, synthetic generators."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import lamods
from lamods.recsys import (
    MatrixFactorization,
    Ratings,
    bpr_loss,
    fit_bpr,
    fit_wals,
    leave_last_out,
    ndcg_at_k,
    planted_ratings,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    synthetic_interactions,
    wals_loss,
)
from lamods.recsys.implicit import bpr_backward


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def interactions():
    data = synthetic_interactions(150, 120, 2500, 4, seed=0)
    return data, *leave_last_out(data)


def _small(seed: int = 0, n_users: int = 6, n_items: int = 9, n: int = 20):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(n_users * n_items, generator=g)[:n]
    users, items = key // n_items, key % n_items
    strength = torch.randint(1, 4, (n,), generator=g).double()
    return Ratings(users, items, strength, n_users=n_users, n_items=n_items)


def _hu_reference(Y: torch.Tensor, data: Ratings, reg: float, alpha: float, n_rows: int,
                  by_user: bool, reg_exponent: float = 0.0) -> torch.Tensor:
    """x_r = (Y^T C_r Y + lambda_r I)^-1 Y^T C_r p_r over ALL columns, dense (Hu et al. 2008),
    lambda_r = reg * n_r^reg_exponent (n_r: the row's interactions; ALS-WR for exponent 1)."""
    rows, cols = (data.users, data.items) if by_user else (data.items, data.users)
    n_cols, k = Y.shape
    out = torch.zeros(n_rows, k, dtype=torch.float64)
    for r in range(n_rows):
        c = torch.ones(n_cols, dtype=torch.float64)
        pref = torch.zeros(n_cols, dtype=torch.float64)
        sel = rows == r
        c[cols[sel]] = 1 + alpha * data.ratings[sel]
        pref[cols[sel]] = 1.0
        if not sel.any():
            continue
        lam = reg * float(sel.sum()) ** reg_exponent
        A = Y.T @ (c.unsqueeze(1) * Y) + lam * torch.eye(k, dtype=torch.float64)
        out[r] = torch.linalg.solve(A, Y.T @ (c * pref))
    return out


@pytest.mark.parametrize("solver, steps", [("cholesky", 1), ("cg", 4)])
def test_wals_steps_solve_hu_koren_volinsky(solver: str, steps: int) -> None:
    data = _small()
    reg, alpha = 0.3, 2.0
    model = MatrixFactorization(6, 9, 4, biased=False, dtype=torch.float64)
    Y0 = model.item_factors.detach().clone()
    fit_wals(model, data, epochs=1, reg=reg, alpha=alpha, solver=solver, cg_steps=steps)
    X = _hu_reference(Y0, data, reg, alpha, 6, by_user=True)
    Y = _hu_reference(X, data, reg, alpha, 9, by_user=False)
    # CG with k = 4 steps from a warm start is exact in exact arithmetic for 4 unknowns
    torch.testing.assert_close(model.user_factors.detach(), X, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model.item_factors.detach(), Y, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("solver, alpha, reg_exponent", [
    ("cholesky", 2.0, 1.0), ("cg", 2.0, 0.5), ("cg", 0.0, 1.0), ("cholesky", 0.0, 0.0)])
def test_wals_frequency_scaled_reg_and_equal_confidences_solve_exactly(
        solver: str, alpha: float, reg_exponent: float) -> None:
    """Each half-step is the exact weighted ridge solution per row with the other side fixed:
    lambda_r = reg * n_r^e (Note [frequency-scaled regularisation]); alpha = 0 goes through
    one eigendecomposition (Note [equal confidences]), exact whatever the solver."""
    data = _small(2, n=30)
    reg = 0.3
    model = MatrixFactorization(6, 9, 4, biased=False, dtype=torch.float64)
    Y0 = model.item_factors.detach().clone()
    fit_wals(model, data, epochs=1, reg=reg, alpha=alpha, reg_exponent=reg_exponent,
             solver=solver, cg_steps=4)
    X = _hu_reference(Y0, data, reg, alpha, 6, True, reg_exponent)
    Y = _hu_reference(X, data, reg, alpha, 9, False, reg_exponent)
    torch.testing.assert_close(model.user_factors.detach(), X, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model.item_factors.detach(), Y, rtol=1e-7, atol=1e-9)
    # the objective with lambda_r, densely; exact steps never increase it
    c = torch.ones(6, 9, dtype=torch.float64)
    p = torch.zeros(6, 9, dtype=torch.float64)
    c[data.users, data.items] = 1 + alpha * data.ratings
    p[data.users, data.items] = 1
    lam_u = reg * torch.bincount(data.users, minlength=6).double() ** reg_exponent
    lam_i = reg * torch.bincount(data.items, minlength=9).double() ** reg_exponent
    dense = (c * (p - X @ Y.T) ** 2).sum() + (lam_u * X.pow(2).sum(1)).sum() + (
        lam_i * Y.pow(2).sum(1)).sum()
    loss = wals_loss(model, data, reg=reg, alpha=alpha, reg_exponent=reg_exponent)
    assert abs(loss - float(dense)) < 1e-9 * float(dense)
    if solver == "cholesky" or alpha == 0.0:
        hist = fit_wals(model, data, epochs=3, reg=reg, alpha=alpha,
                        reg_exponent=reg_exponent, solver=solver, track_loss=True)
        assert hist.train_rmse[0] <= loss + 1e-9
        assert all(b <= a + 1e-9 for a, b in zip(hist.train_rmse, hist.train_rmse[1:]))


def test_wals_new_options_bad_input() -> None:
    data = _small()
    model = MatrixFactorization(6, 9, 4, biased=False, dtype=torch.float64)
    for bad in (-0.5, math.nan, math.inf, "1", None):
        with pytest.raises(ValueError, match=re.escape(
                f"fit_wals: expected reg_exponent to be a float >= 0, got {bad!r}")):
            fit_wals(model, data, reg_exponent=bad)
        with pytest.raises(ValueError, match=re.escape(
                f"wals_loss: expected reg_exponent to be a float >= 0, got {bad!r}")):
            wals_loss(model, data, reg=0.1, alpha=1.0, reg_exponent=bad)
    # alpha = 0 with reg = 0 and fewer items than factors: Y^T Y is singular
    wide = MatrixFactorization(6, 3, 5, biased=False, dtype=torch.float64)
    few = Ratings(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]),
                  torch.ones(4, dtype=torch.float64), n_users=6, n_items=3)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(lamods.SingularSystemError, match=re.escape(
            "fit_wals: expected positive-definite ridge systems, got 4 singular ones at "
            "epoch 1 (reg=0.0, alpha=0.0); use reg > 0")):
        fit_wals(wide, few, reg=0.0, alpha=0.0)
    for k, v in wide.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_wals_loss_is_the_objective_over_all_pairs() -> None:
    data = _small(1)
    model = MatrixFactorization(6, 9, 3, biased=False, dtype=torch.float64)
    reg, alpha = 0.2, 1.5
    X, Y = model.user_factors.detach(), model.item_factors.detach()
    c = torch.ones(6, 9, dtype=torch.float64)
    p = torch.zeros(6, 9, dtype=torch.float64)
    c[data.users, data.items] = 1 + alpha * data.ratings
    p[data.users, data.items] = 1
    dense = (c * (p - X @ Y.T) ** 2).sum() + reg * (X.pow(2).sum() + Y.pow(2).sum())
    assert abs(wals_loss(model, data, reg=reg, alpha=alpha) - float(dense)) < 1e-9
    hist = fit_wals(model, data, epochs=4, reg=reg, alpha=alpha, solver="cholesky",
                    track_loss=True)
    # exact ALS never increases the objective
    assert all(b <= a + 1e-9 for a, b in zip(hist.train_rmse, hist.train_rmse[1:]))


@pytest.mark.parametrize("biased", [False, True])
def test_bpr_hand_written_gradient_equals_autograd(biased: bool) -> None:
    torch.manual_seed(0)
    model = MatrixFactorization(5, 8, 3, biased=biased, dtype=torch.float64)
    if biased:
        with torch.no_grad():
            model.item_bias.normal_()
    users = torch.tensor([0, 4, 4, 1, 0])
    pos = torch.tensor([1, 2, 2, 7, 3])
    neg = torch.tensor([6, 0, 1, 2, 1])
    reg = 0.07
    (bpr_loss(model, users, pos, neg, reg=reg) * 5).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    total = bpr_backward(model, users, pos, neg, reg=reg)
    for n, g in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-12,
                                   atol=1e-12, msg=n)
    with torch.no_grad():   # the returned value: the summed data term -ln sigma(d)
        d = (model.user_factors[users] * (model.item_factors[pos] - model.item_factors[neg])
             ).sum(1)
        if biased:
            d += model.item_bias[pos] - model.item_bias[neg]
    assert abs(float(total) - float(-torch.nn.functional.logsigmoid(d).sum())) < 1e-10


def _popularity_recall(train: Ratings, test: Ratings) -> float:
    model = MatrixFactorization(train.n_users, train.n_items, 1, init_std=0.0)
    with torch.no_grad():
        model.item_bias.copy_(torch.bincount(train.items, minlength=train.n_items).double())
    model.set_interactions(train.users, train.items)
    return ranking_metrics(model, test, k=10, threshold=None)["recall@10"]


def test_wals_and_bpr_beat_popularity_on_planted_taste(interactions) -> None:
    data, train, test = interactions
    base = _popularity_recall(train, test)
    wals = MatrixFactorization(150, 120, 8, biased=False, init_std=0.01)
    fit_wals(wals, train, epochs=10, reg=0.1, alpha=5.0)
    bpr = MatrixFactorization(150, 120, 8, init_std=0.01)
    fit_bpr(bpr, train, epochs=40, batch_size=256, lr=0.02, reg=1e-3)
    for model in (wals, bpr):
        out = ranking_metrics(model, test, k=10, threshold=None)
        assert out["users"] == 150
        assert out["recall@10"] > base + 0.1, (out, base)
        # never recommends a training item (a user with < 10 unseen items gets -inf tails)
        items, scores = model.recommend(torch.arange(150), k=10)
        seen = set(zip(train.users.tolist(), train.items.tolist()))
        listed = [(u, i, bool(torch.isfinite(sc)))
                  for u in range(150) for i, sc in zip(items[u].tolist(), scores[u])]
        assert all(((u, i) in seen) != finite for u, i, finite in listed)


def test_ranking_metrics_match_the_per_user_reference(interactions) -> None:
    data, train, test = interactions
    model = MatrixFactorization(150, 120, 4, init_std=0.3)
    model.set_interactions(train.users, train.items)
    g = torch.Generator().manual_seed(0)
    extra = torch.randint(0, 150, (200,), generator=g), torch.randint(0, 120, (200,),
                                                                      generator=g)
    test = Ratings(torch.cat([test.users, extra[0]]), torch.cat([test.items, extra[1]]),
                   torch.randint(1, 6, (len(test) + 200,), generator=g).float(),
                   n_users=150, n_items=120)
    for threshold in (None, 4.0):
        out = ranking_metrics(model, test, k=7, threshold=threshold, batch_size=40)
        keep = test.ratings >= threshold if threshold else torch.ones(len(test), dtype=bool)
        rel = torch.zeros(150, 120, dtype=torch.bool)
        rel[test.users[keep], test.items[keep]] = True
        users = torch.nonzero(rel.any(1)).squeeze(1)
        rec, _ = model.recommend(users, 7)
        assert out["users"] == len(users)
        for key, fn in (("precision@7", precision_at_k), ("recall@7", recall_at_k),
                        ("ndcg@7", ndcg_at_k)):
            assert abs(out[key] - float(fn(rec, rel[users]).mean())) < 1e-12, key


def test_implicit_bad_input_and_divergence(interactions) -> None:
    data, train, test = interactions
    with pytest.raises(ValueError, match=re.escape(
            "fit_wals: expected a MatrixFactorization with implicit=False and biased=False, "
            "got implicit=False, biased=True")):
        fit_wals(MatrixFactorization(150, 120, 4), train)
    zero = Ratings(train.users, train.items, torch.zeros(len(train)), n_users=150, n_items=120)
    with pytest.raises(ValueError, match=re.escape(
            "fit_bpr: expected interaction strengths (train.ratings) > 0, got 0")):
        fit_bpr(MatrixFactorization(150, 120, 4), zero)
    with pytest.raises(ValueError, match="fit_wals: expected solver to be one of 'cg', "
                                         "'cholesky', got 'lu'"):
        fit_wals(MatrixFactorization(150, 120, 4, biased=False), train, solver="lu")
    model = MatrixFactorization(150, 120, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(lamods.ConvergenceError, match=re.escape(
            "fit_bpr: expected a finite training loss, got nan at epoch 2 (lr=1e+30, "
            "optimizer='sgd'); lower lr; the model is left as it was before fit")):
        fit_bpr(model, train, epochs=3, lr=1e30, optimizer="sgd")   # one batch per epoch
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


# -- synthetic generators ------------------------------------------------------------------
def test_synthetic_interactions_shape_and_taste() -> None:
    data = synthetic_interactions(300, 200, 6000, 3, seed=1)
    keys = data.users * 200 + data.items
    assert torch.unique(keys).shape[0] == len(data)                 # distinct pairs
    assert abs(len(data) - 6000) < 600 and int(torch.bincount(data.users).min()) >= 5
    again = synthetic_interactions(300, 200, 6000, 3, seed=1)
    assert torch.equal(again.items, data.items)
    with pytest.raises(ValueError, match="synthetic_interactions: expected rank to be a "
                                         "positive int, got 0"):
        synthetic_interactions(10, 10, 50, 0)


def test_planted_ratings_are_exact_in_count_and_low_rank() -> None:
    syn = planted_ratings(400, 300, 9000, 3, noise=0.2, seed=0)
    data = syn.data
    assert len(data) == 9000 and torch.unique(data.users * 300 + data.items).shape[0] == 9000
    # r = mu + b_u + b_i + p_u^T q_i + noise
    clean = syn.mean + syn.user_bias[data.users] + syn.item_bias[data.items] + (
        syn.user_factors[data.users] * syn.item_factors[data.items]).sum(1)
    torch.testing.assert_close(syn.clean, clean)
    assert abs(float((data.ratings - syn.clean).std()) - 0.2) < 0.01
    counts = torch.bincount(data.items, minlength=300).double()
    assert float(counts.std() / counts.mean()) > 0.5                 # long-tailed popularity
    with pytest.raises(ValueError, match=re.escape(
            "planted_ratings: expected n_ratings <= n_users * n_items (6), got 7")):
        planted_ratings(2, 3, 7, 1)
    assert np.isfinite(data.ratings.numpy()).all()


def test_bpr_negatives_same_draws_by_table_or_binary_search(
        monkeypatch: pytest.MonkeyPatch, interactions) -> None:
    """Note [negative draws]: the dense table and the sorted keys find the same hits, so the
    same seed draws the same negatives (and fits the same model)."""
    from lamods.recsys import implicit

    _, train, _ = interactions
    dense = implicit._seen_table(train.users, train.items, train.n_users, train.n_items)
    monkeypatch.setattr(implicit, "DENSE_SEEN_MAX", 0)
    keys = implicit._seen_table(train.users, train.items, train.n_users, train.n_items)
    assert dense.dtype == torch.bool and keys.dtype == torch.int64
    users = train.users.repeat(3)
    a = implicit._negatives(users, dense, train.n_items, torch.Generator().manual_seed(5))
    b = implicit._negatives(users, keys, train.n_items, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    by_search = MatrixFactorization(train.n_users, train.n_items, 4, init_std=0.01)
    by_table = MatrixFactorization(train.n_users, train.n_items, 4, init_std=0.01)
    by_table.load_state_dict(by_search.state_dict())
    fit_bpr(by_search, train, epochs=2, batch_size=256, seed=1)
    monkeypatch.setattr(implicit, "DENSE_SEEN_MAX", 1 << 28)
    fit_bpr(by_table, train, epochs=2, batch_size=256, seed=1)
    assert torch.equal(by_search.item_factors, by_table.item_factors)
