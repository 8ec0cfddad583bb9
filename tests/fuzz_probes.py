"""The bad-input (fuzz) battery: every public entry point against every kind of bad input.

Each probe calls one entry point on one input and classifies what happens:

- ``error``: a clear error: a lamods exception or a builtin (``ValueError``,
  ``TypeError``, ``RuntimeError``, ``IndexError``) whose message names the entry
  point (``"PCA.fit: expected ..."``);
- ``correct``: a result that an independent reference (torch.linalg, scikit-learn,
  a closed form, in float64) confirms;
- ``wrong``: a result the reference refutes, or NaN/inf where the answer is finite:
  a silent wrong answer;
- ``obscure``: any other exception (an internal error, or a message that does not
  say which entry point failed).

``tests/test_fuzz.py`` asserts every probe is ``error`` or ``correct``;
``python tests/fuzz_probes.py`` prints the counts.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import lamods
from lamods import classic, layers, recsys
from lamods.distances import sq_distances

F64 = torch.float64
#: lamods' message convention, "Name[.method]: expected ...": an error of lamods' own checks
LAMODS_MESSAGE = re.compile(r"^[A-Za-z_][\w.\[\]]*: expected ")
CLEAR = (ValueError, TypeError, RuntimeError, IndexError, lamods.NotFittedError,
         lamods.SingularSystemError, lamods.NotPSDError, lamods.ConvergenceError)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def base_matrix(n: int = 12, d: int = 5, seed: int = 0) -> Tensor:
    """A generic (n, d) float64 matrix: low-rank structure plus noise, not centred."""
    g = _gen(seed)
    return (torch.randn(n, 3, generator=g, dtype=F64) @ torch.randn(3, d, generator=g, dtype=F64)
            + 0.3 * torch.randn(n, d, generator=g, dtype=F64) + 1.0)


def base_sym(n: int = 6, seed: int = 1) -> Tensor:
    """A symmetric positive-definite (n, n) float64 matrix with distinct eigenvalues."""
    B = base_matrix(n, n, seed)
    return B @ B.mT / n + 0.5 * torch.eye(n, dtype=F64)


def _with(x: Tensor, value: float) -> Tensor:
    y = x.clone()
    y.view(-1)[min(3, y.numel() - 1)] = value
    return y


def _sym_with(A: Tensor, value: float) -> Tensor:
    B = A.clone()
    B[0, 1] = B[1, 0] = value
    return B


#: mutations of a general (n, d) data matrix: name -> X -> bad X
MATRIX_CASES: dict[str, Callable[[Tensor], Any]] = {
    "valid": lambda X: X,
    "ndim1": lambda X: X[0],
    "ndim0": lambda X: X[0, 0],
    "batch": lambda X: X.unsqueeze(0).expand(2, *X.shape).clone(),
    "empty_rows": lambda X: X[:0],
    "empty_cols": lambda X: X[:, :0],
    "one_row": lambda X: X[:1],
    "two_rows": lambda X: X[:2],
    "int": lambda X: (X * 3).round().long(),
    "bool": lambda X: X > 1,
    "complex": lambda X: X.to(torch.complex128),
    "half": lambda X: X.half(),
    "bfloat16": lambda X: X.bfloat16(),
    "float32": lambda X: X.float(),
    "nan": lambda X: _with(X, float("nan")),
    "inf": lambda X: _with(X, float("inf")),
    "neg_inf": lambda X: _with(X, float("-inf")),
    "noncontiguous": lambda X: X.mT.contiguous().mT,
    "strided": lambda X: torch.cat([X, X], 1)[:, ::2],
    "huge_f32": lambda X: X.float() * 1e30,
    "tiny_f32": lambda X: X.float() * 1e-30,
    "huge_f64": lambda X: X * 1e150,
    "dup_rows": lambda X: X[torch.arange(X.shape[0]) // 2],
    "const_col": lambda X: torch.cat([X[:, :1] * 0 + 2.5, X[:, 1:]], 1),
    "zeros": lambda X: torch.zeros_like(X),
    "wide": lambda X: torch.cat([X, X * 0.5 + 1], 1)[:4],
    "numpy": lambda X: X.numpy(),
    "list": lambda X: X.tolist(),
    "string": lambda X: "not a matrix",
    "none": lambda X: None,
}

#: mutations of a symmetric matrix
SYM_CASES: dict[str, Callable[[Tensor], Any]] = {
    "valid": lambda A: A,
    "ndim1": lambda A: A[0],
    "batch": lambda A: torch.stack([A, 2 * A]),
    "empty": lambda A: A[:0, :0],
    "one": lambda A: A[:1, :1],
    "nonsquare": lambda A: A[:, :-1],
    "nonsymmetric": lambda A: A + torch.triu(torch.ones_like(A), 1),
    "int": lambda A: (A * 3).round().long(),
    "complex": lambda A: A.to(torch.complex128),
    "half": lambda A: A.half(),
    "float32": lambda A: A.float(),
    "nan": lambda A: _sym_with(A, float("nan")),
    "inf": lambda A: _sym_with(A, float("inf")),
    "noncontiguous": lambda A: A.mT,
    "huge_f32": lambda A: A.float() * 1e30,
    "tiny_f32": lambda A: A.float() * 1e-30,
    "zeros": lambda A: torch.zeros_like(A),
    "identity": lambda A: 2 * torch.eye(A.shape[0], dtype=A.dtype),
    "repeated": lambda A: torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0, 3.0], dtype=F64)),
    "close": lambda A: torch.diag(torch.tensor([1.0, 1 + 1e-9, 2.0, 3.0, 4.0, 5.0], dtype=F64)),
    "rank1": lambda A: A[:, :1] @ A[:, :1].mT,
    "indefinite": lambda A: A - 2 * torch.eye(A.shape[0], dtype=A.dtype) * A.diagonal().mean(),
    "numpy": lambda A: A.numpy(),
}

#: values for integer "k"-like arguments, relative to the largest valid value
K_CASES: dict[str, Callable[[int], Any]] = {
    "k_zero": lambda m: 0,
    "k_negative": lambda m: -1,
    "k_too_large": lambda m: m + 1,
    "k_float": lambda m: 2.0,
    "k_bool": lambda m: True,
    "k_string": lambda m: "2",
    "k_max": lambda m: m,
    "k_one": lambda m: 1,
}


# ---------------------------------------------------------------------------
# Checking results
# ---------------------------------------------------------------------------
class Wrong(AssertionError):
    """The result is refuted by the reference."""


def _t(x: Any) -> Tensor:
    """The input as float64 (the reference's view of it)."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.detach().to(F64) if not t.is_complex() else t.detach()


def close(out: Tensor, ref: Tensor, what: str, *, rtol: float = 1e-6,
          scale: float | None = None, rows: Tensor | None = None,
          overflow_nan_ok: bool = False) -> None:
    """``out`` equals ``ref`` to ``rtol`` relative to the reference's scale.

    IEEE limits of ``out``'s dtype are respected: where the true value overflows that
    dtype, +-inf is the right answer; an absolute error below 100 x its smallest normal
    number is underflow, not a wrong answer. ``rows``: a boolean mask of the leading
    dimension to compare (layers: rows fed NaN/inf may hold anything).
    ``overflow_nan_ok``: where the true value overflows, NaN is accepted as well as +-inf
    (a layer's plain arithmetic: torch's semantics, e.g. ``inf - inf`` in a matmul).
    """
    out64 = out.detach().to(F64)
    if out64.shape != ref.shape:
        raise Wrong(f"{what}: shape {tuple(out64.shape)}, expected {tuple(ref.shape)}")
    if rows is not None:
        out64, ref = out64[rows], ref[rows]
    fin = torch.finfo(out.dtype) if out.is_floating_point() else torch.finfo(F64)
    over = ref.abs() > fin.max
    if bool(over.any()):
        if overflow_nan_ok:  # a layer's arithmetic overflowed on the way: inf - inf = NaN
            if bool(torch.isfinite(out64[over]).any()):
                raise Wrong(f"{what}: an overflowing value came out finite")
        elif not bool((out64[over] == ref[over].sign() * math.inf).all()):
            raise Wrong(f"{what}: an overflowing value is not +-inf")
        out64, ref = out64[~over], ref[~over]
    if not bool(torch.isfinite(out64).all()) and bool(torch.isfinite(ref).all()):
        raise Wrong(f"{what}: non-finite result where the reference is finite")
    s = scale if scale is not None else float(ref.abs().max()) if ref.numel() else 0.0
    err = float((out64 - ref).abs().max()) if ref.numel() else 0.0
    if err > rtol * max(s, 1e-300) + 100 * fin.tiny:
        raise Wrong(f"{what}: max error {err:.3g} > {rtol:g} x scale {s:.3g}")


def _rtol(x: Any) -> float:
    """Tolerance for an input's precision (float32 inputs are computed in float32)."""
    dt = x.dtype if isinstance(x, Tensor) else torch.float64
    if not dt.is_floating_point:
        dt = torch.get_default_dtype()  # integer and bool data are computed in it
    if dt in (torch.float16, torch.bfloat16):
        return 5e-2
    return 2e-3 if dt == torch.float32 else 1e-7


def finite(out: Any, what: str = "result") -> None:
    items = out if isinstance(out, (tuple, list)) else (out,)
    for t in items:
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise Wrong(f"{what}: non-finite entries")


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
@dataclass
class Probe:
    entry: str                      # the name a clear error must mention
    case: str
    call: Callable[[], Any]
    check: Callable[[Any], None]
    names: tuple[str, ...] = ()     # further names an error may mention

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.case}"


