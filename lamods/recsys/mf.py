r"""Matrix-factorization rating model: biased MF and the SVD++ implicit-feedback term.

Koren, Bell & Volinsky, *Matrix factorization techniques for recommender
systems* (2009); Koren, *Factorization meets the neighborhood* (KDD 2008).
The predicted rating of user :math:`u` for item :math:`i` is

.. math::
    \hat r_{ui} = \mu + b_u + b_i + q_i^\top \Big(p_u + |N(u)|^{-1/2}
                  \sum_{j \in N(u)} y_j\Big),

where :math:`N(u)` is the set of items :math:`u` rated in the training data
(the implicit term, only with ``implicit=True``, as in SVD++). The model is
fitted by minimising, as Surprise's ``SVD``/``SVDpp`` do, the per-example loss

.. math::
    \ell_{ui} = \tfrac12 (r_{ui} - \hat r_{ui})^2
        + \tfrac{\lambda}{2}\big(\|p_u\|^2 + \|q_i\|^2 + \textstyle\sum_{j\in N(u)} \|y_j\|^2\big)
        + \tfrac{\lambda_b}{2}(b_u^2 + b_i^2)

summed over the training ratings, so a user with :math:`n_u` ratings is
regularised :math:`n_u` times (the weighted-lambda ridge of ALS-WR).

Note [no custom backward]: everything here is plain differentiable torch ops
(``embedding``, ``index_add``); autograd does the backward, so there is no
hand-written gradient to check beyond the module's own gradcheck test. (The fast path of
:func:`~lamods.recsys.fit_sgd` computes the same gradient of :meth:`loss` by hand,
:func:`lamods.recsys.train.mf_backward`; its tests compare it with autograd's.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamods._validation import check_ids, check_nonnegative, check_positive_int
from lamods.recsys.topk import ITEM_BLOCK, topk_scores

__all__ = ["MatrixFactorization"]


class MatrixFactorization(nn.Module):
    r"""Rating model :math:`\hat r_{ui} = \mu + b_u + b_i + q_i^\top (p_u + |N(u)|^{-1/2}\sum y_j)`.

    ``forward(user_ids, item_ids)`` returns unclipped predictions (what training
    differentiates); :meth:`predict` clips them to ``rating_range`` for evaluation.
    Train it with :func:`~lamods.recsys.fit_sgd` (mini-batch gradient descent,
    any configuration) or :func:`~lamods.recsys.fit_als` (alternating ridge
    solves, ``implicit=False``), or with any torch optimiser on :meth:`loss`.

    The training interactions (who rated what) are kept in two buffers set by
    :meth:`set_interactions`: they are :math:`N(u)` for the implicit term and
    the items :meth:`recommend` leaves out.

    Args:
        n_users: number of users (indices ``0 .. n_users-1``).
        n_items: number of items.
        n_factors: :math:`k`, the length of :math:`p_u`, :math:`q_i`, :math:`y_j`.
        biased: learn :math:`b_u`, :math:`b_i` (else they are absent, and
            :math:`\mu` is still added).
        implicit: add the SVD++ implicit term :math:`|N(u)|^{-1/2}\sum_{j\in N(u)} y_j`.
        rating_range: ``(lowest, highest)`` rating; :meth:`predict` clips to it.
        init_std: standard deviation of the normal initialisation of the factors.
        sparse: give the factor tables sparse gradients (for ``torch.optim.SparseAdam``,
            ``SGD`` or ``Adagrad``); the bias vectors keep dense gradients.

    Shape:
        - user_ids, item_ids: :math:`(*)` integer tensors of one shape.
        - Output: :math:`(*)`, the model's dtype.

    Attributes:
        user_factors: :math:`P`, ``(n_users, k)``, :math:`\mathcal N(0, \text{init\_std}^2)`.
        item_factors: :math:`Q`, ``(n_items, k)``, same.
        user_bias, item_bias: :math:`b`, ``(n_users,)``, ``(n_items,)``, zeros (if biased).
        implicit_factors: :math:`Y`, ``(n_items, k)``, same as :math:`P` (if implicit).
        global_mean: buffer, :math:`\mu` (the fitting functions set it to the training mean).
        seen_indptr, seen_items: buffers, CSR rows of the training interactions.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> model = MatrixFactorization(4, 6, 3, implicit=True, rating_range=(1, 5))
        >>> model.set_interactions(torch.tensor([0, 0, 1]), torch.tensor([2, 5, 1]))
        >>> model(torch.tensor([0, 3]), torch.tensor([1, 1])).shape
        torch.Size([2])
        >>> items, scores = model.recommend(torch.tensor([0]), k=2)
        >>> bool(torch.isin(items, torch.tensor([2, 5])).any())
        False
        >>> model
        MatrixFactorization(n_users=4, n_items=6, n_factors=3, biased=True, implicit=True,
                            rating_range=(1.0, 5.0))
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int,
        *,
        biased: bool = True,
        implicit: bool = False,
        rating_range: tuple[float, float] | None = None,
        init_std: float = 0.1,
        sparse: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = "MatrixFactorization"
        factory = {"device": device, "dtype": dtype}
        self.n_users = check_positive_int(name, "n_users", n_users)
        self.n_items = check_positive_int(name, "n_items", n_items)
        self.n_factors = check_positive_int(name, "n_factors", n_factors)
        self.biased = bool(biased)
        self.implicit = bool(implicit)
        self.init_std = check_nonnegative(name, "init_std", init_std)
        self.sparse = bool(sparse)
        if rating_range is not None:
            lo, hi = float(rating_range[0]), float(rating_range[1])
            if not lo <= hi:
                raise ValueError(f"{name}: expected rating_range (low, high) with low <= high, "
                                 f"got {rating_range!r}")
            rating_range = (lo, hi)
        self.rating_range = rating_range
        self.user_factors = nn.Parameter(torch.empty(n_users, n_factors, **factory))
        self.item_factors = nn.Parameter(torch.empty(n_items, n_factors, **factory))
        if self.biased:
            self.user_bias = nn.Parameter(torch.empty(n_users, **factory))
            self.item_bias = nn.Parameter(torch.empty(n_items, **factory))
        else:
            self.register_parameter("user_bias", None)
            self.register_parameter("item_bias", None)
        if self.implicit:
            self.implicit_factors = nn.Parameter(torch.empty(n_items, n_factors, **factory))
        else:
            self.register_parameter("implicit_factors", None)
        self.register_buffer("global_mean", torch.zeros((), **factory))
        self.register_buffer("seen_indptr", torch.zeros(n_users + 1, dtype=torch.long,
                                                        device=device))
        self.register_buffer("seen_items", torch.zeros(0, dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Factors from :math:`\\mathcal N(0, \\sigma_0^2)` (init_std), biases and mu zero."""
        nn.init.normal_(self.user_factors, 0.0, self.init_std)
        nn.init.normal_(self.item_factors, 0.0, self.init_std)
        if self.implicit_factors is not None:
            nn.init.normal_(self.implicit_factors, 0.0, self.init_std)
        if self.user_bias is not None:
            nn.init.zeros_(self.user_bias)
            nn.init.zeros_(self.item_bias)
        self.global_mean.zero_()

    # -- interactions ---------------------------------------------------------
    @torch.no_grad()
    def set_interactions(self, user_ids: Tensor, item_ids: Tensor) -> None:
        """Store the training pairs (duplicates dropped) as CSR rows: :math:`N(u)` per user."""
        check_ids("MatrixFactorization", "user_ids", user_ids, self.n_users)
        check_ids("MatrixFactorization", "item_ids", item_ids, self.n_items)
        dev = self.seen_indptr.device
        key = torch.unique(user_ids.reshape(-1).long().to(dev) * self.n_items
                           + item_ids.reshape(-1).long().to(dev))  # sorted by (user, item)
        users, items = key // self.n_items, key % self.n_items
        counts = torch.bincount(users, minlength=self.n_users)
        self.seen_indptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        self.seen_items = items

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the interaction buffers change size with the data: take the saved size
        key = prefix + "seen_items"
        if key in state_dict:
            self.seen_items = torch.empty_like(state_dict[key], device=self.seen_items.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _bags(self, uniq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For users ``uniq``: their items concatenated, the bag of each entry, bag sizes."""
        start = self.seen_indptr[uniq]
        counts = self.seen_indptr[uniq + 1] - start
        bag = torch.repeat_interleave(torch.arange(uniq.shape[0], device=uniq.device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        pos = torch.arange(bag.shape[0], device=uniq.device) - offsets[bag] + start[bag]
        return self.seen_items[pos], bag, counts

    def _user_terms(self, user_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        """:math:`p_u + |N(u)|^{-1/2}\\sum_{j\\in N(u)} y_j` and :math:`\\sum_{j} \\|y_j\\|^2`."""
        p_u = F.embedding(user_ids, self.user_factors, sparse=self.sparse)
        if self.implicit_factors is None:
            return p_u, None
        flat = user_ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        items, bag, counts = self._bags(uniq)
        y = F.embedding(items, self.implicit_factors, sparse=self.sparse)
        # sum_{j in N(u)} y_j, one row per distinct user
        y_sum = y.new_zeros(uniq.shape[0], self.n_factors).index_add(0, bag, y)
        # |N(u)|^(-1/2) (an empty N(u) gives 0)
        scale = counts.clamp(min=1).to(y.dtype).rsqrt()
        implicit = (y_sum * scale.unsqueeze(1))[inverse].reshape(p_u.shape)
        y_norm = y.new_zeros(uniq.shape[0]).index_add(0, bag, y.pow(2).sum(1))
        return p_u + implicit, y_norm[inverse].reshape(user_ids.shape)

    # -- prediction -------------------------------------------------------------
    def _check(self, user_ids: Tensor, item_ids: Tensor) -> None:
        check_ids("MatrixFactorization", "user_ids", user_ids, self.n_users)
        check_ids("MatrixFactorization", "item_ids", item_ids, self.n_items)
        if user_ids.shape != item_ids.shape:
            raise ValueError("MatrixFactorization: expected user_ids and item_ids of one shape, "
                             f"got {tuple(user_ids.shape)} and {tuple(item_ids.shape)}")
        if user_ids.device != self.user_factors.device:
            raise RuntimeError(
                f"MatrixFactorization: expected ids on device {self.user_factors.device} (the "
                f"model's device), got {user_ids.device}; move one of them with .to(device)")

    def _predict(self, user_ids: Tensor, item_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        user_vec, y_norm = self._user_terms(user_ids)
        q_i = F.embedding(item_ids, self.item_factors, sparse=self.sparse)
        # r_ui = mu + b_u + b_i + q_i^T (p_u + |N(u)|^(-1/2) sum_j y_j)
        r = self.global_mean + (q_i * user_vec).sum(-1)
        if self.user_bias is not None:
            r = r + self.user_bias[user_ids] + self.item_bias[item_ids]
        return r, y_norm

    def forward(self, user_ids: Tensor, item_ids: Tensor) -> Tensor:
        self._check(user_ids, item_ids)
        return self._predict(user_ids, item_ids)[0]

    @torch.no_grad()
    def predict(self, user_ids: Tensor, item_ids: Tensor, *, clip: bool = True) -> Tensor:
        """Predicted ratings without gradient, clipped to ``rating_range`` (when set)."""
        r = self(user_ids, item_ids)
        if clip and self.rating_range is not None:
            r = r.clamp(*self.rating_range)
        return r

    def loss(
        self,
        user_ids: Tensor,
        item_ids: Tensor,
        ratings: Tensor,
        *,
        reg: float = 0.02,
        reg_bias: float | None = None,
        reduction: str = "mean",
    ) -> Tensor:
        r"""Surprise's per-example objective, reduced over the batch.

        .. math::
            \ell_{ui} = \tfrac12 (r_{ui} - \hat r_{ui})^2
                + \tfrac{\lambda}{2}\big(\|p_u\|^2 + \|q_i\|^2
                + \textstyle\sum_{j\in N(u)}\|y_j\|^2\big) + \tfrac{\lambda_b}{2}(b_u^2 + b_i^2)

        Args:
            reg: :math:`\lambda` (Surprise's ``reg_all``, default 0.02).
            reg_bias: :math:`\lambda_b` (default: ``reg``).
            reduction: ``"mean"`` or ``"sum"`` over the batch.
        """
        self._check(user_ids, item_ids)
        if ratings.shape != user_ids.shape:
            raise ValueError("MatrixFactorization.loss: expected ratings of the ids' shape "
                             f"{tuple(user_ids.shape)}, got {tuple(ratings.shape)}")
        reg_bias = reg if reg_bias is None else reg_bias
        pred, y_norm = self._predict(user_ids, item_ids)
        p_u = F.embedding(user_ids, self.user_factors, sparse=self.sparse)
        q_i = F.embedding(item_ids, self.item_factors, sparse=self.sparse)
        # 1/2 (r - r_hat)^2 + lambda/2 (|p_u|^2 + |q_i|^2 + sum_j |y_j|^2)
        penalty = p_u.pow(2).sum(-1) + q_i.pow(2).sum(-1)
        if y_norm is not None:
            penalty = penalty + y_norm
        per_example = 0.5 * (ratings - pred).pow(2) + 0.5 * reg * penalty
        if self.user_bias is not None and reg_bias:
            b_u, b_i = self.user_bias[user_ids], self.item_bias[item_ids]
            # + lambda_b/2 (b_u^2 + b_i^2)
            per_example = per_example + 0.5 * reg_bias * (b_u.pow(2) + b_i.pow(2))
        if reduction == "mean":
            return per_example.mean()
        if reduction == "sum":
            return per_example.sum()
        raise ValueError(f"MatrixFactorization.loss: expected reduction 'mean' or 'sum', "
                         f"got {reduction!r}")

    # -- recommendation -----------------------------------------------------------
    @torch.no_grad()
    def user_vectors(self, user_ids: Tensor) -> Tensor:
        """:math:`p_u + |N(u)|^{-1/2}\\sum_{j\\in N(u)} y_j`, shape ``(*, k)``."""
        check_ids("MatrixFactorization", "user_ids", user_ids, self.n_users)
        return self._user_terms(user_ids)[0]

    @torch.no_grad()
    def score_all(self, user_ids: Tensor) -> Tensor:
        """Unclipped predicted ratings of every item, shape ``(B, n_items)`` for ``(B,)`` users."""
        check_ids("MatrixFactorization", "user_ids", user_ids, self.n_users)
        if user_ids.dim() != 1:
            raise ValueError("MatrixFactorization: expected user_ids of shape (B,), got "
                             f"{tuple(user_ids.shape)}")
        # mu + b_u + b_i + (p_u + implicit)^T Q^T, for all items at once
        scores = self.user_vectors(user_ids) @ self.item_factors.t() + self.global_mean
        if self.user_bias is not None:
            scores += self.user_bias[user_ids].unsqueeze(1) + self.item_bias.unsqueeze(0)
        return scores

    @torch.no_grad()
    def recommend(self, user_ids: Tensor, k: int = 10, *, exclude_seen: bool = True,
                  item_block: int = ITEM_BLOCK) -> tuple[Tensor, Tensor]:
        """The ``k`` items of highest predicted rating per user: ``(items, scores)``, ``(B, k)``.

        With ``exclude_seen`` the items in the user's training interactions are
        left out (if a user has fewer than ``k`` unseen items the tail of the list holds
        seen items with score ``-inf``). Ranking uses the unclipped scores, so clipping
        creates no ties. Blocked over items (:func:`~lamods.recsys.topk.topk_scores`): no
        ``users x items`` matrix is formed, so it serves millions of items.
        """
        k = check_positive_int("MatrixFactorization.recommend", "k", k)
        if k > self.n_items:
            raise ValueError(f"MatrixFactorization.recommend: expected k <= n_items "
                             f"({self.n_items}), got {k}")
        check_ids("MatrixFactorization", "user_ids", user_ids, self.n_users)
        if user_ids.dim() != 1:
            raise ValueError("MatrixFactorization.recommend: expected user_ids of shape (B,), "
                             f"got {tuple(user_ids.shape)}")
        exclude = {}
        if exclude_seen:
            items, _, counts = self._bags(user_ids)
            exclude = {"exclude_indptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
                       "exclude_items": items}
        # mu + b_u + b_i + (p_u + implicit)^T q_i: b_i ranks, mu + b_u only shifts the row
        idx, scores = topk_scores(self.user_vectors(user_ids), self.item_factors.detach(), k,
                                  item_offset=None if self.item_bias is None
                                  else self.item_bias.detach(),
                                  item_block=item_block, **exclude)
        shift = self.global_mean.expand(user_ids.shape[0])
        if self.user_bias is not None:
            shift = shift + self.user_bias[user_ids]
        return idx, scores + shift.detach().unsqueeze(1)

    @torch.no_grad()
    def similar_items(self, item_ids: Tensor, k: int = 10, *,
                      item_block: int = ITEM_BLOCK) -> tuple[Tensor, Tensor]:
        r"""The ``k`` items most similar to each item by cosine of item factors, itself excluded.

        :math:`\cos(i, j) = q_i^\top q_j / (\|q_i\| \|q_j\|)`. Returns ``(items, similarities)``,
        each ``(B, k)`` for ``(B,)`` items. Blocked over items, as :meth:`recommend`.
        """
        check_ids("MatrixFactorization", "item_ids", item_ids, self.n_items)
        k = check_positive_int("MatrixFactorization.similar_items", "k", k)
        if k >= self.n_items or item_ids.dim() != 1:
            raise ValueError(f"MatrixFactorization.similar_items: expected item_ids of shape (B,) "
                             f"and k < n_items ({self.n_items}), got shape "
                             f"{tuple(item_ids.shape)} and k={k}")
        unit = F.normalize(self.item_factors.detach(), dim=1)
        # cos(i, j) = q_i^T q_j / (|q_i| |q_j|), the item itself left out
        self_row = torch.arange(item_ids.shape[0] + 1, device=item_ids.device)
        return topk_scores(unit[item_ids], unit, k, exclude_indptr=self_row,
                           exclude_items=item_ids, item_block=item_block)

    # -- helpers for the fitting functions ---------------------------------------------
    @torch.no_grad()
    def zero_unseen(self, user_ids: Tensor, item_ids: Tensor) -> None:
        """Zero the factors and biases of users and items absent from the given training pairs.

        Their predictions then fall back to the baseline (see :mod:`lamods.recsys.splits`).
        """
        seen_u = torch.zeros(self.n_users, dtype=torch.bool, device=self.user_factors.device)
        seen_i = torch.zeros(self.n_items, dtype=torch.bool, device=self.user_factors.device)
        seen_u[user_ids.to(seen_u.device)] = True
        seen_i[item_ids.to(seen_i.device)] = True
        self.user_factors[~seen_u] = 0
        self.item_factors[~seen_i] = 0
        if self.implicit_factors is not None:
            self.implicit_factors[~seen_i] = 0
        if self.user_bias is not None:
            self.user_bias[~seen_u] = 0
            self.item_bias[~seen_i] = 0

    def extra_repr(self) -> str:
        s = (f"n_users={self.n_users}, n_items={self.n_items}, n_factors={self.n_factors}, "
             f"biased={self.biased}, implicit={self.implicit}")
        if self.rating_range is not None:
            s += f", rating_range={self.rating_range}"
        if self.sparse:
            s += ", sparse=True"
        return s
