r"""Ratings grouped by row (user or item) and the row-wise normal equations of ALS and Gibbs.

For every row :math:`r` (a user, or an item) with entries :math:`j \in J(r)`, features
:math:`z_j` of the other side, targets :math:`t_{rj}` and weights :math:`w_{rj}`
(1 unless given), the alternating solvers need

.. math::
    G_r = \sum_{j \in J(r)} w_{rj}\, z_j z_j^\top, \qquad
    b_r = \sum_{j \in J(r)} t_{rj}\, z_j

(the weights enter :math:`G` only: a weighted least squares passes :math:`w t` as targets).

Note [row Gram matrices]: two ways, picked by width and memory. *Outer*: the products
:math:`z_j z_j^\top` of all ``n_cols`` columns are formed once (``n_cols x d^2``) and
:math:`G = S\,O` is one sparse (CSR) times dense product, :math:`S` the ``rows x cols``
matrix of the weights: on MovieLens-100K (``d = 11``) this is 4x faster than gathering
every entry's features. *Padded*: when ``n_cols d^2`` exceeds the memory budget (millions
of columns) or ``d > OUTER_MAX_D`` (where batched products win), the rows are sorted by
length and cut into chunks padded to their longest row, and :math:`G` is one batched
``Z^T Z`` per chunk (each entry's features gathered once). Both yield the systems chunk
by chunk, so at most ``BUDGET`` floats of Gram matrices exist at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

#: Floats (of Gram matrices, outer products or padded features) held at once.
BUDGET = 1 << 24
#: Widest features for the outer path; past it batched Z^T Z wins (measured on
#: MovieLens-100K, one thread: 4 ms against 16 ms at d = 11, 140 ms against 95 ms at d = 51).
OUTER_MAX_D = 32
#: Longest row of a padded chunk over its shortest (bounds the padding waste).
PAD_GROWTH = 1.25


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


class RowIndex:
    """The entries ``(rows[n], cols[n])`` grouped by row, in CSR order.

    Args:
        rows, cols: ``(N,)`` int64 indices (users and items, or items and users).
        n_rows, n_cols: sizes of the two index spaces.

    Attributes:
        order: ``(N,)`` position in the input of each CSR entry (rows ascending, stable).
        col: ``(N,)`` column of each CSR entry; ``crow``: ``(n_rows + 1,)`` row pointers.
        counts: ``(n_rows,)`` entries per row.
    """

    def __init__(self, rows: Tensor, cols: Tensor, n_rows: int, n_cols: int) -> None:
        self.n_rows, self.n_cols = n_rows, n_cols
        self.order = torch.argsort(rows, stable=True)
        self.col = cols[self.order]
        self.counts = torch.bincount(rows, minlength=n_rows)
        self.crow = torch.cat([self.counts.new_zeros(1), torch.cumsum(self.counts, 0)])
        self.nnz = rows.shape[0]
        self._padded: list[tuple[Tensor, Tensor, Tensor]] | None = None
        self._padded_width = 0

    def matrix(self, values: Tensor) -> Tensor:
        """The sparse CSR ``(n_rows, n_cols)`` matrix with ``values`` (input order)."""
        return _csr(self.crow, self.col, values[self.order], (self.n_rows, self.n_cols))

    def _padded_chunks(self, width: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Rows sorted by length, cut into chunks of at most BUDGET / width padded floats."""
        if self._padded is not None and self._padded_width == width:
            return self._padded
        dev = self.counts.device
        budget = max(1, BUDGET // width)
        by_count = torch.argsort(self.counts, stable=True)
        cs = self.counts[by_count].cpu().numpy()
        start = self.crow[:-1]
        chunks = []
        s = int(np.searchsorted(cs, 1))  # rows without entries are skipped
        n = len(cs)
        while s < n:
            # largest e with (e - s) * cs[e - 1] <= budget (at least one row), and rows no
            # longer than PAD_GROWTH times the chunk's first (padding wastes < 1/4)
            sizes = np.arange(1, n - s + 1) * cs[s:]
            e = s + max(1, int(np.searchsorted(sizes, budget, side="right")))
            e = min(e, max(s + 1, int(np.searchsorted(cs, cs[s] * PAD_GROWTH, side="right"))))
            rows = by_count[s:e]
            pos = torch.arange(int(cs[e - 1]), device=dev)
            valid = pos.unsqueeze(0) < self.counts[rows].unsqueeze(1)
            entry = (start[rows].unsqueeze(1) + pos).clamp(max=max(self.nnz - 1, 0))
            chunks.append((rows, entry, valid))
            s = e
        self._padded, self._padded_width = chunks, width
        return chunks

    def systems(self, features: Tensor, targets: Tensor, weights: Tensor | None = None,
                ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        r"""Yield ``(rows, G, b)`` chunk by chunk for the rows that have entries.

        ``rows``: ``(R,)`` row indices; ``G``: ``(R, d, d)``; ``b``: ``(R, d)`` (Note [row Gram
        matrices]). ``features``: ``(n_cols, d)``; ``targets``, ``weights``: ``(N,)`` in the
        input order of the entries.
        """
        d = features.shape[1]
        if d <= OUTER_MAX_D and self.n_cols * d * d <= BUDGET:
            # outer: G = S O, b = S_t Z with S the weights as a CSR matrix
            outer = (features.unsqueeze(2) * features.unsqueeze(1)).reshape(-1, d * d)
            w = weights[self.order] if weights is not None else features.new_ones(self.nnz)
            tw = targets[self.order]
            step = max(1, BUDGET // (d * d))
            for a in range(0, self.n_rows, step):
                e = min(a + step, self.n_rows)
                lo, hi = int(self.crow[a]), int(self.crow[e])
                crow = self.crow[a:e + 1] - lo
                col = self.col[lo:hi]
                size = (e - a, self.n_cols)
                gram = (_csr(crow, col, w[lo:hi], size) @ outer).view(e - a, d, d)
                rhs = _csr(crow, col, tw[lo:hi], size) @ features
                rows = torch.arange(a, e, device=features.device)
                has = self.counts[a:e] > 0
                if not bool(has.all()):
                    rows, gram, rhs = rows[has], gram[has], rhs[has]
                yield rows, gram, rhs
            return
        for rows, entry, valid in self._padded_chunks(d):
            src = self.order[entry]                                  # input positions
            mask = valid.to(features.dtype)
            if weights is not None:
                mask = mask * weights[src]
            z = features[self.col[entry]]                            # (R, L, d)
            zw = z * mask.unsqueeze(2)
            gram = zw.transpose(1, 2) @ z
            rhs = (z.transpose(1, 2) @ (targets[src] * valid).unsqueeze(2)).squeeze(2)
            yield rows, gram, rhs