PROBES: list[Probe] = []


def probe(entry: str, case: str, call: Callable[[], Any], check: Callable[[Any], None],
          *names: str) -> None:
    PROBES.append(Probe(entry, case, call, check, names))


def _ref_eigvals(A: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(_t(A))


# -- decompositions ----------------------------------------------------------------
def _check_eigh(A: Any) -> Callable[[Any], None]:
    def check(res: Any) -> None:
        L, U = res
        A64 = _t(A)
        rtol = _rtol(A)
        scale = float(A64.abs().max()) if A64.numel() else 1.0
        close(L, _ref_eigvals(A64), "eigenvalues", rtol=rtol, scale=scale)
        U64 = U.detach().to(F64)
        close(U64 @ torch.diag_embed(L.detach().to(F64)) @ U64.mT, A64, "U diag(L) U^T",
              rtol=10 * rtol, scale=scale)
    return check


def _check_svd(A: Any) -> Callable[[Any], None]:
    def check(res: Any) -> None:
        U, S, Vh = res
        A64 = _t(A)
        rtol = _rtol(A)
        scale = float(A64.abs().max()) if A64.numel() else 1.0
        close(S, torch.linalg.svdvals(A64), "singular values", rtol=rtol,
              scale=float(torch.linalg.svdvals(A64).max()) if A64.numel() else 1.0)
        rec = U.detach().to(F64) @ torch.diag_embed(S.detach().to(F64)) @ Vh.detach().to(F64)
        close(rec, A64, "U S Vh", rtol=10 * rtol, scale=scale)
    return check


def _check_topk(A: Any, k: int, largest: bool = True) -> Callable[[Any], None]:
    def check(res: Any) -> None:
        L = res[0]
        ev = _ref_eigvals(A)
        ref = ev.flip(-1)[..., :k] if largest else ev[..., :k]
        close(L, ref, "top-k eigenvalues", rtol=max(_rtol(A), 1e-6),
              scale=float(ev.abs().max()))
    return check


def _check_randomized(A: Any, k: int) -> Callable[[Any], None]:
    def check(res: Any) -> None:
        S = res[1]
        s = torch.linalg.svdvals(_t(A))
        close(S, s[..., :k], "top-k singular values", rtol=max(_rtol(A), 1e-3),
              scale=float(s.max()))
    return check


def _check_inv_sqrtm(A: Any, eps: float) -> Callable[[Any], None]:
    def check(R: Tensor) -> None:
        A64 = _t(A)
        L, U = torch.linalg.eigh(A64)
        ref = U @ torch.diag_embed((L + eps).rsqrt()) @ U.mT
        close(R, ref, "(A + eps I)^(-1/2)", rtol=max(_rtol(A), 1e-6) * 100)
    return check


def _check_pca_fn(X: Any, k: int) -> Callable[[Any], None]:
    def check(res: Any) -> None:
        X64 = _t(X)
        Xc = X64 - X64.mean(-2, keepdim=True)
        C = Xc.mT @ Xc / (X64.shape[-2] - 1)
        ev = torch.linalg.eigvalsh(C).flip(-1)[..., :k]
        close(res.explained_variance, ev, "explained variance", rtol=max(_rtol(X), 1e-6),
              scale=float(ev.max()))
    return check


def _add_decomp() -> None:
    A0 = base_sym()
    for case, mut in SYM_CASES.items():
        A = mut(A0)
        probe("eigh", case, lambda A=A: lamods.eigh(A), _check_eigh(A))
        probe("svd", case, lambda A=A: lamods.svd(A), _check_svd(A))
        probe("inv_sqrtm", case, lambda A=A: lamods.inv_sqrtm(A), _check_inv_sqrtm(A, 0.0))
        for method in ("lanczos", "power", "full"):
            probe(f"topk_eigh[{method}]", case,
                  lambda A=A, m=method: lamods.topk_eigh(A, 2, method=m,
                                                         generator=_gen(0)),
                  _check_topk(A, 2), "topk_eigh")
    probe("inv_sqrtm", "singular_eps0", lambda: lamods.inv_sqrtm(SYM_CASES["rank1"](A0)),
          _check_inv_sqrtm(SYM_CASES["rank1"](A0), 0.0))
    probe("inv_sqrtm", "eps_negative", lambda: lamods.inv_sqrtm(A0, -1.0), finite)
    probe("inv_sqrtm", "eps_nan", lambda: lamods.inv_sqrtm(A0, float("nan")), finite)
    X0 = base_matrix()
    for case, mut in MATRIX_CASES.items():
        X = mut(X0)
        probe("svd", f"matrix_{case}", lambda X=X: lamods.svd(X), _check_svd(X))
        probe("randomized_svd", case,
              lambda X=X: lamods.randomized_svd(X, 2, n_iter=6, generator=_gen(0)),
              _check_randomized(X, 2))
        probe("pca", case, lambda X=X: lamods.pca(X, 2), _check_pca_fn(X, 2))
    for case, kf in K_CASES.items():
        k = kf(5)
        probe("randomized_svd", case,
              lambda k=k: lamods.randomized_svd(X0, k, n_iter=6, generator=_gen(0)),
              _check_randomized(X0, k if isinstance(k, int) else 0))
        probe("pca", case, lambda k=k: lamods.pca(X0, k), _check_pca_fn(X0, k))
        kk = kf(6)
        probe("topk_eigh", case, lambda k=kk: lamods.topk_eigh(A0, k, generator=_gen(0)),
              _check_topk(A0, kk if isinstance(kk, int) else 0))


# -- fit-style modules ---------------------------------------------------------------
def _check_pca_module(X: Any, k: int) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        from sklearn.decomposition import PCA as SkPCA

        X64 = _t(X).numpy()
        ref = SkPCA(k, svd_solver="full").fit(X64)
        rtol = max(_rtol(X), 1e-6)
        ev = torch.from_numpy(ref.explained_variance_)
        scale = float(ev.max()) if ev.numel() else 1.0
        close(model.explained_variance_, ev, "explained_variance_", rtol=rtol, scale=scale)
        close(model.mean_, torch.from_numpy(ref.mean_), "mean_", rtol=rtol)
        Z = model.transform(X)
        rec = model.inverse_transform(Z)
        ref_rec = torch.from_numpy(ref.inverse_transform(ref.transform(X64)))
        close(rec, ref_rec, "reconstruction", rtol=10 * rtol, scale=float(np.abs(X64).max()))
    return check


def _check_kmeans(X: Any, k: int) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        X64 = _t(X)
        C = model.cluster_centers_.detach().to(F64)
        D = torch.cdist(X64, C).square()
        inertia = D.min(1).values.sum()
        rtol = max(_rtol(X), 1e-6)
        close(model.inertia_.reshape(()), inertia, "inertia_", rtol=10 * rtol,
              scale=float(X64.square().sum()) + 1e-300)
        labels = model.predict(X)
        best = D.gather(1, labels.reshape(-1, 1)).squeeze(1)
        close(best, D.min(1).values, "predict is the nearest center", rtol=10 * rtol,
              scale=float(D.max()) + 1e-300)
        from sklearn.cluster import KMeans as SkKMeans

        ref = SkKMeans(k, n_init=10, random_state=0).fit(X64.numpy())
        if float(inertia) > 1.5 * ref.inertia_ + 1e-9 * float(X64.square().sum()):
            raise Wrong(f"inertia {float(inertia):.4g} > 1.5 x scikit-learn's {ref.inertia_:.4g}")
    return check


def _check_kmeans_step(X: Any, k: int) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        # one mini-batch step from empty counts: every row counted once, finite centres
        X64 = _t(X)
        finite(model.cluster_centers_, "centres")
        close(model.counts_.sum().reshape(1), torch.tensor([float(X64.shape[0])], dtype=F64),
              "counts")
    return check


def _check_kmeans_lloyd(X: Any) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        # a Lloyd fixed point (or max_iter): every centre is the mean of its points
        X64 = _t(X)
        C = model.cluster_centers_.to(F64)
        labels = torch.cdist(X64, C).argmin(1)
        inertia = (X64 - C[labels]).square().sum()
        close(model.inertia_.reshape(1), inertia.reshape(1), "inertia", rtol=max(_rtol(X), 1e-9))
    return check


def _nmf_factors(model: Any, X: Any) -> tuple[Tensor, Tensor, Tensor]:
    """X, W = transform(X) and H in float64, checked finite and non-negative."""
    W = model.transform(X).detach().to(F64)
    H = model.components_.detach().to(F64)
    finite((W, H), "W, H")
    if bool((W < 0).any()) or bool((H < 0).any()):
        raise Wrong("negative factors")
    return _t(X), W, H


def _check_nmf(X: Any) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        X64, W, H = _nmf_factors(model, X)
        if not bool(X64.any()):  # all zero: W H = 0 exactly (scikit-learn gives zeros too)
            if bool(W.any()) or float(model.reconstruction_err_) != 0:
                raise Wrong("non-zero factors of an all-zero matrix")
            return
        from sklearn.decomposition import NMF as SkNMF

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the same algorithm (multiplicative updates) and budget as ours
            ref = SkNMF(2, init="nndsvda", solver="mu", max_iter=500,
                        random_state=0).fit(X64.numpy())
            ref_W = torch.from_numpy(ref.transform(X64.numpy()))
        floor = 1e-6 * float(X64.norm()) + 1e-300
        fit_err = float(model.reconstruction_err_)
        if fit_err > 1.5 * ref.reconstruction_err_ + floor:
            raise Wrong(f"reconstruction_err_ {fit_err:.4g} > 1.5 x scikit-learn's "
                        f"{ref.reconstruction_err_:.4g}")
        err = float((X64 - W @ H).norm())
        ref_err = float((X64 - ref_W @ torch.from_numpy(ref.components_)).norm())
        if err > 1.5 * ref_err + floor:
            raise Wrong(f"transform's reconstruction error {err:.4g} > 1.5 x scikit-learn's "
                        f"{ref_err:.4g}")
    return check


def _check_linreg(X: Any, y: Any, alpha: float) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        from sklearn.linear_model import LinearRegression as SkLR
        from sklearn.linear_model import Ridge

        X64, y64 = _t(X).numpy(), _t(y).numpy()
        ref = (Ridge(alpha=alpha) if alpha else SkLR()).fit(X64, y64)
        out = model.predict(X)
        close(out, torch.from_numpy(ref.predict(X64)).reshape(out.shape), "predictions",
              rtol=max(_rtol(X), 1e-7) * 100, scale=float(np.abs(y64).max()) + 1e-300)
    return check


def _spectral_labels(model: Any, X: Any) -> Tensor:
    """The fitted two-cluster labels, checked for shape and range, with a finite embedding."""
    labels = model.labels_
    if labels.shape != (len(_t(X)),) or int(labels.min()) < 0 or int(labels.max()) >= 2:
        raise Wrong(f"labels {labels}")
    finite(model.embedding_, "embedding_")
    return labels


def _check_spectral(X: Any) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        labels = _spectral_labels(model, X)
        pred = model.predict(X)
        if not bool((pred == labels).all()):
            raise Wrong("predict(X_train) differs from labels_")
    return check


def _check_krr(X: Any, y: Any, scale: float = 1.0) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        from sklearn.kernel_ridge import KernelRidge

        X64, y64 = _t(X).numpy() / scale, _t(y).numpy()
        ref = KernelRidge(alpha=0.5, kernel="rbf", gamma=0.5).fit(X64, y64).predict(X64)
        out = model(X)
        close(out, torch.from_numpy(ref).reshape(out.shape), "predictions",
              rtol=max(_rtol(X), 1e-7) * 100,
              scale=float(np.abs(y64).max()) + 1e-300)
    return check


def _check_nystrom(X: Any, scale: float = 1.0) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        X64 = _t(X) / scale
        Phi = model(X).detach().to(F64)
        K = torch.exp(-torch.cdist(X64, X64).square() / 2)
        close(Phi @ Phi.mT, K, "Phi Phi^T = K with all points as landmarks",
              rtol=max(_rtol(X), 1e-5) * 10, scale=1.0)
    return check


def _check_nmf_stream(X: Any) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        # one online step from NNDSVDa: non-negative, finite, and W H no farther from X
        # than the zero model (the online algorithm has no closed form to compare with)
        X64, W, H = _nmf_factors(model, X)
        if float((X64 - W @ H).norm()) > float(X64.norm()) * (1 + 1e-9) + 1e-300:
            raise Wrong("W H is farther from X than zero")
    return check


def _check_knn(X: Any, k: int) -> Callable[[Any], None]:
    def check(W: Any) -> None:
        from sklearn.neighbors import kneighbors_graph

        X64 = _t(X)
        D = torch.cdist(X64, X64)
        kth = D.sort(1).values[:, k - 1]
        Wd = W.to_dense()
        if not bool(D.sort(1).values[:, k].ne(kth).all()):
            # tied k-th distances: any choice among the ties is a kNN graph; check that
            # W is 0.5 (A + A^T) of one (symmetric, entries in {0, 1/2, 1}, unit diagonal,
            # k neighbours per row at most the k-th distance away)
            ok = (torch.equal(Wd, Wd.mT) and bool(torch.isin(Wd, Wd.new_tensor(
                [0.0, 0.5, 1.0])).all()) and bool((Wd.diagonal() == 1).all())
                and bool(((Wd > 0).sum(1) >= k).all())
                and bool(((Wd == 0) | (D <= kth[:, None]) | (D <= kth[None, :])).all()))
            if not ok:
                raise Wrong("not the affinity of a kNN graph")
            return
        A = kneighbors_graph(X64.numpy(), k, include_self=True).toarray()
        close(Wd, torch.from_numpy(0.5 * (A + A.T)), "kNN affinity", rtol=0, scale=1.0)
    return check


def _check_spectral_sparse(X: Any) -> Callable[[Any], None]:
    def check(model: Any) -> None:
        # the dense path on the same graph is the reference: the same partition
        # (predict on the kNN affinity is the Nystrom extension of an unsymmetrised row, so
        # predict(X_train) may differ from labels_ at a boundary point: a limitation of the
        # kNN extension on both paths, not probed here)
        labels = _spectral_labels(model, X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = lamods.SpectralClustering(**{**model.get_params(),
                                               "eigen_solver": "dense"}).fit(X).labels_
        from sklearn.metrics import adjusted_rand_score

        if adjusted_rand_score(ref.numpy(), labels.numpy()) < 1.0 - 1e-12:
            raise Wrong(f"partition {labels.tolist()} differs from the dense path's "
                        f"{ref.tolist()}")
    return check


#: how much each range case scales the data: kernel lengthscales scale with it, so the
#: probe asks the same well-posed question at another scale
SCALE = {"huge_f32": 1e30, "tiny_f32": 1e-30, "huge_f64": 1e150}


def _fit(est: Callable[[], Any], *args: Any) -> Callable[[], Any]:
    return lambda: est().fit(*args)


def _add_estimators() -> None:
    X0 = base_matrix()
    y0 = X0 @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=F64) + 0.1
    for case, mut in MATRIX_CASES.items():
        X = mut(X0)
        probe("PCA", case, _fit(lambda: lamods.PCA(2), X), _check_pca_module(X, 2))
        probe("KMeans", case, _fit(lambda: lamods.KMeans(3, n_init=3, seed=0), X),
              _check_kmeans(X, 3))
        Xn = X.abs() if isinstance(X, Tensor) and not X.is_complex() and X.dtype != torch.bool \
            else X
        probe("NMF", case, _fit(lambda: lamods.NMF(2, max_iter=500), Xn), _check_nmf(Xn))
        probe("LinearRegression", case, _fit(lambda: lamods.LinearRegression(), X, y0),
              _check_linreg(X, y0, 0.0))
        probe("RidgeRegression", case, _fit(lambda: lamods.RidgeRegression(1.0), X, y0),
              _check_linreg(X, y0, 1.0))
        probe("KMeans.partial_fit", case,
              lambda X=X, c=case: lamods.KMeans(3, init=X0[:3] if c == "valid" else "k-means++",
                                        seed=0).partial_fit(X),
              _check_kmeans_step(X, 3))
        probe("KMeans.fit_batches", case,
              lambda X=X: lamods.KMeans(3, seed=0).fit_batches([X]), _check_kmeans_lloyd(X))
        probe("LinearRegression.partial_fit", case,
              lambda X=X: lamods.LinearRegression().partial_fit(X, y0), _check_linreg(X, y0, 0.0))
        probe("RidgeRegression.partial_fit", case,
              lambda X=X: lamods.RidgeRegression(1.0).partial_fit(X, y0),
              _check_linreg(X, y0, 1.0))
        c = SCALE.get(case, 1.0)
        probe("SpectralClustering", case,
              _fit(lambda c=c: lamods.SpectralClustering(2, gamma=0.05 / c**2, seed=0,
                                                         n_init=3), X),
              _check_spectral(X))
        probe("KernelRidgeHead", case,
              _fit(lambda c=c: lamods.KernelRidgeHead("rbf", 0.5, lengthscale=c), X, y0),
              _check_krr(X, y0, c))
        n = X.shape[0] if isinstance(X, Tensor) and X.dim() == 2 else 12
        # all the rows as centres: exact kernel ridge
        probe("NystromKernelRidge", case,
              _fit(lambda n=n, c=c: lamods.NystromKernelRidge("rbf", 0.5, n_centers=max(n, 1),
                                                              maxiter=100, seed=0,
                                                              lengthscale=c), X, y0),
              _check_krr(X, y0, c))
        probe("NystromFeatures", case,
              _fit(lambda n=n, c=c: lamods.NystromFeatures(5, max(n, 1), lengthscale=c,
                                                           seed=0), X),
              _check_nystrom(X, c))
        # this session's entry points: the streamed fits, the sparse spectral path
        probe("NystromKernelRidge.partial_fit", case,
              lambda X=X, n=n, c=c: lamods.NystromKernelRidge(
                  "rbf", 0.5, n_centers=max(n, 1), seed=0, lengthscale=c).partial_fit(X, y0),
              _check_krr(X, y0, c))
        probe("NMF.partial_fit", case, lambda Xn=Xn: lamods.NMF(2, seed=0).partial_fit(Xn),
              _check_nmf_stream(Xn))
        probe("knn_affinity", case, lambda X=X: classic.knn_affinity(X, 3), _check_knn(X, 3))
        probe("SpectralClustering[sparse]", case,
              _fit(lambda: lamods.SpectralClustering(2, affinity="nearest_neighbors",
                                                     n_neighbors=6, eigen_solver="sparse",
                                                     seed=0, n_init=3), X),
              _check_spectral_sparse(X))
    # targets
    for case, ymut in (("y_nan", lambda y: _with(y, float("nan"))), ("y_2d", lambda y: y[:, None]),
                       ("y_short", lambda y: y[:-1]), ("y_int", lambda y: y.round().long()),
                       ("y_complex", lambda y: y.to(torch.complex128)),
                       ("y_numpy", lambda y: y.numpy()), ("y_string", lambda y: "y")):
        y = ymut(y0)
        for name, est, alpha in (("LinearRegression", lambda: lamods.LinearRegression(), 0.0),
                                 ("RidgeRegression", lambda: lamods.RidgeRegression(1.0), 1.0)):
            yy = y if case != "y_2d" else y

            def chk(model: Any, y=yy, alpha=alpha) -> None:
                _check_linreg(X0, _t(y), alpha)(model)
            probe(name, case, _fit(est, X0, y), chk)
        probe("KernelRidgeHead", case,
              _fit(lambda: lamods.KernelRidgeHead("rbf", 0.5, lengthscale=1.0), X0, y),
              lambda model, y=y: _check_krr(X0, _t(y).reshape(len(X0), -1).squeeze(-1)
                                            if _t(y).shape[0] == len(X0) else _t(y))(model))
    probe("RidgeRegression.partial_fit", "two_batches",
          lambda: lamods.RidgeRegression(1.0).partial_fit(X0[:5], y0[:5]).partial_fit(X0[5:],
                                                                                     y0[5:]),
          _check_linreg(X0, y0, 1.0))
    probe("RidgeRegression.partial_fit", "width_change",
          lambda: lamods.RidgeRegression(1.0).partial_fit(X0[:5], y0[:5]).partial_fit(
              X0[5:, :3], y0[5:]),
          lambda out: (_ for _ in ()).throw(Wrong("streamed a batch of another width")))
    # score on a target of another shape
    lr = lamods.LinearRegression().fit(X0, y0)
    probe("LinearRegression", "score_y_2d", lambda: lr.score(X0, y0[:, None]),
          lambda r: None if abs(r - 1.0) < 1e-3 else (_ for _ in ()).throw(Wrong(f"R^2 {r}")))
    # unfitted use, and fitted use with bad inputs
    fitted = {
        "PCA": (lambda: lamods.PCA(2), "transform"),
        "KMeans": (lambda: lamods.KMeans(3, seed=0), "predict"),
        "NMF": (lambda: lamods.NMF(2), "transform"),
        "LinearRegression": (lambda: lamods.LinearRegression(), "predict"),
        "SpectralClustering": (lambda: lamods.SpectralClustering(2, gamma=0.05, seed=0),
                               "predict"),
        "KernelRidgeHead": (lambda: lamods.KernelRidgeHead("rbf", 0.5), "forward"),
        "NystromFeatures": (lambda: lamods.NystromFeatures(5, 6, seed=0), "forward"),
    }
    for name, (make, method) in fitted.items():
        probe(name, "unfitted", lambda m=make, meth=method: getattr(m(), meth)(X0),
              lambda out: (_ for _ in ()).throw(Wrong("an unfitted module answered")))
        args = (X0.abs(), y0) if name in ("LinearRegression", "KernelRidgeHead") else (
            X0.abs(),)
        model = make().fit(*args)
        ref = getattr(model, method)(X0.abs()).detach()
        for case in ("ndim1", "nan", "inf", "empty_rows", "complex", "string", "none",
                     "wide"):
            Xb = MATRIX_CASES[case](X0.abs())

            def wrong(out: Any) -> None:
                raise Wrong("a fitted module answered on a bad input")
            if case == "ndim1":
                # one sample as a 1-D row is a valid (*, d) input: must equal row 0
                def wrong(out: Any, ref=ref) -> None:  # noqa: F811
                    close(out.reshape(ref[0].shape).to(F64), ref[0].to(F64), "row 0",
                          rtol=1e-6, scale=float(ref.abs().max()) + 1e-300)
            if case == "empty_rows":
                def wrong(out: Any) -> None:  # noqa: F811
                    if out.shape[0] != 0:
                        raise Wrong("rows from nothing")
            probe(name, f"{method}_{case}", lambda m=model, meth=method, Xb=Xb:
                  getattr(m, meth)(Xb), wrong)
        # a state_dict of another size (4 features instead of 5; other k where there is one)
        def other_model(name=name, make=make, args=args) -> Any:
            if name == "PCA":
                other = lamods.PCA(3)
            elif name == "KMeans":
                other = lamods.KMeans(4, seed=0)
            elif name == "NystromFeatures":
                other = lamods.NystromFeatures(4, 6, seed=0)
            else:
                other = make()
            return other.fit(*(a[:, :4] if a.dim() == 2 else a for a in args))

        def load(make=make, other_model=other_model, method=method) -> Any:
            other = other_model()
            m = make()
            m.load_state_dict(other.state_dict())
            return getattr(m, method)(X0.abs()[:, :4]), getattr(other, method)(X0.abs()[:, :4])

        def check_other(out: Any) -> None:
            close(out[0], out[1].to(F64), "the loaded state answers as the module it came from",
                  rtol=2 * _rtol(out[0]), scale=float(out[1].abs().max()) + 1e-300)
        probe(name, "state_dict_other_size", load, check_other)


# -- layers and functions ------------------------------------------------------------
def _check_formula(fn: Callable[[Tensor], Tensor], X: Any,
                   gram: bool = False) -> Callable[[Any], None]:
    """A layer's output against its formula. Layers keep torch's semantics: a row fed
    NaN/inf may hold anything, but must not spread into the other rows (for a Gram
    matrix: entries (i, j) with both rows finite must be right)."""
    def check(out: Any) -> None:
        X64 = _t(X)
        ok = torch.isfinite(X64).all(-1) if X64.dim() >= 2 else None
        clean = torch.where(torch.isfinite(X64), X64, torch.zeros_like(X64))
        ref = fn(clean)
        rows = None
        if ok is not None and not bool(ok.all()):
            rows = (ok[..., :, None] & ok[..., None, :]) if gram else ok
        finite_ref = ref[rows] if rows is not None else ref
        close(out, ref, "value", rtol=max(_rtol(X), 1e-6) * 10, rows=rows, overflow_nan_ok=True,
              scale=float(finite_ref.abs().max()) + 1e-300 if finite_ref.numel() else 1.0)
    return check


def _unit(X: Tensor) -> Tensor:
    """Rows to unit length with no floor on the norm (F.normalize floors it at 1e-12);
    zero rows stay zero."""
    n = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
    return X / torch.where(n > 0, n, torch.ones_like(n))


def _add_layers() -> None:
    X0 = base_matrix(8, 8)
    torch.manual_seed(0)
    lin = lamods.ManualLinear(8, 3, dtype=F64)
    mlp_ = lamods.ManualMLP([8, 6, 3], dtype=F64)
    low = lamods.LowRankLinear(8, 3, 2, dtype=F64)
    gauss = lamods.GaussianRandomProjection(8, 4, seed=0, dtype=F64)
    sparse = lamods.SparseRandomProjection(8, 4, seed=0, dtype=F64)
    srht = lamods.SRHTProjection(8, 4, seed=0, dtype=F64)
    rff = lamods.RandomFourierFeatures(8, 16, seed=0, dtype=F64)
    W, b = lin.weight.detach(), lin.bias.detach()
    kernels = {
        "RBFKernel": (lamods.RBFKernel(1.5, dtype=F64),
                      lambda X: torch.exp(-torch.cdist(X, X).square() / (2 * 1.5**2))),
        "LaplacianKernel": (layers.LaplacianKernel(2.0, dtype=F64),
                            lambda X: torch.exp(-torch.cdist(X, X, p=1) / 2.0)),
        "PolynomialKernel": (layers.PolynomialKernel(2, 0.1, 1.0),
                             lambda X: (0.1 * X @ X.mT + 1) ** 2),
        "LinearKernel": (layers.LinearKernel(), lambda X: X @ X.mT),
        "CosineKernel": (layers.CosineKernel(), lambda X: _unit(X) @ _unit(X).mT),
    }
    modules = {
        "ManualLinear": (lin, lambda X: X @ W.mT + b),
        "ManualMLP": (mlp_, lambda X: mlp_.to_sequential().to(F64)(X)),
        "LowRankLinear": (low, lambda X: low.to_linear().to(F64)(X)),
        "GaussianRandomProjection": (gauss, lambda X: X @ gauss.weight.mT),
        "SparseRandomProjection": (sparse, lambda X: X @ sparse.to_dense().to(F64).mT),
        "SRHTProjection": (srht, lambda X: X @ srht(torch.eye(8, dtype=F64))),
        "RandomFourierFeatures": (rff, lambda X: math.sqrt(2 / 16) * torch.cos(
            X @ rff.weight.mT / rff.lengthscale.detach() + rff.bias)),
        "fwht": (None, lambda X: X @ layers.hadamard_matrix(X.shape[-1], dtype=F64)
                 / math.sqrt(X.shape[-1])),
        "sq_distances": (None, lambda X: torch.cdist(X, X).square()),
    }
    for case, mut in MATRIX_CASES.items():
        X = mut(X0)
        for name, (mod, ref) in {**modules, **kernels}.items():
            fn = lamods.fwht if name == "fwht" else sq_distances if name == "sq_distances" \
                else mod

            def call(X=X, fn=fn) -> Any:
                return fn(X)
            if ref is None:
                probe(name, case, call, finite)
                continue
            probe(name, case, call, _check_formula(ref, X, gram=name in kernels or
                                                   name == "sq_distances"))
    probe("johnson_lindenstrauss_min_dim", "n_one",
          lambda: lamods.johnson_lindenstrauss_min_dim(1), lambda k: None if k >= 1 else (
              _ for _ in ()).throw(Wrong(f"k = {k} for one sample")))
    for case, (n, eps) in {"n_zero": (0, 0.1), "eps_zero": (10, 0.0), "eps_one": (10, 1.0),
                           "eps_nan": (10, float("nan")), "n_float": (10.5, 0.1),
                           "valid": (1000, 0.5)}.items():
        def check_jl(k: Any, n=n, eps=eps) -> None:
            ref = math.ceil(4 * math.log(n) / (eps**2 / 2 - eps**3 / 3))
            if k != ref:
                raise Wrong(f"k = {k}, expected {ref}")
        probe("johnson_lindenstrauss_min_dim", case,
              lambda n=n, eps=eps: lamods.johnson_lindenstrauss_min_dim(n, eps), check_jl)
    for n in (0, 3, 6, -4):
        probe("hadamard_matrix", f"n_{n}", lambda n=n: layers.hadamard_matrix(n),
              lambda H: None if H.shape[0] & (H.shape[0] - 1) == 0 and H.shape[0] > 0 else (
                  _ for _ in ()).throw(Wrong("a Hadamard matrix of a non-power-of-two")))
    for case, s in {"valid": torch.tensor([3.0, 2.0, 1.0]), "nan": torch.tensor([3.0, float(
            "nan")]), "zeros": torch.zeros(3), "negative": torch.tensor([3.0, -1.0]),
                    "2d": torch.ones(2, 2)}.items():
        def check_er(r: Any, s=s) -> None:
            c = (s**2).cumsum(0) / (s**2).sum()
            ref = int((c < 0.9 - 1e-12).sum()) + 1
            if r != ref:
                raise Wrong(f"rank {r}, expected {ref}")
        probe("energy_rank", case, lambda s=s: layers.energy_rank(s, 0.9), check_er)
    # least squares and projections
    A = base_matrix(10, 4)
    yv = A @ torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=F64)
    for case, mut in MATRIX_CASES.items():
        Am = mut(A)
        for method in ("cholesky", "qr", "svd"):
            def check_ls(B: Any, Am=Am) -> None:
                X64 = _t(Am)
                ref = torch.linalg.pinv(X64) @ _t(yv)[: X64.shape[-2]]
                close((X64 @ B.detach().to(F64).reshape(ref.shape)), X64 @ ref,
                      "fitted values X b", rtol=max(_rtol(Am), 1e-8) * 1e3,
                      scale=float(_t(yv).abs().max()))
            probe(f"lstsq[{method}]", case,
                  lambda Am=Am, m=method: lamods.lstsq(Am, yv[:Am.shape[-2]] if isinstance(
                      Am, Tensor) and Am.dim() >= 2 else yv, method=m), check_ls, "lstsq")
        probe("gram_schmidt", case, lambda Am=Am: lamods.gram_schmidt(Am),
              lambda QR, Am=Am: close(QR[0].detach().to(F64) @ QR[1].detach().to(F64),
                                      _t(Am), "QR = A", rtol=10 * _rtol(Am),
                                      scale=float(_t(Am).abs().max()) + 1e-300))
        for method in ("gram_schmidt", "qr"):
            def check_orth(Q: Any, Am=Am) -> None:
                A64, Q64 = _t(Am), Q.detach().to(F64)
                eye = torch.eye(Q64.shape[-1], dtype=F64).expand(Q64.shape[:-2] + (-1, -1))
                close(Q64.mT @ Q64, eye, "Q^T Q = I", rtol=10 * _rtol(Am), scale=1.0)
                close(Q64 @ (Q64.mT @ A64), A64, "span(Q) holds A", rtol=10 * _rtol(Am),
                      scale=float(A64.abs().max()) + 1e-300)
            probe(f"orthonormalize[{method}]", case,
                  lambda Am=Am, m=method: lamods.orthonormalize(Am, method=m), check_orth,
                  "orthonormalize")

        def check_proj(P: Any, Am=Am) -> None:
            A64 = _t(Am)
            x64 = _t(yv)[: A64.shape[-2]]
            ref = A64 @ (torch.linalg.pinv(A64) @ x64)
            close(P, ref, "projection onto span(A)", rtol=1e-6,
                  scale=float(x64.abs().max()))
        probe("project", case, lambda Am=Am: lamods.project(
            yv[:Am.shape[-2]] if isinstance(Am, Tensor) and Am.dim() >= 2 else yv, Am),
            check_proj)
    for case, alpha in {"alpha_neg": -1.0, "alpha_nan": float("nan"),
                        "alpha_tensor_neg": torch.tensor(-1.0),
                        "alpha_tensor_nan": torch.tensor(float("nan")),
                        "alpha_inf": float("inf")}.items():
        probe("lstsq", case, lambda alpha=alpha: lamods.lstsq(A, yv, alpha),
              lambda B: (_ for _ in ()).throw(Wrong("accepted a bad alpha")))
    # spectral functions
    Wm = classic.affinity_matrix(base_matrix(8, 3), gamma=0.1)
    for case, Wb in {"valid": Wm, "nonsymmetric": Wm + torch.triu(torch.ones_like(Wm), 1),
                     "negative": Wm - 0.5, "nan": _sym_with(Wm, float("nan"))}.items():
        def check_emb(E: Any, Wb=Wb) -> None:
            finite(E)
            L = torch.eye(len(Wb), dtype=F64) - Wb / torch.outer(Wb.sum(1), Wb.sum(1)).sqrt()
            ev = torch.linalg.eigvalsh(L)
            if bool((ev < -1e-9).any()):
                raise Wrong("an affinity whose Laplacian is not PSD was accepted")
            if not torch.allclose(Wb, Wb.mT):
                raise Wrong("a non-symmetric affinity was accepted")
        probe("spectral_embedding", f"precomputed_{case}",
              lambda Wb=Wb: lamods.spectral_embedding(Wb, 2, affinity="precomputed"), check_emb)
    # recommender inputs
    mf = recsys.MatrixFactorization(5, 7, 3)
    for case, (u, i) in {"valid": (torch.tensor([0, 4]), torch.tensor([1, 6])),
                         "user_out_of_range": (torch.tensor([5]), torch.tensor([0])),
                         "item_negative": (torch.tensor([0]), torch.tensor([-1])),
                         "float_ids": (torch.tensor([0.5]), torch.tensor([1.0])),
                         "shape_mismatch": (torch.tensor([0, 1]), torch.tensor([1, 2, 3]))
                         }.items():
        def check_mf(out: Any, u=u, i=i) -> None:
            finite(out)
            if out.shape != u.shape:
                raise Wrong("predictions of another shape")
        probe("MatrixFactorization", case, lambda u=u, i=i: mf(u, i), check_mf)
    for case, (p, t) in {"valid": (torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])),
                         "shape_mismatch": (torch.tensor([1.0, 2.0]), torch.tensor([1.0])),
                         "broadcast": (torch.tensor([1.0, 2.0]), torch.tensor([[1.0], [2.0]])),
                         "empty": (torch.zeros(0), torch.zeros(0)),
                         "nan": (torch.tensor([float("nan")]), torch.tensor([1.0]))}.items():
        probe("rmse", case, lambda p=p, t=t: recsys.rmse(p, t),
              lambda r, p=p, t=t: close(r.reshape(()), ((p - t) ** 2).mean().sqrt().to(F64),
                                        "rmse", rtol=1e-6, scale=1.0))
    probe("MovieLens", "missing_root",
          lambda: recsys.MovieLens("/nonexistent/lamods-data", download=False),
          lambda out: (_ for _ in ()).throw(Wrong("loaded data from nowhere")))
    probe("MovieLens", "unknown_variant",
          lambda: recsys.MovieLens("/nonexistent/lamods-data", variant="7m", download=False),
          lambda out: (_ for _ in ()).throw(Wrong("loaded an unknown variant")))
    # implicit feedback: fit_wals' reg_exponent (alpha = 0: one exact ridge step), EASE's reg
    pairs = recsys.Ratings(torch.tensor([0, 0, 1, 2, 3, 3]), torch.tensor([0, 2, 1, 2, 3, 0]),
                           torch.ones(6, dtype=F64), n_users=4, n_items=4)
    dense = torch.zeros(4, 4, dtype=F64)
    dense[pairs.users, pairs.items] = 1.0
    for case, e in {"valid": 1.0, "zero": 0.0, "negative": -1.0, "nan": math.nan,
                    "inf": math.inf, "string": "1"}.items():
        def call_wals(e: Any = e) -> tuple[Tensor, Tensor, Tensor]:
            m = recsys.MatrixFactorization(4, 4, 2, biased=False, dtype=F64)
            Y0 = m.item_factors.detach().clone()
            recsys.fit_wals(m, pairs, epochs=1, reg=0.3, alpha=0.0, reg_exponent=e)
            return m.user_factors.detach(), Y0, torch.tensor(float(e), dtype=F64)

        def check_wals(out: Any) -> None:
            X, Y0, e = out
            finite(X)
            # x_u = (Y^T Y + 0.3 n_u^e I)^-1 Y^T p_u
            lam = 0.3 * dense.sum(1) ** e
            ref = torch.stack([torch.linalg.solve(Y0.T @ Y0 + lam[u] * torch.eye(2, dtype=F64),
                                                  Y0.T @ dense[u]) for u in range(4)])
            close(X, ref, "fit_wals user step", rtol=1e-8)
        probe("fit_wals", f"reg_exponent_{case}", call_wals, check_wals)
    for case, reg in {"valid": 2.0, "zero": 0.0, "negative": -1.0, "nan": math.nan,
                      "inf": math.inf}.items():
        def check_ease(model: Any) -> None:
            P = torch.linalg.inv(dense.T @ dense + 2.0 * torch.eye(4, dtype=F64))
            ref = torch.eye(4, dtype=F64) - P / P.diagonal()
            close(model.weights_, ref, "EASE weights", rtol=1e-8)
        probe("EASE", f"reg_{case}",
              lambda reg=reg: recsys.EASE(reg=reg, dtype=F64).fit(pairs), check_ease)
    # model surgery
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    for case, kw in {"rank_zero": {"rank": 0}, "rank_float": {"rank": 1.5},
                     "energy_two": {"energy": 2.0}, "both": {"rank": 2, "energy": 0.5},
                     "neither": {}}.items():
        probe("compress", case, lambda kw=kw: lamods.compress(net, inplace=False, **kw),
              lambda out: (_ for _ in ()).throw(Wrong("compressed with a bad argument")))
    for case, kw in {"rank_zero": {"rank": 0}, "rank_negative": {"rank": -2},
                     "alpha_nan": {"rank": 2, "alpha": float("nan")}}.items():
        probe("add_adapters", case, lambda kw=kw: lamods.add_adapters(net, inplace=False, **kw),
              lambda out: (_ for _ in ()).throw(Wrong("adapted with a bad argument")))


