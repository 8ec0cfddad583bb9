"""Classic algorithms vs scikit-learn: k-means, NMF on MovieLens-100K, least squares.

    python -m benchmarks.bench_classics [--repeats 3] [--threads N] [--quick]

Every ratio is ours / scikit-learn measured in the same run with interleaved
medians (``time_pair``); below 1 means we are faster. Quality columns sit
beside the times: k-means inertia, NMF reconstruction error ``||X - WH||_F``
(KL: sqrt(2 D)), least-squares relative residual ``||Xb - y|| / ||y||``. On
CUDA the reference is still scikit-learn on the CPU.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.decomposition import NMF as SkNMF
from sklearn.linear_model import LinearRegression as SkLinear
from sklearn.linear_model import Ridge as SkRidge

from benchmarks._timing import devices, machine, markdown_table, time_pair
from lamods.classic import NMF, KMeans, lstsq

_ML_ROOT = Path(os.environ.get("LAMODS_DATA", "/work/shared/data"))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _row(case, device, t_ours, t_ref, q_ours, q_ref, target="<= 1.0"):
    return [case, device, f"{t_ours * 1e3:.0f}", f"{t_ref * 1e3:.0f}", f"{t_ours / t_ref:.2f}",
            q_ours, q_ref, target]


def bench_kmeans(device: str, repeats: int, n: int, d: int, k: int) -> list[list[str]]:
    g = np.random.default_rng(0)
    centers = g.normal(size=(2 * k, d)) * 2
    Xnp = (centers[g.integers(0, 2 * k, n)] + g.normal(size=(n, d)) * 2).astype(np.float32)
    X = torch.from_numpy(Xnp).to(device)
    rows = []
    for n_init in (1, 3):
        kw = {"n_init": n_init, "max_iter": 100, "tol": 1e-4}

        def ours(kw=kw):
            return KMeans(k, seed=0, device=device, **kw).fit(X)

        def ref(kw=kw):
            return SkKMeans(k, random_state=0, **kw).fit(Xnp)

        t_o, t_r = time_pair(ours, ref, device=device, repeats=repeats, warmup=1)
        o, r = ours(), ref()
        rows.append(_row(f"KMeans k={k}, n_init={n_init}, max_iter=100 ({n}x{d})", device,
                         t_o, t_r, f"inertia {float(o.inertia_):.4e} ({int(o.n_iter_)} it)",
                         f"inertia {r.inertia_:.4e} ({r.n_iter_} it)"))
    # same initial centers: both run the identical Lloyd iterations (per-iteration speed)
    init = Xnp[:k].copy()

    def ours_fixed():
        return KMeans(k, init=torch.from_numpy(init).to(device), max_iter=30, tol=0.0,
                      device=device).fit(X)

    def ref_fixed():
        return SkKMeans(k, init=init, n_init=1, max_iter=30, tol=0.0).fit(Xnp)

    t_o, t_r = time_pair(ours_fixed, ref_fixed, device=device, repeats=repeats, warmup=1)
    o, r = ours_fixed(), ref_fixed()
    rows.append(_row(f"KMeans k={k}, same init, max_iter=30 ({n}x{d})", device, t_o, t_r,
                     f"inertia {float(o.inertia_):.4e} ({int(o.n_iter_)} it)",
                     f"inertia {r.inertia_:.4e} ({r.n_iter_} it)"))
    return rows


def _movielens() -> tuple[np.ndarray, str]:
    try:
        from lamods.recsys import MovieLens

        data = MovieLens(_ML_ROOT, download=False)
        R = torch.zeros(data.n_users, data.n_items)
        R[data.users, data.items] = data.ratings
        return R.numpy(), f"MovieLens-100K {data.n_users}x{data.n_items}"
    except Exception as err:  # data absent: a random matrix of the same shape and density
        g = np.random.default_rng(0)
        R = np.zeros((943, 1682), dtype=np.float32)
        mask = g.random(R.shape) < 100000 / R.size
        R[mask] = g.integers(1, 6, mask.sum())
        return R, f"random 943x1682, 6.3% dense (MovieLens absent: {type(err).__name__})"


def bench_nmf(device: str, repeats: int, k: int, max_iter: int) -> tuple[list[list[str]], str]:
    Rnp, label = _movielens()
    R = torch.from_numpy(Rnp).to(device)
    rows = []
    for solver, loss in (("mu", "frobenius"), ("hals", "frobenius"), ("mu", "kullback-leibler")):
        def ours(solver=solver, loss=loss):
            return NMF(k, solver=solver, beta_loss=loss, max_iter=max_iter, tol=0.0,
                       device=device).fit(R)

        def ref(solver=solver, loss=loss):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return SkNMF(k, solver="cd" if solver == "hals" else solver, beta_loss=loss,
                             max_iter=max_iter, tol=0.0, random_state=0).fit(Rnp)

        t_o, t_r = time_pair(ours, ref, device=device, repeats=repeats, warmup=1)
        o, r = ours(), ref()
        sk_name = "cd" if solver == "hals" else solver
        rows.append(_row(f"NMF {solver} (sklearn {sk_name}) {loss}, k={k}, {max_iter} it",
                         device, t_o, t_r, f"err {float(o.reconstruction_err_):.2f}",
                         f"err {r.reconstruction_err_:.2f}"))
    return rows, label


def bench_lstsq(device: str, repeats: int, n: int, d: int) -> list[list[str]]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    y = X @ torch.randn(d, generator=g) + 0.5 * torch.randn(n, generator=g)
    Xnp, ynp = X.numpy(), y.numpy()
    Xd, yd = X.to(device), y.to(device)

    def resid(b) -> str:
        b = torch.as_tensor(b).double().cpu()
        r = torch.linalg.vector_norm(X.double() @ b - y.double()) / torch.linalg.vector_norm(
            y.double())
        return f"resid {float(r):.6f}"

    cases = [
        ("lstsq cholesky alpha=1 vs Ridge(solver='cholesky')", "cholesky", 1.0,
         lambda: SkRidge(1.0, fit_intercept=False, solver="cholesky").fit(Xnp, ynp).coef_),
        ("lstsq qr alpha=0 vs LinearRegression (scipy gelsd)", "qr", 0.0,
         lambda: SkLinear(fit_intercept=False).fit(Xnp, ynp).coef_),
        ("lstsq cholesky alpha=0 vs LinearRegression (scipy gelsd)", "cholesky", 0.0,
         lambda: SkLinear(fit_intercept=False).fit(Xnp, ynp).coef_),
    ]
    rows = []
    for name, method, alpha, ref in cases:
        def ours(method=method, alpha=alpha):
            return lstsq(Xd, yd, alpha, method=method)

        t_o, t_r = time_pair(ours, ref, device=device, repeats=repeats, warmup=1)
        rows.append(_row(f"{name} ({n}x{d})", device, t_o, t_r, resid(ours()), resid(ref())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS/OpenMP threads for both sides (default: as is)")
    parser.add_argument("--quick", action="store_true", help="smaller problems")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    torch.manual_seed(0)
    km = (20000, 32, 10) if args.quick else (100000, 64, 16)
    ls = (20000, 128) if args.quick else (100000, 512)
    print(f"Machine: {machine()}\n")
    header = ["case", "device", "ours ms", "sklearn ms", "ratio", "ours quality",
              "sklearn quality", "target"]
    rows = []
    nmf_label = ""
    for device in devices():
        rows += bench_kmeans(device, args.repeats, *km)
        nmf_rows, nmf_label = bench_nmf(device, args.repeats, 20, 200)
        rows += nmf_rows
        rows += bench_lstsq(device, args.repeats, *ls)
    print(f"float32; median of {args.repeats} interleaved runs after one warm-up; NMF data: "
          f"{nmf_label}; NMF tol=0 (both run every iteration), init nndsvda; k-means on a "
          f"{2 * km[2]}-component Gaussian mixture, tol=1e-4 (iterations may differ).\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
