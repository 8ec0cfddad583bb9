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
from collections.abc import Iterator

import torch
from torch import Tensor

from lamods._precision import float32_gemm_is_ieee
from lamods._random import generator_device
from lamods.distances import ScaledFrame, partial_sq_distances, row_sq_norms
from lamods.exceptions import ConvergenceError


def center_scale(X: Tensor) -> tuple[Tensor, Tensor, ScaledFrame]:
    """``(X', x_sq, frame)``: ``X' = frame.apply(X)`` (Note [k-means scaling]) and its
    squared row norms."""
    frame = ScaledFrame.of(X)
    Xs = frame.apply(X)
    return Xs, row_sq_norms(Xs), frame


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


def _partial_blocks(X: Tensor, C: Tensor, rows: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, P)`` for blocks of up to ``rows`` rows of ``X``: ``P`` ``(r, k)`` the partial
    distances :math:`\\|c_j\\|^2 - 2 x_i^T c_j` of the block, in one buffer reused (and
    overwritten) from block to block."""
    c_sq = C.square().sum(1)
    buf = torch.empty(min(rows, X.shape[0]), C.shape[0], dtype=X.dtype, device=X.device)
    for i in range(0, X.shape[0], rows):
        Xi = X[i:i + rows]
        P = buf[:Xi.shape[0]]
        # ||x - c||^2 - ||x||^2 = ||c||^2 - 2 x^T c  (one GEMM per block)
        torch.addmm(c_sq, Xi, C.mT, alpha=-2.0, out=P)
        yield i, P


def _two_smallest(X: Tensor, C: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Labels and the smallest and second smallest partial distances
    :math:`\\|c_j\\|^2 - 2 c_j^T x` of every row of ``X``, in ``X``'s dtype.

    Laid out ``(chunk, k)``: with ``k`` a cache line or two, ``X_b C^T`` and the row-wise
    minima measured faster than the ``(k, chunk)`` layout of :func:`estep` in float32
    (5.5 ms against 8.2 ms for 100,000 x 64, k = 16, on the 2-core VM) and as fast in
    float64.
    """
    n = X.shape[0]
    k = C.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=X.device)
    p1 = torch.empty(n, dtype=X.dtype, device=X.device)
    p2 = torch.empty(n, dtype=X.dtype, device=X.device)
    for i, di in _partial_blocks(X, C, chunk * (8 if X.device.type == "cpu" else 1)):
        r = di.shape[0]
        li = labels[i:i + r]
        torch.min(di, 1, out=(p1[i:i + r], li))
        if k > 1:
            di.scatter_(1, li.unsqueeze(1), math.inf)
            torch.amin(di, 1, out=p2[i:i + r])
        else:
            p2[i:i + r] = math.inf
    return labels, p1, p2


#: the most centers :func:`_decided_labels` encodes exactly in float32
CODE_MAX_K = 200