# -- conjugate gradient ---------------------------------------------------------------
def _check_cg(A: Any, B: Any) -> Callable[[Any], None]:
    def check(X: Any) -> None:
        # the solution of A X = B; cg stops at a relative residual of 1e-6
        ref = torch.linalg.solve(_t(A), _t(B))
        tol = 1e-2 if isinstance(B, Tensor) and B.dtype == torch.float32 else 1e-4
        close(X, ref, "cg solution", rtol=tol)
    return check


def _add_cg() -> None:
    A0 = base_sym()
    b0 = base_matrix(6, 2, seed=3)
    for case, mut in SYM_CASES.items():
        A = mut(A0)
        b = b0.to(A.dtype) if isinstance(A, Tensor) and A.is_floating_point() else b0
        probe("cg", f"A_{case}", lambda A=A, b=b: lamods.cg(A, b), _check_cg(A, b))
    probe("cg", "A_sparse", lambda: lamods.cg(A0.to_sparse(), b0), _check_cg(A0, b0))
    probe("cg", "A_callable", lambda: lamods.cg(lambda V: A0 @ V, b0), _check_cg(A0, b0))
    for case, mut in MATRIX_CASES.items():
        B = mut(b0)
        probe("cg", f"B_{case}", lambda B=B: lamods.cg(A0, B), _check_cg(A0, B))


