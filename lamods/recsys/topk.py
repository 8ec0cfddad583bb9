r"""Blocked top-k retrieval: the best items per query without a queries x items matrix.

For queries :math:`a_b` (user vectors, or unit item vectors) and item vectors
:math:`q_i` (plus an optional item offset :math:`c_i`), the score is

.. math::
    s_{bi} = a_b^\top q_i + c_i,

and :func:`topk_scores` returns, per query, the ``k`` items of highest score, leaving out
the items each query excludes (the user's training items; the query item itself).

Note [blocked top-k]: the queries are taken ``query_block`` at a time and the items
``item_block`` at a time; each ``query_block x item_block`` tile of scores is merged into
the running top-k of its queries (``torch.topk`` of the running ``k`` and the tile), so
memory is :math:`O(\text{query\_block} \times (\text{item\_block} + k))` whatever the
number of items (the whole ``users x items`` matrix is never formed). Excluded items get
``-inf`` in their tile before the merge. Equal scores are ordered as ``torch.topk`` orders
them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._validation import check_positive_int

__all__ = ["topk_scores"]

#: Default tile: 1,024 queries x 65,536 items = 64M floats at most per tile.
QUERY_BLOCK = 1024
ITEM_BLOCK = 1 << 16


def _merge(vals: Tensor, idx: Tensor, tile: Tensor, offset: int, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of the running ``(vals, idx)`` and a tile of scores whose items start at offset."""
    cols = torch.arange(offset, offset + tile.shape[1], device=tile.device)
    all_vals = torch.cat([vals, tile], 1)
    all_idx = torch.cat([idx, cols.expand(tile.shape[0], -1)], 1)
    kk = min(k, all_vals.shape[1])
    top = torch.topk(all_vals, kk, dim=1, sorted=True)
    return top.values, all_idx.gather(1, top.indices)


def topk_scores(
    queries: Tensor,
    items: Tensor,
    k: int,
    *,
    item_offset: Tensor | None = None,
    exclude_indptr: Tensor | None = None,
    exclude_items: Tensor | None = None,
    query_block: int = QUERY_BLOCK,
    item_block: int = ITEM_BLOCK,
) -> tuple[Tensor, Tensor]:
    r"""The ``k`` best items per query by :math:`a_b^\top q_i + c_i`: ``(indices, scores)``.

    Args:
        queries: ``(B, d)`` query vectors :math:`a_b`.
        items: ``(n_items, d)`` item vectors :math:`q_i`.
        k: items per query (at most ``n_items``).
        item_offset: ``(n_items,)`` :math:`c_i` (e.g. item biases), or None.
        exclude_indptr, exclude_items: CSR rows of the items to leave out per query
            (``exclude_items[exclude_indptr[b]:exclude_indptr[b + 1]]`` for query ``b``).
        query_block, item_block: tile sizes (Note [blocked top-k]).

    Returns:
        ``(indices, scores)``, each ``(B, k)``, best first. A query with fewer than ``k``
        allowed items fills the tail with excluded ones at score ``-inf``.

    Examples::

        >>> q = torch.tensor([[1.0, 0.0]])
        >>> items = torch.tensor([[0.1, 0.0], [3.0, 0.0], [2.0, 1.0], [-1.0, 0.0]])
        >>> topk_scores(q, items, 2, exclude_indptr=torch.tensor([0, 1]),
        ...             exclude_items=torch.tensor([1]))
        (tensor([[2, 0]]), tensor([[2.0000, 0.1000]]))
    """
    name = "topk_scores"
    k = check_positive_int(name, "k", k)
    query_block = check_positive_int(name, "query_block", query_block)
    item_block = check_positive_int(name, "item_block", item_block)
    if queries.dim() != 2 or items.dim() != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"{name}: expected queries (B, d) and items (n_items, d) of one d, "
                         f"got {tuple(queries.shape)} and {tuple(items.shape)}")
    n_items = items.shape[0]
    if k > n_items:
        raise ValueError(f"{name}: expected k <= n_items ({n_items}), got {k}")
    if (exclude_indptr is None) != (exclude_items is None):
        raise ValueError(f"{name}: expected exclude_indptr and exclude_items together, got "
                         "only one of them")
    if exclude_indptr is not None and exclude_indptr.shape != (queries.shape[0] + 1,):
        raise ValueError(f"{name}: expected exclude_indptr of shape ({queries.shape[0] + 1},) "
                         f"(one row per query), got {tuple(exclude_indptr.shape)}")
    dev = queries.device
    n_q = queries.shape[0]
    out_idx = torch.empty(n_q, k, dtype=torch.long, device=dev)
    out_val = torch.empty(n_q, k, dtype=queries.dtype, device=dev)
    for a in range(0, n_q, query_block):
        e = min(a + query_block, n_q)
        block = queries[a:e]
        if exclude_indptr is not None:
            lo, hi = int(exclude_indptr[a]), int(exclude_indptr[e])
            counts = exclude_indptr[a + 1:e + 1] - exclude_indptr[a:e]
            ex_row = torch.repeat_interleave(torch.arange(e - a, device=dev), counts)
            ex_item = exclude_items[lo:hi].to(dev)
        vals = torch.empty(e - a, 0, dtype=queries.dtype, device=dev)
        idx = torch.empty(e - a, 0, dtype=torch.long, device=dev)
        for s in range(0, n_items, item_block):
            t = min(s + item_block, n_items)
            # s_bi = a_b^T q_i + c_i on this tile
            tile = block @ items[s:t].T
            if item_offset is not None:
                tile += item_offset[s:t]
            if exclude_indptr is not None:
                sel = (ex_item >= s) & (ex_item < t)
                tile[ex_row[sel], ex_item[sel] - s] = float("-inf")
            vals, idx = _merge(vals, idx, tile, s, k)
        out_idx[a:e], out_val[a:e] = idx, vals
    return out_idx, out_val
