r"""Non-negative matrix factorization :math:`X \approx W H`, :math:`W, H \ge 0`.

For :math:`X \ge 0` of shape ``(n, d)``, find :math:`W` ``(n, k)`` and
:math:`H` ``(k, d)``, both non-negative, minimizing a beta divergence:

.. math::
    \text{frobenius: } \tfrac12 \|X - WH\|_F^2, \qquad
    \text{kullback-leibler: } \sum_{ij} X_{ij} \log\frac{X_{ij}}{(WH)_{ij}} - X_{ij} + (WH)_{ij}.

Solvers:

- ``"mu"``, multiplicative updates (Lee & Seung, 2001): gradient steps with
  per-entry step sizes that turn them into ratios of non-negative terms, so
  non-negativity is kept automatically and the loss never increases:

  .. math::
      \text{frobenius: } W \leftarrow W \circ \frac{X H^T}{W H H^T}, \quad
      H \leftarrow H \circ \frac{W^T X}{W^T W H};
      \qquad
      \text{KL: } W \leftarrow W \circ \frac{(X / WH) H^T}{\mathbf 1 H^T}, \quad
      H \leftarrow H \circ \frac{W^T (X / WH)}{W^T \mathbf 1}.

- ``"hals"``, hierarchical alternating least squares (Cichocki & Phan, 2009;
  scikit-learn's ``"cd"``), Frobenius only: each column of :math:`W` (then each
  row of :math:`H`) is the exact minimizer with the others fixed, projected on
  :math:`\ge 0`:

  .. math::
      W_{:t} \leftarrow \max\Big(0,\; W_{:t} - \frac{(W H H^T - X H^T)_{:t}}{(H H^T)_{tt}}\Big).

  Usually converges in far fewer iterations than MU.

Initialization ``"nndsvda"`` (Boutsidis & Gallopoulos, 2008; scikit-learn's
default): the positive parts of the leading singular triplets (of a
randomized SVD, as scikit-learn; the seed drives its test matrix), zeros filled
with the mean of ``X``; ``"random"``: :math:`|N(0,1)| \sqrt{\bar X / k}`.

Stopping as scikit-learn: MU every 10 iterations stops when the error
decrease relative to the initial error is below ``tol``; HALS when the
projected-gradient norm relative to the first iteration's is below ``tol``.
``reconstruction_err_`` is :math:`\sqrt{2 \cdot \text{divergence}}`
(:math:`\|X - WH\|_F` for Frobenius), as scikit-learn.

Note [NMF scaling]: both losses are scale-covariant (:math:`X \to sX` is solved by
:math:`W \to \sqrt s W, H \to \sqrt s H`, and the updates commute with it). The
:math:`\epsilon` guards and the NNDSVDa fill (:math:`\bar X`) are scikit-learn's, in
absolute units, so they are not; data whose largest entry lies in
:math:`[2^{-10}, 2^{10}]` are used as they are (the same run as scikit-learn's). Outside
that range ``fit`` runs on :math:`X / s`, :math:`s` an even power of two near
:math:`\max X`, and scales :math:`W` and :math:`H` back by :math:`\sqrt s`
(``transform`` solves :math:`X / a = W' (H / b)` with powers of two :math:`a, b` chosen
the same way for :math:`X` and :math:`H`, and returns :math:`W = W' a / b`): exact in
binary floating point (Note [power-of-two scaling] in :mod:`lamods._precision`), so
``NMF`` of :math:`2^{2j} X` is exactly :math:`2^j` times that of :math:`X` there, and
float32 data at ``1e30`` no longer overflow to NaN nor data at ``1e-30`` underflow to a
meaningless fit.

Note [row-separable transform]: with :math:`H` fixed, :math:`\min_{W \ge 0} \|X - WH\|`
(or the KL divergence) is a separate problem for each row of :math:`X`, and so are the MU and
HALS updates of :math:`W`. ``transform`` keeps every row on its own: each row starts from
its own constant :math:`\sqrt{\bar X_i / k}` (scikit-learn starts every row from the mean
of the whole batch), is scaled by its own power of two (Note [NMF scaling]) and stops by
its own criterion (``tol``; the relative decrease of its own error every 10 MU iterations,
or its own projected-gradient norm relative to its first for HALS). So the :math:`W` of a
row does not depend on the other rows of the batch: shards give the rows of the whole
(tests), and a NaN row is refused without touching the others.

Streaming (``partial_fit``, MU only) is scikit-learn's ``MiniBatchNMF`` (Lefevre, Bach &
Fevotte, 2011, online MU): the first batch initializes :math:`H`; each batch :math:`X_b`
then gets its own :math:`W_b` with :math:`H` fixed (the row-separable solve above, at most
30 MU iterations, scikit-learn's ``fresh_restarts_max_iter``), and :math:`H` takes one
online MU step whose numerator and denominator are exponentially forgotten running sums,
:math:`\rho` = ``forget_factor``:

.. math::
    A \leftarrow \rho A + H \circ (W_b^T X_b), \quad
    B \leftarrow \rho B + W_b^T W_b H, \quad H \leftarrow A / B
    \qquad (\text{KL: } W_b^T (X_b / W_b H) \text{ and } W_b^T \mathbf 1).

Note [streamed NMF is not the in-memory fit]: the online algorithm minimises the loss
over a stream, not the in-memory ``fit``'s iterations: its components differ from ``fit``'s
(on the tests' data its error is about 10% above ``fit``'s after 4 passes). From the same
initial :math:`H` and with ``tol = 0`` it gives scikit-learn's ``MiniBatchNMF`` components to
rounding (tests): a MU step of :math:`W` from a constant row does not depend on the
constant, so starting each row from its own changes nothing there (with ``tol > 0`` the
stopping differs: per row here, over the whole batch in scikit-learn).
It works in the data's own units (no Note [NMF scaling]:
:math:`A` and :math:`B` accumulate across batches, so a per-batch scale cannot be undone;
rescale data far outside :math:`[2^{-10}, 2^{10}]` first), and :math:`\rho` is
``forget_factor`` for every batch (scikit-learn's ``partial_fit`` takes
``forget_factor ** (min(1024, n_b) / n_b)`` from the first batch's size :math:`n_b`: the same
for batches of at most 1024 rows). Where it is exact: :math:`W_b^T X_b`, :math:`W_b^T W_b`
(KL: :math:`W_b^T (X_b / W_b H)`, :math:`W_b^T \mathbf 1`) and the loss are sums over the
rows of the batch and each row's :math:`W` depends on its row only, so under
torch.distributed they are all-reduced (Note [distributed statistics] in
:mod:`lamods._distributed`) and :math:`N` ranks each streaming their shard of every step's
batch fit the same :math:`H` as one process streaming the concatenated batches, to rounding
(tests). The first batches are gathered from all ranks (in rank order) to initialize
:math:`H` from their union, as one process would from the concatenation.

An all-zero ``X`` (or batch) gives all-zero :math:`W` and :math:`H` (as scikit-learn).
A non-finite loss or iterate (checked every 10 iterations and at the end) raises
:class:`~lamods.exceptions.ConvergenceError` naming the iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._distributed import all_gather_rows, all_reduce_sum
from lamods._precision import pow2_scale
from lamods._random import check_randomness, generator_device, make_generator
from lamods._validation import (
    check_choice,
    check_data,
    check_half_open_unit,
    check_nonnegative,
    check_positive_int,
    check_stream_batch,
    check_streamable,
)
from lamods.base import Estimator
from lamods.decomp.randomized import randomized_svd
from lamods.exceptions import ConvergenceError

__all__ = ["NMF", "beta_divergence"]

_SOLVERS = ("mu", "hals")
_LOSSES = ("frobenius", "kullback-leibler")
_INITS = ("nndsvda", "nndsvd", "random")
#: guard against division by zero, as scikit-learn (float32 machine epsilon)
_EPS = float(torch.finfo(torch.float32).eps)
_EPS64 = float(torch.finfo(torch.float64).eps)
#: iterations between two divergence checks (one synchronisation each)
_CHECK_EVERY = 10
#: data whose largest entry lies within [2^-_RANGE, 2^_RANGE] are not rescaled
_RANGE = 10
#: most MU iterations of each batch's W in partial_fit (scikit-learn's fresh_restarts_max_iter)
_BATCH_MAX_ITER = 30


def _working_scale(*tensors: Tensor, even: bool = False, dims: int | None = None) -> Tensor:
    """1, or a power of two near the largest entry when it lies outside
    :math:`[2^{-10}, 2^{10}]` (Note [NMF scaling]); an even power with ``even``; one per
    row with ``dims=1`` (kept as a size-1 dimension)."""
    s = pow2_scale(*tensors, dims=dims)
    _, e = torch.frexp(s)  # s = 2^(e - 1)
    if even:  # |x| / s < 4 then; never s * 2, which may overflow
        s = torch.where((e - 1) % 2 == 1, s / 2, s)
    inside = ((e - 1).abs() <= _RANGE)
    return torch.where(inside, torch.ones_like(s), s)


def beta_divergence(X: Tensor, W: Tensor, H: Tensor, beta_loss: str, *,
                    rows: bool = False) -> Tensor:
    r"""The loss of the module docstring for :math:`X \approx W H` (``0 \log 0 = 0``); with
    ``rows``, one loss per row of ``X`` (their sum is the loss)."""
    WH = W @ H

    def total(t: Tensor) -> Tensor:
        return t.sum(-1) if rows else t.sum()

    if beta_loss == "frobenius":
        # 1/2 ||X - WH||_F^2
        return total((X - WH).square()) / 2
    WH = WH.clamp_min(_EPS)
    # sum X log(X / WH) - X + WH, with log(X / WH) = log X - log WH: X / WH underflows to 0
    # (log -> -inf) for a subnormal X, its logarithm does not
    Xs = torch.where(X > 0, X, torch.ones_like(X))
    return total(torch.where(X > 0, X * (torch.log(Xs) - torch.log(WH)),
                             torch.zeros_like(X))) - total(X) + total(WH)


def _initialize(X: Tensor, k: int, init: str, gen: torch.Generator | None) -> tuple[Tensor, ...]:
    n, d = X.shape
    if init == "random":
        avg = (X.mean() / k).sqrt()
        # drawn in float64 on the generator's device: the same seed, the same start in
        # float32 and float64
        opts = {"generator": gen, "device": generator_device(gen), "dtype": torch.float64}
        H = avg * torch.randn(k, d, **opts).abs().to(device=X.device, dtype=X.dtype)
        W = avg * torch.randn(n, k, **opts).abs().to(device=X.device, dtype=X.dtype)
        return W, H
    # rank-k randomized SVD with scikit-learn's settings (10 oversamples, 7 or 4 power its)
    n_iter = 7 if k < 0.1 * min(n, d) else 4
    U, S, Vh = randomized_svd(X, k, 10, n_iter, gen)
    # the leading singular pair of a non-negative matrix is non-negative (Perron-Frobenius)
    W = torch.empty(n, k, dtype=X.dtype, device=X.device)
    H = torch.empty(k, d, dtype=X.dtype, device=X.device)
    W[:, 0] = S[0].sqrt() * U[:, 0].abs()
    H[0] = S[0].sqrt() * Vh[0].abs()
    if k > 1:
        x, y = U[:, 1:], Vh[1:].mT  # (n, k-1), (d, k-1)
        xp, yp, xn, yn = x.clamp_min(0), y.clamp_min(0), (-x).clamp_min(0), (-y).clamp_min(0)
        xpn, ypn = xp.norm(dim=0), yp.norm(dim=0)
        xnn, ynn = xn.norm(dim=0), yn.norm(dim=0)
        mp, mn = xpn * ypn, xnn * ynn
        pos = mp > mn
        # the dominant sign part of each further singular pair, scaled
        u = torch.where(pos, xp / xpn, xn / xnn)
        v = torch.where(pos, yp / ypn, yn / ynn)
        lbd = (S[1:] * torch.where(pos, mp, mn)).sqrt()
        W[:, 1:] = lbd * u
        H[1:] = (lbd * v).mT
    W = torch.nan_to_num(W).masked_fill(W < _EPS, 0)
    H = torch.nan_to_num(H).masked_fill(H < _EPS, 0)
    if init == "nndsvda":
        avg = X.mean()
        W = W.masked_fill(W == 0, float(avg))
        H = H.masked_fill(H == 0, float(avg))
    return W, H


def _mu_w(X: Tensor, W: Tensor, H: Tensor, beta_loss: str) -> Tensor:
    if beta_loss == "frobenius":
        # W <- W * (X H^T) / (W H H^T)    (X H^T formed as (H X^T)^T: faster with MKL here)
        num = (H @ X.mT).mT
        den = W @ (H @ H.mT)
    else:
        # W <- W * ((X / WH) H^T) / (1 H^T)
        num = (X / (W @ H).clamp_min(_EPS)) @ H.mT
        den = H.sum(1).unsqueeze(0)
    return W * (num / den.masked_fill(den == 0, _EPS))


def _mu_h(X: Tensor, W: Tensor, H: Tensor, beta_loss: str) -> Tensor:
    if beta_loss == "frobenius":
        # H <- H * (W^T X) / (W^T W H)
        num = W.mT @ X
        den = (W.mT @ W) @ H
    else:
        # H <- H * (W^T (X / WH)) / (W^T 1)
        num = W.mT @ (X / (W @ H).clamp_min(_EPS))
        den = W.sum(0).unsqueeze(1)
    return H * (num / den.masked_fill(den == 0, _EPS))


def _hals_w(X: Tensor, W: Tensor, H: Tensor, violation: bool,
            per_row: bool = False) -> tuple[Tensor, Tensor | None]:
    """One HALS sweep over the columns of W; returns (W, projected-gradient l1 norm or None).

    Works on :math:`W^T` (rows contiguous) in place; ``violation`` adds the
    stopping statistic (three more ops per column), one per row of W with ``per_row``.
    """
    HHt = H @ H.mT
    XHt_t = H @ X.mT  # (X H^T)^T: (k, n)
    Wt = W.mT.contiguous()  # (k, n), a copy
    # 1 / (H H^T)_tt, 0 where the row of H is 0 (then W_{:t} stays)
    diag = HHt.diagonal()
    inv = torch.where(diag > 0, 1 / diag.clamp_min(torch.finfo(W.dtype).tiny), 0.0).tolist()
    total = W.new_zeros(W.shape[0] if per_row else ()) if violation else None
    for t in range(Wt.shape[0]):
        # gradient column: (W H H^T - X H^T)_{:t}
        grad = torch.addmv(XHt_t[t], Wt.mT, HHt[t], beta=-1)
        if total is not None:
            pg = torch.where(Wt[t] == 0, grad.clamp_max(0), grad)
            total = total + (pg.abs() if per_row else pg.abs().sum())
        # W_{:t} <- max(0, W_{:t} - grad / (H H^T)_tt)
        Wt[t].add_(grad, alpha=-inv[t]).clamp_(min=0)
    return Wt.mT, total


class NMF(Estimator):
    r"""Non-negative matrix factorization :math:`X \approx W H` with :math:`W, H \ge 0`.

    Multiplicative updates (Frobenius or Kullback-Leibler) or HALS
    (Frobenius), from NNDSVDa or random initialization (module docstring). At
    the same iterations the reconstruction error is within 1% of
    ``sklearn.decomposition.NMF`` (tests). ``fit`` keeps :math:`H` in
    ``components_``; ``forward``/``transform`` computes :math:`W \ge 0` for new
    rows with :math:`H` fixed, each row on its own (Note [row-separable transform]).
    ``partial_fit`` streams batches (online MU, as scikit-learn's ``MiniBatchNMF``),
    all-reducing its statistics under torch.distributed (module docstring).

    Args:
        n_components: ``k``.
        solver: ``"mu"`` or ``"hals"`` (``"cd"`` is accepted as scikit-learn's name for it).
        beta_loss: ``"frobenius"`` or ``"kullback-leibler"`` (mu only).
        init: ``"nndsvda"``, ``"nndsvd"`` or ``"random"``.
        max_iter: most iterations (one update of W and one of H each).
        tol: stopping tolerance (module docstring); 0 runs ``max_iter`` iterations.
        seed: seed of the random initialization (None: torch's global RNG).
        forget_factor: :math:`\rho \in (0, 1]` of ``partial_fit``: the weight of the
            earlier batches' statistics at each new batch (1: no forgetting).

    Shape:
        - ``fit(X)``: :math:`(N, d)`, non-negative; ``partial_fit(X)``: :math:`(N_b, d)`.
        - ``forward``/``transform``: :math:`(*, d) \to (*, k)`.
        - ``inverse_transform``: :math:`(*, k) \to (*, d)`.

    Attributes:
        components_: :math:`(k, d)` the factor :math:`H`.
        reconstruction_err_: scalar, :math:`\sqrt{2 \cdot \text{divergence}}` at the end of fit.
        n_iter_: scalar int64, iterations run (``partial_fit``: batches seen).
        components_numerator_, components_denominator_: :math:`(k, d)` the running sums
            :math:`A`, :math:`B` of ``partial_fit`` (empty after ``fit``). After
            ``partial_fit``, ``reconstruction_err_`` is that of the last batch (all ranks')
            with its :math:`W` and the :math:`H` before the step.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> X = torch.rand(20, 2) @ torch.rand(2, 6)
        >>> model = NMF(2, solver="hals", max_iter=100)
        >>> W = model.fit_transform(X)
        >>> bool((W >= 0).all()), bool((model.components_ >= 0).all())
        (True, True)
        >>> bool(model.reconstruction_err_ < 1e-2 * X.norm())
        True
    """

    _FITTED = ("components_", "reconstruction_err_", "components_numerator_",
               "components_denominator_")
    _FITTED_SHAPES = {"components_": ("k", "d"), "reconstruction_err_": (),
                      "components_numerator_": ("k", "d"),
                      "components_denominator_": ("k", "d")}

    def __init__(
        self,
        n_components: int,
        *,
        solver: str = "mu",
        beta_loss: str = "frobenius",
        init: str = "nndsvda",
        max_iter: int = 200,
        tol: float = 1e-4,
        seed: int | None = None,
        forget_factor: float = 0.7,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        self.forget_factor = check_half_open_unit(name, "forget_factor", forget_factor)
        self.n_components = check_positive_int(name, "n_components", n_components)
        check_choice(name, "solver", solver, (*_SOLVERS, "cd"))
        check_choice(name, "beta_loss", beta_loss, _LOSSES)
        if solver in ("hals", "cd") and beta_loss != "frobenius":
            raise ValueError(f"{name}: expected beta_loss='frobenius' with solver={solver!r}, "
                             f"got {beta_loss!r}; use solver='mu'")
        check_choice(name, "init", init, _INITS)
        self.solver = solver  # as given ("cd" is scikit-learn's name of "hals")
        self.beta_loss = beta_loss
        self.init = init
        self.max_iter = check_positive_int(name, "max_iter", max_iter)
        self.tol = check_nonnegative(name, "tol", tol)
        check_randomness(name, seed)
        self.seed = seed
        self.register_buffer("n_iter_", torch.zeros((), dtype=torch.int64, device=device))

    def _check_nonneg(self, method: str, X: Tensor) -> None:
        low = float(X.min())
        if low < 0:
            n_neg = int((X < 0).sum())
            raise ValueError(f"{type(self).__name__}.{method}: expected a non-negative input, "
                             f"got {n_neg} negative entries (minimum {low:.4g})")

    def _error(self, X: Tensor, W: Tensor, H: Tensor) -> Tensor:
        return (2 * beta_divergence(X, W, H, self.beta_loss)).clamp_min(0).sqrt()

    def _diverged(self, name: str, it: int, what: str) -> ConvergenceError:
        solver = ("multiplicative updates" if self.solver == "mu" else "HALS sweeps")
        return ConvergenceError(f"{name}: the {solver} diverged: non-finite {what} at "
                                f"iteration {it} (checked every {_CHECK_EVERY} iterations "
                                "and at the end)")

    def _check_iterate(self, name: str, it: int, W: Tensor, H: Tensor) -> None:
        if not bool(torch.isfinite(W.sum() + H.sum())):  # a NaN or inf anywhere
            raise self._diverged(name, it, "W or H")

    def _solve(self, name: str, X: Tensor, W: Tensor, H: Tensor,
               update_h: bool) -> tuple[Tensor, ...]:
        it = 0
        if self.solver == "mu":  # else "hals" / "cd"
            err0 = prev = float(self._error(X, W, H)) if self.tol > 0 else 0.0
            if self.tol > 0 and err0 == 0:
                return W, H, it  # X = WH already (e.g. an all-zero X): nothing to improve
            for it in range(1, self.max_iter + 1):
                W = _mu_w(X, W, H, self.beta_loss)
                if update_h:
                    H = _mu_h(X, W, H, self.beta_loss)
                if self.beta_loss == "kullback-leibler" and update_h:
                    # as scikit-learn: tiny entries of H snap to 0 (stability for beta <= 1)
                    H = H.masked_fill(H < _EPS64, 0)
                if it % _CHECK_EVERY == 0:
                    if self.tol > 0:
                        err = float(self._error(X, W, H))
                        if not err < float("inf"):  # NaN or inf
                            raise self._diverged(name, it, "loss")
                        if (prev - err) / err0 < self.tol:
                            break
                        prev = err
                    else:
                        self._check_iterate(name, it, W, H)
        else:
            v0 = None
            for it in range(1, self.max_iter + 1):  # noqa: B007 (it is returned)
                W, v = _hals_w(X, W, H, self.tol > 0)
                if update_h:
                    Ht, vh = _hals_w(X.mT, H.mT, W.mT, self.tol > 0)
                    H = Ht.mT
                    v = v + vh if v is not None else None
                if v is not None:
                    v = float(v)
                    if not v < float("inf"):  # NaN or inf
                        raise self._diverged(name, it, "projected gradient")
                    v0 = v if v0 is None else v0
                    if v0 == 0 or v / v0 <= self.tol:
                        break
                elif it % _CHECK_EVERY == 0:
                    self._check_iterate(name, it, W, H)
        self._check_iterate(name, it, W, H)
        return W, H, it

    def _start(self, X: Tensor) -> Tensor:
        r"""The start of each row's :math:`W`: the constant :math:`\sqrt{\bar X_i / k}` of its
        row (0 for an all-zero row, which the updates keep: it is exactly fitted)."""
        avg = (X.mean(1, keepdim=True) / self.n_components).sqrt()
        return avg.expand(X.shape[0], self.n_components).clone()

    def _solve_rows(self, name: str, X: Tensor, W: Tensor, H: Tensor,
                    max_iter: int) -> Tensor:
        """:math:`W` for fixed :math:`H`, each row with its own stopping test
        (Note [row-separable transform]): a row that meets ``tol`` leaves the active set."""
        out = W.clone()
        active = torch.arange(X.shape[0], device=X.device)
        Xa, Wa = X, W
        ref = prev = None  # per-row error at the start (MU) / first violation (HALS), last

        def drop(done: Tensor) -> None:
            nonlocal Xa, Wa, active, ref, prev
            if bool(done.any()):
                keep = ~done
                out[active[done]] = Wa[done]
                Xa, Wa, active = Xa[keep], Wa[keep], active[keep]
                ref = ref[keep] if ref is not None else None
                prev = prev[keep] if prev is not None else None

        it = 0
        mu = self.solver == "mu"
        if mu and self.tol > 0:
            ref = prev = self._row_error(Xa, Wa, H)
            drop(ref == 0)  # X_i = W_i H already (e.g. an all-zero row): nothing to improve
        for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
            if Wa.shape[0] == 0:
                break
            if mu:
                Wa = _mu_w(Xa, Wa, H, self.beta_loss)
                if it % _CHECK_EVERY == 0:
                    if self.tol > 0:
                        err = self._row_error(Xa, Wa, H)
                        if not bool(torch.isfinite(err).all()):
                            raise self._diverged(name, it, "loss")
                        # each row: relative decrease of its error since the last check
                        done = (prev - err) / ref < self.tol
                        prev = err
                        drop(done)
                    else:
                        self._check_iterate(name, it, Wa, H)
            else:
                Wa, v = _hals_w(Xa, Wa, H, self.tol > 0, per_row=True)
                if v is not None:
                    if not bool(torch.isfinite(v).all()):
                        raise self._diverged(name, it, "projected gradient")
                    ref = v if ref is None else ref
                    # each row: projected-gradient norm relative to its first
                    drop((ref == 0) | (v <= self.tol * ref))
                elif it % _CHECK_EVERY == 0:
                    self._check_iterate(name, it, Wa, H)
        out[active] = Wa
        self._check_iterate(name, it, out, H)
        return out

    def _row_error(self, X: Tensor, W: Tensor, H: Tensor) -> Tensor:
        return (2 * beta_divergence(X, W, H, self.beta_loss, rows=True)).clamp_min(0).sqrt()

    @torch.no_grad()
    def fit_transform(self, X: object, y: object = None) -> Tensor:
        """Fit on ``X`` ``(n_samples, n_features)`` and return :math:`W` ``(n_samples, k)``."""
        name = f"{type(self).__name__}.fit"
        X = self._fit_input("fit", X)
        self._check_nonneg("fit", X)
        k = self.n_components
        if self.init != "random" and k > min(X.shape):
            raise ValueError(f"{name}: expected n_components <= min(n_samples, n_features) = "
                             f"{min(X.shape)} with init={self.init!r}, got {k}; use "
                             "init='random'")
        # Note [NMF scaling]: X / s, s = 4^j (exact, and so is sqrt(s) = 2^j)
        s = _working_scale(X, even=True)
        root = s.sqrt()
        work = X / s
        W, H = _initialize(work, k, self.init, make_generator(name, self.seed))
        W, H, it = self._solve(name, work, W, H, update_h=True)
        self.components_ = H * root
        err = self._error(work, W, H)
        # ||X - WH||_F scales with s; sqrt(2 KL) with sqrt(s)
        self.reconstruction_err_ = err * root * (root if self.beta_loss == "frobenius" else 1)
        self.n_iter_ = torch.tensor(it, dtype=torch.int64, device=X.device)
        self.components_numerator_ = H.new_empty(0)  # fit keeps no stream
        self.components_denominator_ = H.new_empty(0)
        # an all-zero row of X is exactly fitted by a zero row of W (both losses)
        return (W * root).masked_fill((X == 0).all(1, keepdim=True), 0)

    def fit(self, X: object, y: object = None) -> NMF:
        """Fit on non-negative ``X`` ``(n_samples, n_features)``; returns ``self``."""
        self.fit_transform(X)
        return self

    @torch.no_grad()
    def transform(self, X: object) -> Tensor:
        r""":math:`W \ge 0` for rows ``X`` ``(*, d)`` with :math:`H` fixed: ``(*, k)``.

        Runs the solver's W updates (``max_iter``, ``tol``) from the constant
        :math:`\sqrt{\bar X_i / k}` of each row (scikit-learn: of the whole batch), each row
        on its own (Note [row-separable transform]; on :math:`X_i / a_i` and :math:`H / b`
        outside the ordinary range, Note [NMF scaling]); an all-zero row gives an all-zero
        row of :math:`W`.
        """
        name = f"{type(self).__name__}.transform"
        X = self._input("transform", X)
        work = X.reshape(-1, X.shape[-1])
        check_data(name, work)
        self._check_nonneg("transform", work)
        # Note [NMF scaling]: X_i = W_i H is solved as X_i / a_i = W'_i (H / b),
        # W_i = W'_i a_i / b, a_i one power of two per row (Note [row-separable transform])
        a, b = _working_scale(work, dims=1), _working_scale(self.components_)
        Xw, H = work / a, self.components_ / b
        W = self._solve_rows(name, Xw, self._start(Xw), H, self.max_iter)
        W = W * (a / b)
        return W.reshape(*X.shape[:-1], self.n_components)

    @torch.no_grad()
    def partial_fit(self, X: object, y: object = None) -> NMF:
        r"""One online MU step on the batch ``X`` ``(n_batch, n_features)``; returns ``self``.

        The first call initializes :math:`H` (``init``) from the batch (under
        torch.distributed, from all ranks' first batches, gathered); each call solves the
        batch's :math:`W` with :math:`H` fixed and updates :math:`H` from the running sums
        (module docstring), all-reduced across ranks when torch.distributed is initialised:
        every rank must call it the same number of times, with valid batches. Not the
        in-memory ``fit`` (Note [streamed NMF is not the in-memory fit]).
        """
        name = f"{type(self).__name__}.partial_fit"
        fresh = self.components_denominator_.numel() == 0
        check_streamable(name, fresh=fresh, fitted=self.is_fitted())
        if self.solver != "mu":
            raise ValueError(f"{name}: expected solver='mu' (online multiplicative updates, "
                             f"as scikit-learn's MiniBatchNMF), got {self.solver!r}")
        X = self._fit_input("partial_fit", X, adopt=fresh)
        if not fresh:
            check_stream_batch(name, X, self.components_)
        self._check_nonneg("partial_fit", X)
        k = self.n_components
        if fresh:
            first = all_gather_rows(X)
            if self.init != "random" and k > min(first.shape):
                raise ValueError(f"{name}: expected n_components <= min(n_batch, n_features) "
                                 f"= {min(first.shape)} for the first batch with "
                                 f"init={self.init!r}, got {k}; use init='random'")
            _, H = _initialize(first, k, self.init, make_generator(name, self.seed))
            A, B = H.clone(), torch.ones_like(H)  # as scikit-learn
        else:
            H, A, B = self.components_, self.components_numerator_, self.components_denominator_
        W = self._solve_rows(name, X, self._start(X), H, _BATCH_MAX_ITER)
        d = X.shape[1]
        if self.beta_loss == "frobenius":
            num, second = W.mT @ X, W.mT @ W  # W^T X (k, d), W^T W (k, k)
        else:
            num, second = W.mT @ (X / (W @ H).clamp_min(_EPS)), W.sum(0)[:, None]  # (k, 1)
        loss = beta_divergence(X, W, H, self.beta_loss).reshape(1)
        # Note [distributed statistics]: sums over the rows of every rank's batch
        stats = all_reduce_sum(torch.cat([num.flatten(), second.flatten(), loss]))
        num = stats[:k * d].reshape(k, d)
        second = stats[k * d:-1].reshape(k, -1)
        if self.beta_loss == "frobenius":
            den = second @ H  # W^T W H
        else:  # W^T 1, a zero column sum counted as 1 (as scikit-learn)
            den = second.masked_fill(second == 0, 1).expand(k, d)
        den = den.masked_fill(den == 0, _EPS)
        rho = self.forget_factor
        # A <- rho A + H * num, B <- rho B + den, H <- A / B
        A = rho * A + H * num
        B = rho * B + den
        H = A / B
        if self.beta_loss == "kullback-leibler":
            H = H.masked_fill(H < _EPS64, 0)  # as scikit-learn (stability for beta <= 1)
        step = int(self.n_iter_) + 1
        if not bool(torch.isfinite(H).all()):
            raise self._diverged(name, step, "H")
        self.components_, self.components_numerator_, self.components_denominator_ = H, A, B
        self.reconstruction_err_ = (2 * stats[-1]).clamp_min(0).sqrt()
        self.n_iter_ = torch.tensor(step, dtype=torch.int64, device=X.device)
        return self

    def forward(self, X: Tensor) -> Tensor:
        return self.transform(X)

    def inverse_transform(self, W: object) -> Tensor:
        r""":math:`W H`: ``(*, k) -> (*, d)``."""
        W = self._input("inverse_transform", W, what="W", width=self.n_components)
        return W @ self.components_

    def extra_repr(self) -> str:
        s = (f"n_components={self.n_components}, solver={self.solver!r}, "
             f"beta_loss={self.beta_loss!r}, init={self.init!r}, max_iter={self.max_iter}")
        if self.is_fitted():
            s += f", fitted: {self.components_.shape[1]} features"
        return s