# -- convolution, tensors and text (the learners' modules) ---------------------------
#: mutations of an image batch (N, C, H, W)
IMAGE_CASES: dict[str, Callable[[Tensor], Any]] = {
    "valid": lambda x: x,
    "single_image": lambda x: x[0],
    "ndim2": lambda x: x[0, 0],
    "batch5d": lambda x: x.unsqueeze(0),
    "wrong_channels": lambda x: torch.cat([x, x], 1),
    "empty_batch": lambda x: x[:0],
    "too_small": lambda x: x[..., :1, :1],
    "int": lambda x: (x * 3).round().long(),
    "complex": lambda x: x.to(torch.complex128),
    "float32": lambda x: x.float(),
    "nan": lambda x: _with(x, float("nan")),
    "inf": lambda x: _with(x, float("inf")),
    "noncontiguous": lambda x: x.transpose(-1, -2).contiguous().transpose(-1, -2),
    "numpy": lambda x: x.numpy(),
    "none": lambda x: None,
}


def _check_conv(conv: Any, x: Any) -> Callable[[Any], None]:
    """Against nn.Conv2d with the same weights, image by image (a NaN image may hold
    anything, but must not reach the other images)."""
    def check(out: Any) -> None:
        x64 = _t(x)
        ref_mod = conv.to_conv2d().to(F64)
        batched = x64.dim() >= 4
        lead = x64.shape[:-3]
        xb = x64.reshape(-1, *x64.shape[-3:]) if batched else x64.unsqueeze(0)
        ok = torch.isfinite(xb).flatten(1).all(1) if xb.shape[0] else torch.ones(0, dtype=bool)
        clean = torch.where(torch.isfinite(xb), xb, torch.zeros_like(xb))
        ref = ref_mod(clean).detach()
        ref = ref.reshape(*lead, *ref.shape[1:]) if batched else ref[0]
        ok = ok.reshape(lead) if batched else ok
        rows = ok if batched and not bool(ok.all()) else None
        close(out, ref, "convolution", rtol=max(_rtol(x), 1e-6) * 10, rows=rows,
              scale=float(ref.abs().max()) + 1e-300 if ref.numel() else 1.0)
    return check


