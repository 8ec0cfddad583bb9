r"""Lloyd's algorithm and greedy k-means++ seeding: the k-means core.

Shared by :class:`lamods.classic.KMeans` and the k-means landmarks of
:class:`lamods.layers.NystromFeatures` (so ``layers/`` need not import
``classic/``). The formulas are in :mod:`lamods.classic.kmeans`' docstring.
Inputs are centred ``(n, d)`` data with their squared norms ``x_sq`` (see
:func:`center_scale`); nothing is validated here.

Note [k-means scaling]: k-means is translation and scale equivariant, so the data
are centred on their mean (Note [centring trick] in :mod:`lamods.distances`) and
divided by a power of two near their largest entry (Note [power-of-two scaling] in
:mod:`lamods._precision`) before the squared norms are formed: exact, so ordinary
data give the same digits as without it, while float32 data at ``1e-30`` no longer
underflow to all-zero distances (every point in one cluster) and data at ``1e30`` no
longer overflow (:class:`lamods.distances.ScaledFrame`). Centers are scaled back;
the inertia by :math:`s^2`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lamods._random import generator_device
from lamods.distances import ScaledFrame, partial_sq_distances
from lamods.exceptions import ConvergenceError


def center_scale(X: Tensor) -> tuple[Tensor, Tensor, ScaledFrame]:
    """``(X', x_sq, frame)``: ``X' = frame.apply(X)`` (Note [k-means scaling]) and its
    squared row norms."""
    frame = ScaledFrame.of(X)
    Xs = frame.apply(X)
    return Xs, Xs.square().sum(1), frame


def kmeans_plusplus_rows(X: Tensor, x_sq: Tensor, k: int, n_local_trials: int | None,
                         generator: torch.Generator | None) -> Tensor:
    """The ``k`` greedy k-means++ seeds: rows of ``X``."""
    return X[kmeans_plusplus_index(X, x_sq, k, n_local_trials, generator)]


def kmeans_plusplus_index(X: Tensor, x_sq: Tensor, k: int, n_local_trials: int | None,
                          generator: torch.Generator | None) -> Tensor:
    """Row indices ``(k,)`` of the greedy k-means++ seeds."""
    n = X.shape[0]
    trials = 2 + int(math.log(k)) if n_local_trials is None else n_local_trials
    gdev = generator_device(generator)
    first = torch.randint(n, (1,), generator=generator, device=gdev).to(X.device)
    chosen = [first]
    # D(x)^2 to the nearest chosen center
    closest = (partial_sq_distances(X, X[first])[:, 0] + x_sq).clamp_min(0)
    for _ in range(1, k):
        # draw candidates with probability D(x)^2 / sum D^2
        cum = closest.cumsum(0)
        # drawn in float64 on the generator's device: the same seed picks the same
        # candidates in float32 and float64
        u = torch.rand(trials, generator=generator, device=generator_device(generator),
                       dtype=torch.float64).to(device=X.device, dtype=X.dtype) * cum[-1]
        cand = torch.searchsorted(cum, u).clamp_max(n - 1)
        d_cand = (partial_sq_distances(X, X[cand]) + x_sq.unsqueeze(1)).clamp_min(0)
        d_cand = torch.minimum(closest.unsqueeze(1), d_cand)
        # keep the candidate giving the lowest inertia
        best = d_cand.sum(0).argmin()
        closest = d_cand[:, best]
        chosen.append(cand[best].reshape(1))
    return torch.cat(chosen)


def relocate_empty(X: Tensor, x_sq: Tensor, C: Tensor, labels: Tensor, counts: Tensor,
                    sums: Tensor) -> None:
    """Move each empty cluster onto the point farthest from its center (in place)."""
    empty = (counts == 0).nonzero()[:, 0]
    dist = (partial_sq_distances(X, C).gather(1, labels.unsqueeze(1))[:, 0] + x_sq)
    far = dist.topk(len(empty)).indices
    for e, i in zip(empty.tolist(), far.tolist()):
        old = int(labels[i])
        sums[old] -= X[i]
        counts[old] -= 1
        sums[e] = X[i]
        counts[e] = 1
        labels[i] = e


def chunk_rows(n: int, k: int, device: torch.device) -> int:
    """Rows per block of the assign step: cache-sized on CPU, everything at once on GPU."""
    budget = 2 ** 16 if device.type == "cpu" else 2 ** 26
    return max(256, budget // k)


def estep(X: Tensor, C: Tensor, chunk: int, *, sums: bool) -> tuple[Tensor, Tensor]:
    """Labels ``(n,)`` and per-cluster sums ``(k, d)`` (or partial distances ``(n,)``).

    Note [fused assign]: one pass over ``X`` per call. Each block of ``chunk`` rows
    (Note [blocked assign]) gets its partial distances by one GEMM into a buffer
    allocated once per call, their argmin written straight into ``labels`` (and the
    minimum into the output when ``sums`` is False), and, while the block is still in
    cache, its rows added to their cluster's sum (``index_add_``), so ``X`` is read once
    per Lloyd iteration. The distances are laid out ``(k, chunk)``: the GEMM
    ``C X_b^T`` measured faster than ``X_b C^T`` with MKL's float64 kernels at
    ``k = 16`` (``benchmarks/bench_scale.py kmeans``), and the minimum over the leading
    dimension is a vectorised elementwise reduction.
    """
    n = X.shape[0]
    k = C.shape[0]
    m = min(chunk, n)
    # ||c_j||^2 as a (k, 1) column for the (k, chunk) layout
    c_sq = C.square().sum(1).unsqueeze(1)
    labels = torch.empty(n, dtype=torch.int64, device=X.device)
    out = torch.zeros_like(C) if sums else torch.empty(n, dtype=X.dtype, device=X.device)
    dist = torch.empty(k, m, dtype=X.dtype, device=X.device)
    low = torch.empty(m, dtype=X.dtype, device=X.device) if sums else None
    for i in range(0, n, m):
        Xi = X[i:i + m]
        r = Xi.shape[0]
        di = dist[:, :r]
        # ||x - c||^2 - ||x||^2 = ||c||^2 - 2 c^T x  (one GEMM per block)
        torch.addmm(c_sq, C, Xi.mT, alpha=-2.0, out=di)
        li = labels[i:i + r]
        torch.min(di, 0, out=(low[:r] if low is not None else out[i:i + r], li))
        if sums:
            out.index_add_(0, li, Xi)
    return labels, out


def two_nearest(X: Tensor, x_sq: Tensor, C: Tensor, chunk: int,
                slack: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Labels, an upper bound on the distance to the nearest center and a lower bound on
    the distance to the second nearest, for every row of ``X`` (Note [Hamerly bounds]).

    The distances are computed as :math:`\\sqrt{\\|x\\|^2 + \\|c\\|^2 - 2 c^T x}`; ``slack``
    (per row) widens both bounds by that formula's rounding.
    """
    n = X.shape[0]
    k = C.shape[0]
    m = min(chunk, n)
    c_sq = C.square().sum(1).unsqueeze(1)
    labels = torch.empty(n, dtype=torch.int64, device=X.device)
    d1 = torch.empty(n, dtype=X.dtype, device=X.device)
    d2 = torch.empty(n, dtype=X.dtype, device=X.device)
    dist = torch.empty(k, m, dtype=X.dtype, device=X.device)
    for i in range(0, n, m):
        Xi = X[i:i + m]
        r = Xi.shape[0]
        di = dist[:, :r]
        torch.addmm(c_sq, C, Xi.mT, alpha=-2.0, out=di)
        li = labels[i:i + r]
        torch.min(di, 0, out=(d1[i:i + r], li))
        if k > 1:
            di.scatter_(0, li.unsqueeze(0), math.inf)
            torch.amin(di, 0, out=d2[i:i + r])
        else:
            d2[i:i + r] = math.inf
    d1.add_(x_sq).clamp_min_(0).sqrt_().add_(slack)
    d2.add_(x_sq).clamp_min_(0).sqrt_().sub_(slack)
    return labels, d1, d2


def update_sums(X: Tensor, labels: Tensor, labels_old: Tensor, changed: Tensor,
                sums: Tensor) -> Tensor:
    """Per-cluster sums for ``labels`` from those of ``labels_old`` (Note [incremental sums]).

    ``sums`` is updated in place unless more than a quarter of the rows moved.
    """
    moved = changed.nonzero()[:, 0]
    if 4 * moved.numel() > X.shape[0]:
        return torch.zeros_like(sums).index_add_(0, labels, X)
    # s_j += sum_{i moved into j} x_i - sum_{i moved out of j} x_i
    Xm = X.index_select(0, moved)
    sums.index_add_(0, labels.index_select(0, moved), Xm)
    return sums.index_add_(0, labels_old.index_select(0, moved), Xm, alpha=-1.0)


def lloyd(X: Tensor, x_sq: Tensor, C: Tensor, max_iter: int,
          tol: float, *, name: str = "lloyd") -> tuple[Tensor, Tensor, Tensor, int]:
    """Lloyd iterations from centers ``C``: ``(centers, labels, inertia, iterations)``.

    Raises :class:`~lamods.exceptions.ConvergenceError` (``name`` in the message) if
    the centers become non-finite, naming the iteration (checked with the stopping
    rule, in the same synchronisation).

    Note [Hamerly bounds] (Hamerly 2010, "Making k-means even faster"; the same
    iterations as Lloyd's, not an approximation): every row keeps an upper bound
    :math:`u_i \\ge \\|x_i - c_{l_i}\\|` and a lower bound :math:`b_i \\le \\min_{j \\ne l_i}
    \\|x_i - c_j\\|`. When the centers move by :math:`p_j`, the triangle inequality keeps
    them valid as :math:`u_i \\leftarrow u_i + p_{l_i}` and :math:`b_i \\leftarrow b_i -
    \\max_{j \\ne l_i} p_j`. A row whose :math:`u_i \\le \\max(b_i, s_{l_i})`, with
    :math:`s_j = \\tfrac12 \\min_{j' \\ne j} \\|c_j - c_{j'}\\|`, provably keeps its label, so
    only the other rows get their distances computed (one GEMM over those rows). The
    bounds are widened by the rounding of the expanded distance formula
    (``slack``: :math:`\\sqrt{8 \\epsilon (\\|x\\|^2 + \\max_j \\|c_j\\|^2)}` per row, about
    :math:`10^{-7}` relative in float64), so a skipped row can only be one whose two
    nearest centers tie to rounding. An empty cluster's relocation resets the bounds.

    Note [incremental sums]: after the first iteration few labels change, so the
    per-cluster sums are updated only by the rows that moved (added to their new
    cluster, subtracted from their old one) instead of summing every row again; when
    more than a quarter of the rows moved they are summed afresh. The update costs
    rounding of order eps |x| per moved row, far below the float64 agreement with
    scikit-learn's Lloyd that the tests pin (1e-10).
    """
    k = C.shape[0]
    n = X.shape[0]
    chunk = chunk_rows(n, k, X.device)
    eps = torch.finfo(X.dtype).eps
    labels_old = None
    it = 0
    sums = C.new_zeros(C.shape)
    upper = lower = slack = None
    bounded = True
    full_passes = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is returned)
        if bounded:
            c_sq_max = C.square().sum(1).max()
            slack = (8 * eps * (x_sq + c_sq_max)).sqrt()
        cand = None
        if bounded and upper is not None:
            # Note [Hamerly bounds]: only rows whose bounds overlap are assigned again
            cc = torch.cdist(C, C).fill_diagonal_(math.inf)
            half = 0.5 * cc.amin(1)
            cand = (upper > torch.maximum(lower, half.index_select(0, labels_old))).nonzero()[:, 0]
            if 2 * cand.numel() > n:
                cand = None
                upper = None
                full_passes += 1
                # the bounds prune little on data without cluster structure: after three
                # such passes in a row, plain Lloyd steps (no bounds to keep) are cheaper
                bounded = full_passes < 3
            else:
                full_passes = 0
        if not bounded:
            labels, _ = estep(X, C, chunk, sums=False)
        elif upper is None:
            # assign: l_i = argmin_j ||x_i - c_j||^2 for every row, with the bounds
            labels, upper, lower = two_nearest(X, x_sq, C, chunk, slack)
        else:
            labels = labels_old.clone()
            if cand.numel():
                lc, uc, bc = two_nearest(X.index_select(0, cand), x_sq.index_select(0, cand),
                                         C, chunk, slack.index_select(0, cand))
                labels.index_copy_(0, cand, lc)
                upper.index_copy_(0, cand, uc)
                lower.index_copy_(0, cand, bc)
        if labels_old is None:
            sums = torch.zeros_like(C).index_add_(0, labels, X)
            changed = None
        else:
            changed = labels != labels_old
            sums = update_sums(X, labels, labels_old, changed, sums)
        counts = torch.bincount(labels, minlength=k)
        if bool((counts == 0).any()):
            relocate_empty(X, x_sq, C, labels, counts, sums)
            changed = None  # the relocation moved labels: not converged
            upper = None    # and its bounds are no longer valid: assign every row again
        # update: c_j = mean of the points labelled j
        C_new = sums / counts.unsqueeze(1).to(X.dtype)
        move = (C_new - C).square().sum(1)
        shift = move.sum()
        C = C_new
        same = ~changed.any() if changed is not None else shift.new_zeros((), dtype=torch.bool)
        # stop when no label changed, or the centers moved at most tol; a non-finite
        # shift means non-finite centers (one synchronisation for both)
        stop, diverged = torch.stack([same | (shift <= tol), ~torch.isfinite(shift)]).tolist()
        if diverged:
            raise ConvergenceError(f"{name}: Lloyd's iterations diverged: the cluster centers "
                                   f"became non-finite at iteration {it}")
        if stop:
            break
        labels_old = labels
        if bounded and upper is not None:
            # u_i += p_{l_i};  b_i -= max_{j != l_i} p_j  (the largest move, or the second
            # largest for the rows of the cluster that moved most)
            p = move.sqrt()
            top = p.topk(2).values if k > 1 else torch.cat([p, p.new_zeros(1)])
            far = p.argmax()
            upper.add_(p.index_select(0, labels))
            lower.sub_(torch.where(labels == far, top[1], top[0]))
    # a last assign step, so labels and inertia belong to the final centers
    labels, d = estep(X, C, chunk, sums=False)
    return C, labels, (d + x_sq).clamp_min(0).sum(), it
