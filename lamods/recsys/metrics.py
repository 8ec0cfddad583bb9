r"""Rating-prediction errors and top-k ranking metrics.

Errors over :math:`N` held-out ratings:

.. math::
    \mathrm{RMSE} = \sqrt{\tfrac1N \textstyle\sum (\hat r - r)^2}, \qquad
    \mathrm{MAE} = \tfrac1N \textstyle\sum |\hat r - r|.

Ranking, for one user with recommended list :math:`L` (length :math:`k`) and
relevant held-out items :math:`R` (test rating :math:`\ge` ``threshold``),
:math:`h_j = [L_j \in R]`:

.. math::
    \mathrm{P@}k = \frac{\sum_j h_j}{k}, \quad
    \mathrm{R@}k = \frac{\sum_j h_j}{|R|}, \quad
    \mathrm{NDCG@}k = \frac{\sum_{j=1}^{k} h_j / \log_2(j+1)}
                          {\sum_{j=1}^{\min(k,|R|)} 1/\log_2(j+1)},

averaged over users with :math:`|R| \ge 1`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods.recsys.movielens import Ratings

__all__ = ["evaluate", "mae", "ndcg_at_k", "precision_at_k", "ranking_metrics", "recall_at_k",
           "rmse"]


def _pair(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(f"{name}: expected predictions and targets of one non-empty shape, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")


def rmse(pred: Tensor, target: Tensor) -> Tensor:
    """Root mean squared error :math:`\\sqrt{\\mathrm{mean}((\\hat r - r)^2)}`.

    Examples::

        >>> rmse(torch.tensor([3.0, 4.0]), torch.tensor([4.0, 4.0]))
        tensor(0.7071)
    """
    _pair("rmse", pred, target)
    return (pred - target).pow(2).mean().sqrt()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error :math:`\\mathrm{mean}(|\\hat r - r|)`."""
    _pair("mae", pred, target)
    return (pred - target).abs().mean()


def _hits(recommended: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor]:
    if recommended.dim() != 2 or relevant.dim() != 2 or relevant.dtype != torch.bool or (
            recommended.shape[0] != relevant.shape[0]):
        raise ValueError("ranking metrics: expected recommended (U, k) item indices and a "
                         f"boolean relevant mask (U, n_items), got {tuple(recommended.shape)} "
                         f"and {tuple(relevant.shape)} of dtype {relevant.dtype}")
    # h_j = [L_j in R]
    return relevant.gather(1, recommended).to(torch.float64), relevant.sum(1)


def precision_at_k(recommended: Tensor, relevant: Tensor) -> Tensor:
    """Per-user precision@k, ``(U,)``: hits in the top ``k = recommended.shape[1]`` over k.

    Examples::

        >>> rec = torch.tensor([[0, 1, 2]])
        >>> rel = torch.tensor([[True, False, True, True]])
        >>> precision_at_k(rec, rel), recall_at_k(rec, rel)
        (tensor([0.6667], dtype=torch.float64), tensor([0.6667], dtype=torch.float64))
    """
    h, _ = _hits(recommended, relevant)
    # P@k = sum_j h_j / k
    return h.sum(1) / recommended.shape[1]


def recall_at_k(recommended: Tensor, relevant: Tensor) -> Tensor:
    """Per-user recall@k, ``(U,)``: hits over :math:`|R|` (NaN for a user with no relevant item)."""
    h, n_rel = _hits(recommended, relevant)
    # R@k = sum_j h_j / |R|
    return h.sum(1) / n_rel.to(torch.float64)


def ndcg_at_k(recommended: Tensor, relevant: Tensor) -> Tensor:
    """Per-user binary-gain NDCG@k, ``(U,)`` (NaN for a user with no relevant item).

    Examples::

        >>> ndcg_at_k(torch.tensor([[2, 0]]), torch.tensor([[True, False, False]]))
        tensor([0.6309], dtype=torch.float64)
    """
    h, n_rel = _hits(recommended, relevant)
    k = recommended.shape[1]
    # 1 / log2(j + 1) for ranks j = 1..k
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64,
                                             device=h.device))
    dcg = (h * discount).sum(1)
    ideal = torch.cumsum(discount, 0)[(n_rel.clamp(max=k) - 1).clamp(min=0)]
    return torch.where(n_rel > 0, dcg / ideal, torch.full_like(dcg, float("nan")))


@torch.no_grad()
def evaluate(model, data: Ratings, *, batch_size: int = 65536) -> dict[str, float]:
    """RMSE and MAE of ``model.predict`` (clipped) on ``data``: ``{"rmse": ..., "mae": ...}``."""
    dev = model.user_factors.device
    preds = [model.predict(data.users[s:s + batch_size].to(dev),
                           data.items[s:s + batch_size].to(dev))
             for s in range(0, len(data), batch_size)]
    pred = torch.cat(preds).double()
    target = data.ratings.to(dev).double()
    return {"rmse": float(rmse(pred, target)), "mae": float(mae(pred, target))}


@torch.no_grad()
def ranking_metrics(model, test: Ratings, *, k: int = 10, threshold: float | None = 4.0,
                    exclude_seen: bool = True, batch_size: int = 1024) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k over users with a relevant test item.

    A test item is relevant when its rating is at least ``threshold`` (``None``: every
    test item, as in a leave-last-out evaluation of implicit feedback). The candidates are
    all items minus the user's training interactions (what
    :meth:`MatrixFactorization.set_interactions` stored, normally set by the fitting
    function) when ``exclude_seen``. The ranked lists come from the blocked
    :meth:`~MatrixFactorization.recommend` (or any model's ``recommend`` with its
    signature, e.g. :class:`~lamods.recsys.EASE`), and relevance is looked up in the sorted
    ``(user, item)`` keys of the test set, so no ``users x items`` matrix is formed.

    Returns ``{"precision@k": ..., "recall@k": ..., "ndcg@k": ..., "users": n}``
    with ``k`` written out (e.g. ``"ndcg@10"``).
    """
    dev = next(iter(model.state_dict().values())).device   # MatrixFactorization, EASE
    keep = test.ratings >= threshold if threshold is not None else torch.ones_like(
        test.ratings, dtype=torch.bool)
    users, items = test.users[keep].to(dev), test.items[keep].to(dev)
    n_items = model.n_items
    keys = torch.unique(users * n_items + items)            # sorted relevant (user, item)
    eval_users, n_rel = torch.unique(keys // n_items, return_counts=True)
    # 1 / log2(j + 1) for ranks j = 1..k, and its prefix sums (the ideal DCG)
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=dev))
    ideal = torch.cumsum(discount, 0)
    sums = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0}
    for s in range(0, eval_users.shape[0], batch_size):
        batch, rel = eval_users[s:s + batch_size], n_rel[s:s + batch_size]
        recommended, _ = model.recommend(batch, k, exclude_seen=exclude_seen)
        # h_j = [L_j in R]: look the (user, item) keys up among the relevant ones
        query = batch.unsqueeze(1) * n_items + recommended
        pos = torch.searchsorted(keys, query).clamp(max=keys.shape[0] - 1)
        h = (keys[pos] == query).to(torch.float64)
        hits = h.sum(1)
        sums["precision"] += float((hits / k).sum())
        sums["recall"] += float((hits / rel).sum())
        sums["ndcg"] += float(((h * discount).sum(1) / ideal[rel.clamp(max=k) - 1]).sum())
    n = max(eval_users.shape[0], 1)
    out = {f"{name}@{k}": value / n for name, value in sums.items()}
    out["users"] = int(eval_users.shape[0])
    return out