def _add_learners() -> None:
    from lamods.classic import text
    from lamods.decomp import tensor
    from lamods.layers.conv import ManualConv2d
    from lamods.layers.tensorized import CPLinear, TuckerLinear

    torch.manual_seed(0)
    conv = ManualConv2d(3, 4, 3, padding=1, dtype=F64)
    x0 = torch.randn(2, 3, 6, 6, generator=_gen(3), dtype=F64)
    for case, mut in IMAGE_CASES.items():
        x = mut(x0)
        probe("ManualConv2d", case, lambda x=x: conv(x), _check_conv(conv, x))
    for case, kw in {"channels_groups": {"in_channels": 3, "out_channels": 4, "groups": 2},
                     "kernel_zero": {"in_channels": 3, "out_channels": 4, "kernel_size": 0},
                     "stride_zero": {"in_channels": 3, "out_channels": 4, "stride": 0},
                     "padding_word": {"in_channels": 3, "out_channels": 4, "padding": "full"},
                     "channels_float": {"in_channels": 3.0, "out_channels": 4}}.items():
        kw = {"kernel_size": 3, **kw}
        probe("ManualConv2d", f"ctor_{case}", lambda kw=kw: ManualConv2d(**kw),
              lambda out: (_ for _ in ()).throw(Wrong("built with a bad argument")))
    # tensorized layers: inputs (*, prod(in_shape))
    X0 = base_matrix(8, 12)
    tucker = TuckerLinear((3, 4), 5, (2, 2, 2), dtype=F64)
    cpl = CPLinear((3, 4), 5, 3, dtype=F64)
    for name, mod in (("TuckerLinear", tucker), ("CPLinear", cpl)):
        W = mod.to_linear().to(F64)
        for case in ("valid", "ndim1", "batch", "empty_rows", "int", "complex", "float32",
                     "nan", "noncontiguous", "wide", "string"):
            X = MATRIX_CASES[case](X0)
            probe(name, case, lambda X=X, mod=mod: mod(X),
                  _check_formula(lambda X, W=W: W(X).detach(), X))
    # tensor decompositions of a 3-way tensor with exact CP rank 2
    g = _gen(5)
    A, B, C = (torch.randn(n, 2, generator=g, dtype=F64) for n in (4, 5, 3))
    T0 = torch.einsum("ir,jr,kr->ijk", A, B, C)
    tensor_cases: dict[str, Callable[[Tensor], Any]] = {
        "valid": lambda T: T, "matrix": lambda T: T[0], "vector": lambda T: T[0, 0],
        "empty": lambda T: T[:0], "int": lambda T: (T * 3).round().long(),
        "complex": lambda T: T.to(torch.complex128), "float32": lambda T: T.float(),
        "nan": lambda T: _with(T, float("nan")), "inf": lambda T: _with(T, float("inf")),
        "zeros": lambda T: torch.zeros_like(T), "huge_f32": lambda T: T.float() * 1e30,
        "tiny_f32": lambda T: T.float() * 1e-30, "numpy": lambda T: T.numpy(),
    }
    for case, mut in tensor_cases.items():
        T = mut(T0)

        def check_cp(res: Any, T=T) -> None:
            T64 = _t(T)
            rec = tensor.cp_reconstruct(res.weights, res.factors).detach().to(F64)
            close(rec, T64, "CP reconstruction of an exact rank-2 tensor",
                  rtol=max(_rtol(T), 1e-8) * 100, scale=float(T64.abs().max()) + 1e-300)

        def check_tucker(res: Any, T=T) -> None:
            T64 = _t(T)
            rec = tensor.tucker_reconstruct(res.core, res.factors).detach().to(F64)
            close(rec, T64, "Tucker reconstruction at full multilinear rank",
                  rtol=max(_rtol(T), 1e-8) * 100, scale=float(T64.abs().max()) + 1e-300)
        probe("cp_als", case, lambda T=T: tensor.cp_als(T, 2), check_cp)
        probe("hosvd", case, lambda T=T: tensor.hosvd(T, (2, 2, 2)), check_tucker)
        probe("hooi", case, lambda T=T: tensor.hooi(T, (2, 2, 2)), check_tucker)
    for case, r in {"rank_zero": 0, "rank_negative": -1, "rank_float": 2.0}.items():
        probe("cp_als", case, lambda r=r: tensor.cp_als(T0, r),
              lambda out: (_ for _ in ()).throw(Wrong("decomposed with a bad rank")))
    for case, r in {"ranks_zero": (0, 2, 2), "ranks_too_large": (9, 2, 2),
                    "ranks_short": (2, 2)}.items():
        probe("hosvd", case, lambda r=r: tensor.hosvd(T0, r),
              lambda out: (_ for _ in ()).throw(Wrong("decomposed with bad ranks")))
    # text
    docs = ["the cat sat on the mat", "the dog sat", "cats and dogs", "a mat"]
    for case, d in {"valid": docs, "empty_list": [], "not_strings": [1, 2],
                    "one_string": "the cat sat", "empty_docs": ["", ""]}.items():
        def check_vocab(v: Any, d=d) -> None:
            from sklearn.feature_extraction.text import CountVectorizer

            ref = sorted(CountVectorizer().fit(d).vocabulary_)
            if list(v) != ref:
                raise Wrong(f"vocabulary {list(v)[:5]}... differs from scikit-learn's")
        probe("build_vocabulary", case, lambda d=d: text.build_vocabulary(d), check_vocab)
    vocab = text.build_vocabulary(docs)
    counts = text.count_matrix(docs, vocab)

    def check_tfidf(out: Any, counts: Any = counts) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer

        c = _t(counts.to_dense() if isinstance(counts, Tensor) and counts.is_sparse_csr
               else counts)
        ref = TfidfTransformer().fit_transform(c.numpy()).toarray()
        X = out[0]
        X = X.to_dense() if X.layout != torch.strided else X
        close(X, torch.from_numpy(ref), "tf-idf", rtol=1e-8, scale=1.0)
    for case, cm in {"valid": counts, "dense": counts.to_dense(),
                     "negative": -counts.to_dense(), "nan": _with(counts.to_dense(), float("nan")),
                     "ndim1": counts.to_dense()[0], "int": counts.to_dense().long()}.items():
        probe("tfidf", case, lambda cm=cm: text.tfidf(cm), lambda out, cm=cm: check_tfidf(out, cm))
    D = base_matrix(6, 4)
    for case, (q, d, top) in {"valid": (D[:2], D, 3), "top_zero": (D[:2], D, 0),
                              "top_too_large": (D[:2], D, 7), "width": (D[:2, :3], D, 2),
                              "nan": (_with(D[:2], float("nan")), D, 2),
                              "ndim1": (D[0], D, 2)}.items():
        def check_search(out: Any, q=q, d=d, top=top) -> None:
            sims = _unit(_t(q).reshape(-1, _t(q).shape[-1])) @ _unit(_t(d)).mT
            ref = sims.topk(top, dim=-1).values
            close(out[0].reshape(ref.shape), ref, "top similarities", rtol=1e-8, scale=1.0)
        probe("cosine_search", case, lambda q=q, d=d, top=top: text.cosine_search(q, d, top),
              check_search)


