"""EASE (Steck 2019): closed-form item-item weights, recommend, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lamods
from lamods.recsys import EASE, Ratings, leave_last_out, ranking_metrics, synthetic_interactions
from lamods.recsys import ease as ease_module


def _data(seed: int = 0, n_users: int = 30, n_items: int = 12, n: int = 120) -> Ratings:
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(n_users * n_items, generator=g)[:n]
    # a repeated pair counts once
    key = torch.cat([key, key[:5]])
    return Ratings(key // n_items, key % n_items, torch.ones(key.shape[0]), n_users=n_users,
                   n_items=n_items)


def _dense(data: Ratings) -> np.ndarray:
    X = np.zeros((data.n_users, data.n_items))
    X[data.users.numpy(), data.items.numpy()] = 1.0
    return X


@pytest.mark.parametrize("reg", [0.5, 20.0])
def test_ease_weights_are_the_constrained_ridge_solution(reg: float) -> None:
    data = _data()
    model = EASE(reg=reg, dtype=torch.float64).fit(data)
    B = model.weights_.numpy()
    X = _dense(data)
    # closed form: P = (X^T X + lambda I)^-1, B = I - P diag(1 / diag P)
    P = np.linalg.inv(X.T @ X + reg * np.eye(12))
    np.testing.assert_allclose(B, np.eye(12) - P / np.diag(P), rtol=1e-10, atol=1e-12)
    assert np.all(np.diag(B) == 0)
    # independently, column j is the ridge regression of X_j on the other columns
    for j in range(12):
        rest = [i for i in range(12) if i != j]
        A = X[:, rest]
        b = np.linalg.solve(A.T @ A + reg * np.eye(11), A.T @ X[:, j])
        np.testing.assert_allclose(B[rest, j], b, rtol=1e-9, atol=1e-12)


def test_ease_gram_blocks_give_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(1)
    whole = EASE(reg=3.0, dtype=torch.float64).fit(data)
    monkeypatch.setattr(ease_module, "GRAM_BLOCK", 12 * 4)   # 4 users per block
    blocked = EASE(reg=3.0, dtype=torch.float64).fit(data)
    torch.testing.assert_close(blocked.weights_, whole.weights_, rtol=1e-12, atol=1e-12)


def test_ease_recommend_ranks_x_b_without_seen_items() -> None:
    data = _data(2)
    model = EASE(reg=2.0, dtype=torch.float64).fit(data)
    X = _dense(data)
    scores = X @ model.weights_.numpy()
    users = torch.tensor([0, 5, 29, 5])
    items, vals = model.recommend(users, k=4, item_block=5)
    for row, u in enumerate(users.tolist()):
        s = np.where(X[u] > 0, -np.inf, scores[u])
        top = np.argsort(-s, kind="stable")[:4]
        np.testing.assert_allclose(vals[row].numpy(), s[top], rtol=1e-12)
        assert not set(items[row].tolist()) & set(np.flatnonzero(X[u]).tolist())
    all_items, _ = model.recommend(users, k=12, exclude_seen=False)
    np.testing.assert_allclose(np.sort(all_items.numpy(), 1), np.tile(np.arange(12), (4, 1)))
    # state_dict round trip into a fresh module gives the same lists
    again = EASE(reg=2.0, dtype=torch.float64)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.recommend(users, k=4)[0], items)


def test_ease_ranks_planted_taste_above_popularity() -> None:
    data = synthetic_interactions(150, 120, 2500, 4, seed=0)
    train, test = leave_last_out(data)
    model = EASE(reg=20.0).fit(train)
    assert model.weights_.dtype == torch.float32
    out = ranking_metrics(model, test, k=10, threshold=None)
    pop = torch.bincount(train.items, minlength=120).float()
    seen = _dense(train) > 0
    hits = 0
    for u, i in zip(test.users.tolist(), test.items.tolist()):
        s = np.where(seen[u], -np.inf, pop.numpy())
        hits += int(i in np.argsort(-s, kind="stable")[:10])
    assert out["users"] == 150 and out["recall@10"] > hits / 150 + 0.1


def test_ease_bad_input() -> None:
    for bad in (0.0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match=re.escape(f"EASE: expected reg > 0, got {bad!r}")):
            EASE(reg=bad)
    with pytest.raises(TypeError, match="EASE.fit: expected train as a Ratings, got ndarray"):
        EASE().fit(np.ones((3, 3)))
    model = EASE()
    with pytest.raises(lamods.NotFittedError, match=re.escape(
            "EASE.recommend: this EASE is not fitted yet; call fit first")):
        model.recommend(torch.tensor([0]))
    model.fit(_data())
    with pytest.raises(ValueError, match=re.escape(
            "EASE.recommend: expected k <= n_items (12), got 13")):
        model.recommend(torch.tensor([0]), k=13)
    with pytest.raises(IndexError, match=re.escape("EASE: expected user_ids in [0, 30), got 30")):
        model.recommend(torch.tensor([30]))
    with pytest.raises(ValueError, match=re.escape(
            "EASE.recommend: expected user_ids of shape (B,), got (1, 1)")):
        model.recommend(torch.tensor([[0]]))