def _decided_labels(X: Tensor, C: Tensor, gap: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Labels of the rows of float32 ``X`` whose nearest center is decided in float32, and
    a mask of the others (Note [float32 screen]): row ``i`` is decided when exactly one
    partial distance is less than ``gap[i]`` above its smallest.

    One reduction per block instead of three (a minimum with indices, a scatter, a second
    minimum: 1.3-1.5x slower on the 2-core VM for 16,384 x 16 blocks): the indicator
    :math:`N_{ij} = [P_{ij} < t_i]` of the values below :math:`t_i = \\min_j P_{ij} + g_i`
    (as :math:`\\operatorname{sign}(\\max(t_i - P_{ij}, 0))`; the rounding of :math:`t_i`
    is within the widening of ``gap``) times :math:`w_j = 1 + (k + 1) j` gives
    :math:`s_i = \\#\\{j : N_{ij}\\} + (k + 1) \\sum_{j : N_{ij}} j`: the row is decided when
    :math:`s_i \\bmod (k + 1) = 1`, and its label is then :math:`\\lfloor s_i / (k + 1)
    \\rfloor`. Exact in float32 while :math:`k + (k + 1) k (k - 1) / 2 < 2^{24}`, so for
    ``k <= CODE_MAX_K``. Blocks of ``64 chunk`` rows (:math:`2^{22}` entries on CPU, a 16 MB
    float32 buffer): each operation one parallel region over many rows, as few as the
    memory bound allows (measured 0.93-0.96x scikit-learn's Lloyd time against 0.97-0.98x
    with 16,384-row blocks, 100,000 x 64, k = 16, OpenMP threads waiting passively).
    """
    base = C.shape[0] + 1
    w = torch.arange(C.shape[0], dtype=X.dtype, device=X.device).mul_(base).add_(1)
    code = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for i, Pi in _partial_blocks(X, C, 64 * chunk):
        r = Pi.shape[0]
        # N = sign(max(t - P, 0)): 1 where P < t = min_j P + g
        torch.sub(Pi.amin(1, keepdim=True).add_(gap[i:i + r].unsqueeze(1)), Pi, out=Pi)
        Pi.clamp_min_(0).sign_()
        torch.mv(Pi, w, out=code[i:i + r])
    undecided = code.remainder(base) != 1
    return code.div_(base, rounding_mode="floor").to(torch.int64), undecided


def two_nearest(X: Tensor, x_sq: Tensor, C: Tensor, chunk: int,
                slack: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Labels, an upper bound on the distance to the nearest center and a lower bound on
    the distance to the second nearest, for every row of ``X`` (Note [Hamerly bounds]).

    The distances are computed as :math:`\\sqrt{\\|x\\|^2 + \\|c\\|^2 - 2 c^T x}`; ``slack``
    (per row) widens both bounds by that formula's rounding.
    """
    labels, p1, p2 = _two_smallest(X, C, chunk)
    upper = p1.add_(x_sq).clamp_min_(0).sqrt_().add_(slack)
    lower = p2.add_(x_sq).clamp_min_(0).sqrt_().sub_(slack)
    return labels, upper, lower


class Float32Screen:
    """The float32 copy of float64 data and its error bounds (Note [float32 screen]).

    ``c_bound`` bounds :math:`\\|c\\|^2` for every center the fit will see (Lloyd's
    centers are means of rows, so the larger of :math:`\\max_i \\|x_i\\|^2` and the
    initial centers' does), which makes the bounds constant over the fit.
    """

    def __init__(self, X: Tensor, x_sq: Tensor, c_bound: Tensor) -> None:
        f32 = torch.finfo(torch.float32)
        self.X32 = X.to(torch.float32)
        # delta_i = (d + 8) eps32 (||x_i||^2 + 2 c_bound + tiny32)
        self.delta = (x_sq + 2 * c_bound).add_(f32.tiny).mul_((X.shape[1] + 8) * f32.eps)
        # the two smallest float32 values further apart than 2 delta_i decide the label;
        # compared in float32, so widened by delta_i / 4 for the rounding of the cast, of
        # the difference and of min_j P + gap (each at most 2^-24 (||x||^2 + 2 c_bound),
        # and delta_i / 4 >= 4.5 2^-24 (||x||^2 + 2 c_bound) for d >= 1)
        self.gap32 = (2.25 * self.delta).to(torch.float32)
        self.rechecked = 0

    @staticmethod
    def applies(X: Tensor, k: int) -> bool:
        """Float64 data on a device whose float32 GEMM rounds as IEEE float32, ``k > 1``."""
        return X.dtype == torch.float64 and k > 1 and float32_gemm_is_ieee(X.device)

    def two_nearest(self, X: Tensor, x_sq: Tensor, C: Tensor, chunk: int, slack: Tensor,
                    rows: Tensor | None = None, *,
                    bounds: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """:func:`two_nearest` (or the labels alone, ``bounds=False``) of ``X[rows]``,
        exactly; counts the rows re-checked in float64 in ``self.rechecked``."""
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        upper = lower = None
        if not bounds and C.shape[0] <= CODE_MAX_K:
            labels, undecided = _decided_labels(pick(self.X32), C.to(torch.float32),
                                                pick(self.gap32), chunk)
        else:
            labels, p1, p2 = _two_smallest(pick(self.X32), C.to(torch.float32), chunk)
            undecided = p2 - p1 <= pick(self.gap32)
            if bounds:
                delta = pick(self.delta)
                xr = pick(x_sq)
                # widened by delta_i before the square root (Note [float32 screen])
                upper = p1.to(X.dtype).add_(delta).add_(xr).clamp_min_(0).sqrt_()
                lower = p2.to(X.dtype).sub_(delta).add_(xr).clamp_min_(0).sqrt_()
        recheck = undecided.nonzero()[:, 0]
        self.rechecked = recheck.numel()
        if self.rechecked:
            # the undecided rows: the float64 assign step
            back = recheck if rows is None else rows.index_select(0, recheck)
            Xb = X.index_select(0, back)
            if bounds:
                lr, ur, br = two_nearest(Xb, x_sq.index_select(0, back), C, chunk,
                                         slack.index_select(0, back))
                upper.index_copy_(0, recheck, ur)
                lower.index_copy_(0, recheck, br)
            else:
                lr = _two_smallest(Xb, C, chunk)[0]
            labels.index_copy_(0, recheck, lr)
        return labels, upper, lower


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

    Note [float32 screen]: on a CPU, float64 data are assigned from float32 distances
    (``X`` rounded once per fit, half its memory), then re-checked where float32 could
    be wrong. The float32 GEMM and minima take 5.5 ms against 12 ms in float64 for
    100,000 x 64, k = 16 (``benchmarks/bench_scale.py kmeans``). With
    :math:`u = 2^{-24}`, rounding :math:`x` and :math:`c` to float32 and the GEMM
    :math:`\\|c\\|^2 - 2 x^T c` over :math:`d` terms err by at most about
    :math:`(d + 6) u (\\|c\\|^2 + 2 \\|x\\| \\|c\\|)` (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2002, sec. 3.1, for any order of summation), so with
    :math:`\\delta_i = (d + 8) \\epsilon_{32} (\\|x_i\\|^2 + 2 \\max_j \\|c_j\\|^2)`,
    twice that (:math:`\\max_j \\|c_j\\|^2` bounded once per fit: Lloyd's centers are
    means of rows), a row whose two smallest float32 partial distances are more than
    :math:`2 \\delta_i` apart has its exact nearest center (tested against a margin of
    :math:`2.25 \\delta_i`, which covers the rounding of the test itself); the others
    (about 0.1% of the rows on Gaussian data, d = 64) get the float64 assign step. The
    Hamerly bounds of screened rows are widened by :math:`\\delta_i` before the square
    root. The labels
    are therefore those of exact arithmetic wherever float64 itself is unambiguous,
    and the sums and centers stay float64. Off when torch may run float32 products in
    TF32 or bfloat16 (:func:`lamods._precision.float32_gemm_is_ieee`), on CUDA, for
    float32 data, and for the rest of a fit once more than a quarter of an assign
    step's rows need the re-check.
    """
    k = C.shape[0]
    n = X.shape[0]
    chunk = chunk_rows(n, k, X.device)
    eps = torch.finfo(X.dtype).eps
    # every center is a mean of rows (or a row, or an initial center): ||c||^2 <= c_bound
    c_bound = torch.maximum(x_sq.max(), C.square().sum(1).max())
    # the rounding of sqrt(||x||^2 + ||c||^2 - 2 c^T x), per row (Note [Hamerly bounds])
    slack = (8 * eps * (x_sq + c_bound)).sqrt_()
    # Note [float32 screen]
    screen = Float32Screen(X, x_sq, c_bound) if Float32Screen.applies(X, k) else None

    def assign(rows: Tensor | None = None, *,
               bounds: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        nonlocal screen
        if screen is not None:
            out = screen.two_nearest(X, x_sq, C, chunk, slack, rows, bounds=bounds)
            if 4 * screen.rechecked > (n if rows is None else rows.numel()):
                screen = None  # float32 decides too few rows here: float64 alone is cheaper
            return out
        if not bounds:
            return estep(X, C, chunk, sums=False)[0], None, None
        if rows is None:
            return two_nearest(X, x_sq, C, chunk, slack)
        return two_nearest(X.index_select(0, rows), x_sq.index_select(0, rows), C, chunk,
                           slack.index_select(0, rows))

    labels_old = None
    it = 0
    sums = C.new_zeros(C.shape)
    upper = lower = None
    bounded = True
    full_passes = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is returned)
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
            labels = assign(bounds=False)[0]
        elif upper is None:
            # assign: l_i = argmin_j ||x_i - c_j||^2 for every row, with the bounds
            labels, upper, lower = assign()
        else:
            labels = labels_old.clone()
            if cand.numel():
                lc, uc, bc = assign(cand)
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
    if screen is None:
        labels, d = estep(X, C, chunk, sums=False)
        return C, labels, (d + x_sq).clamp_min(0).sum(), it
    final = assign(bounds=False)[0]
    # sum_i ||x_i - c_{l_i}||^2 = sum_i ||x_i||^2 + sum_j (n_j ||c_j||^2 - 2 c_j^T s_j), with
    # the sums s_j of the final clusters updated from the last step's (Note [incremental sums])
    sums = update_sums(X, final, labels, final != labels, sums)
    counts = torch.bincount(final, minlength=k).to(X.dtype)
    inertia = x_sq.sum() + (counts * C.square().sum(1) - 2 * (C * sums).sum(1)).sum()
    return C, final, inertia.clamp_min(0), it