_add_decomp()
_add_estimators()
_add_layers()
_add_cg()
_add_learners()


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------
def run(p: Probe) -> tuple[str, str]:
    """``(outcome, detail)`` of one probe (module docstring)."""
    names = (p.entry.split("[")[0], *p.names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = p.call()
        except CLEAR as err:
            msg = str(err)
            if any(n in msg for n in names) or LAMODS_MESSAGE.match(msg):
                return "error", f"{type(err).__name__}: {msg.splitlines()[0][:200]}"
            return "obscure", f"{type(err).__name__} not naming {names[0]}: {msg[:200]}"
        except Exception as err:  # noqa: BLE001 - classifying is the point
            return "obscure", f"{type(err).__name__}: {str(err)[:200]}"
        try:
            p.check(out)
        except Wrong as err:
            return "wrong", str(err)
        except Exception as err:  # noqa: BLE001 - the result could not even be checked
            return "wrong", f"unusable result ({type(err).__name__}: {str(err)[:200]})"
    return "correct", ""


def counts() -> dict[str, int]:
    tally = {"error": 0, "correct": 0, "wrong": 0, "obscure": 0}
    for p in PROBES:
        tally[run(p)[0]] += 1
    return tally


if __name__ == "__main__":
    import sys

    tally = {"error": 0, "correct": 0, "wrong": 0, "obscure": 0}
    for p in PROBES:
        outcome, detail = run(p)
        tally[outcome] += 1
        if outcome in ("wrong", "obscure") or "-v" in sys.argv:
            print(f"{outcome:8s} {p.id}: {detail}")
    print("\n| probes | clear errors | correct results | silent wrong | obscure errors |")
    print("|---|---|---|---|---|")
    print(f"| {len(PROBES)} | {tally['error']} | {tally['correct']} | {tally['wrong']} | "
          f"{tally['obscure']} |")
