r"""EASE: a closed-form item-item model for implicit feedback (Steck, WWW 2019).

*Embarrassingly shallow autoencoders for sparse data*: with :math:`X` the binary
``users x items`` matrix of the interactions, learn an item-item weight matrix :math:`B`
with a zero diagonal (an item may not predict itself) by

.. math::
    \min_B \|X - X B\|_F^2 + \lambda \|B\|_F^2 \quad \text{s.t. } \mathrm{diag}(B) = 0,

whose solution is closed-form (Lagrange multipliers for the diagonal):

.. math::
    P = (X^\top X + \lambda I)^{-1}, \qquad
    B = I - P\,\mathrm{diag}(1 / \mathrm{diag}(P)), \quad
    \text{i.e. } B_{ij} = -P_{ij} / P_{jj}\ (i \ne j), \ B_{jj} = 0.

A user's scores are :math:`s_u = x_u^\top B` (the row of :math:`X B`): a different model
from matrix factorization (an item-item regression, :math:`n_{items}^2` weights, no
factors), fitted in one :math:`n_{items} \times n_{items}` Cholesky factorisation. It suits
catalogues of up to a few ten thousand items (the weights are dense).

Note [no custom backward]: a closed-form fit; nothing is differentiated.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lamods._validation import check_ids, check_positive, check_positive_int
from lamods.base import Estimator
from lamods.exceptions import SingularSystemError
from lamods.recsys._rows import RowIndex
from lamods.recsys.movielens import Ratings
from lamods.recsys.topk import ITEM_BLOCK, topk_scores

__all__ = ["EASE"]

#: Floats of the dense block of ``X`` rows held at once while forming :math:`X^\top X`.
GRAM_BLOCK = 1 << 24


class EASE(Estimator):
    r"""Item-item implicit-feedback recommender with closed-form weights :math:`B` (EASE).

    :math:`B = I - P\,\mathrm{diag}(1/\mathrm{diag}(P))`,
    :math:`P = (X^\top X + \lambda I)^{-1}`, scores :math:`x_u^\top B` (module docstring).

    Args:
        reg: :math:`\lambda > 0`.
        device, dtype: of the fitted weights (default: float32 on ``train``'s device).

    Attributes:
        weights_: ``(n_items, n_items)`` :math:`B`, zero diagonal.
        seen_indptr_, seen_items_: the training interactions as CSR rows per user (the
            items :meth:`recommend` leaves out, and the rows :math:`x_u` it scores).

    Examples::

        >>> from lamods.recsys import synthetic_interactions, leave_last_out, ranking_metrics
        >>> data = synthetic_interactions(200, 150, 3000, 4, seed=0)
        >>> train, test = leave_last_out(data)
        >>> model = EASE(reg=50.0).fit(train)
        >>> bool((model.weights_.diagonal() == 0).all())
        True
        >>> ranking_metrics(model, test, k=10, threshold=None)["recall@10"] > 0.25
        True
    """

    _FITTED = ("weights_",)
    _RESIZED = ("seen_indptr_", "seen_items_")
    _FITTED_SHAPES: ClassVar[dict[str, tuple[str | int, ...]]] = {
        "weights_": ("m", "m"), "seen_items_": ("nnz",)}

    def __init__(self, reg: float = 100.0, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(device=device, dtype=dtype)
        self.reg = check_positive("EASE", "reg", reg)
        self.register_buffer("seen_indptr_", torch.zeros(1, dtype=torch.long, device=device))
        self.register_buffer("seen_items_", torch.zeros(0, dtype=torch.long, device=device))

    def extra_repr(self) -> str:
        return f"reg={self.reg}"

    @property
    def n_users(self) -> int:
        return self.seen_indptr_.shape[0] - 1

    @property
    def n_items(self) -> int:
        return self.weights_.shape[0]

    @torch.no_grad()
    def fit(self, train: Ratings) -> EASE:
        """Fit :math:`B` to ``train``'s pairs (each present pair counts 1; the values of
        ``train.ratings`` are not used). Returns ``self``."""
        name = "EASE.fit"
        if not isinstance(train, Ratings):
            raise TypeError(f"{name}: expected train as a Ratings, got {type(train).__name__}")
        if len(train) == 0:
            raise ValueError(f"{name}: expected at least one interaction, got none")
        dev = torch.device(self.device) if self.device is not None else train.users.device
        dtype = self.dtype if self.dtype is not None else torch.get_default_dtype()
        self._adopt(dtype, dev)
        n_users, n_items = train.n_users, train.n_items
        key = torch.unique(train.users.to(dev) * n_items + train.items.to(dev))  # distinct
        users, items = key // n_items, key % n_items
        by_user = RowIndex(users, items, n_users, n_items)
        ones = torch.ones(users.shape[0], dtype=dtype, device=dev)
        # G = X^T X, a block of users at a time: (X_b^T)(X_b), sparse times dense
        gram = torch.zeros(n_items, n_items, dtype=dtype, device=dev)
        step = max(1, GRAM_BLOCK // n_items)
        for a in range(0, n_users, step):
            e = min(a + step, n_users)
            lo, hi = int(by_user.crow[a]), int(by_user.crow[e])
            block = torch.zeros(e - a, n_items, dtype=dtype, device=dev)
            block[users[lo:hi] - a, items[lo:hi]] = 1.0
            xt = RowIndex(items[lo:hi], users[lo:hi] - a, n_items, e - a).matrix(ones[lo:hi])
            gram += xt @ block
        # P = (X^T X + lambda I)^{-1} by Cholesky
        gram.diagonal().add_(self.reg)
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) != 0 or not bool(torch.isfinite(chol).all()):
            raise SingularSystemError(f"{name}: expected X^T X + reg I positive definite, got "
                                      f"a failed Cholesky factorisation (reg={self.reg}); "
                                      "raise reg or fit in float64")
        P = torch.cholesky_inverse(chol)
        # B = I - P diag(1 / diag(P)):  B_ij = -P_ij / P_jj, B_jj = 0
        B = P.div_(-P.diagonal().clone())
        B.diagonal().zero_()
        self.weights_ = B
        self.seen_indptr_ = by_user.crow.clone()
        self.seen_items_ = by_user.col.clone()
        return self

    def _rows(self, user_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Users' rows :math:`x_u` (dense ``(B, n_items)``) and their items as CSR rows."""
        start, end = self.seen_indptr_[user_ids], self.seen_indptr_[user_ids + 1]
        counts = end - start
        bag = torch.repeat_interleave(torch.arange(user_ids.shape[0], device=start.device),
                                      counts)
        offsets = torch.cumsum(counts, 0) - counts
        pos = torch.arange(bag.shape[0], device=start.device) - offsets[bag] + start[bag]
        items = self.seen_items_[pos]
        x = torch.zeros(user_ids.shape[0], self.n_items, dtype=self.weights_.dtype,
                        device=start.device)
        x[bag, items] = 1.0
        return x, torch.cat([counts.new_zeros(1), counts.cumsum(0)]), items

    @torch.no_grad()
    def recommend(self, user_ids: Tensor, k: int = 10, *, exclude_seen: bool = True,
                  item_block: int = ITEM_BLOCK) -> tuple[Tensor, Tensor]:
        """The ``k`` items of highest score :math:`x_u^\\top B` per user: ``(items, scores)``.

        As :meth:`MatrixFactorization.recommend`: ``(B, k)`` each, best first; with
        ``exclude_seen`` the user's training items are left out (a user with fewer than
        ``k`` unseen items gets seen ones at score ``-inf`` in the tail). Blocked over items
        (:func:`~lamods.recsys.topk.topk_scores`).
        """
        name = "EASE.recommend"
        self._check_fitted("recommend")
        k = check_positive_int(name, "k", k)
        if k > self.n_items:
            raise ValueError(f"{name}: expected k <= n_items ({self.n_items}), got {k}")
        check_ids("EASE", "user_ids", user_ids, self.n_users)
        if user_ids.dim() != 1:
            raise ValueError(f"{name}: expected user_ids of shape (B,), got "
                             f"{tuple(user_ids.shape)}")
        user_ids = user_ids.to(self.seen_indptr_.device)
        x, indptr, items = self._rows(user_ids)
        exclude = {"exclude_indptr": indptr, "exclude_items": items} if exclude_seen else {}
        # s_ui = x_u^T B[:, i]: the item vectors are the columns of B
        return topk_scores(x, self.weights_.T, k, item_block=item_block, **exclude)
