"""Decompositions: PCA fit vs scikit-learn / torch.pca_lowrank, eigh/svd backward vs torch.linalg.

    python -m benchmarks.bench_decomp [--repeats 5] [--quick]

Every ratio is ours / reference measured in the same run with interleaved
medians (``time_pair``); below 1 means we are faster. Subspace errors are
``sin`` of the largest principal angle between a method's top-k components
and the float64 SVD's.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.decomposition import PCA as SkPCA

from benchmarks._timing import devices, machine, markdown_table, time_pair
from lamods.decomp import PCA, eigh, svd


def _pca_data(n: int, d: int, device: str) -> torch.Tensor:
    """float32 data with a slowly decaying spectrum (power law) plus noise and an offset."""
    g = torch.Generator().manual_seed(0)
    scales = (1.0 + torch.arange(d, dtype=torch.float64)) ** -0.8
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    X = torch.randn(n, d, dtype=torch.float64, generator=g) * scales @ Q.T + 1.0
    return X.float().to(device)


def _sin_theta(V: torch.Tensor, V_ref: torch.Tensor) -> float:
    """sin of the largest principal angle between row spaces of V (k, d) and V_ref (k, d)."""
    V = torch.linalg.qr(V.double().cpu().T).Q
    s = torch.linalg.svdvals(V_ref.T @ V)
    return float((1 - s.min().clamp(max=1) ** 2).clamp_min(0).sqrt())


def bench_pca(device: str, repeats: int, n: int, d: int, k: int) -> list[list[str]]:
    X = _pca_data(n, d, device)
    Xnp = X.cpu().numpy()
    Xc64 = X.double().cpu()
    Xc64 = Xc64 - Xc64.mean(0)
    V_ref = torch.linalg.svd(Xc64, full_matrices=False).Vh[:k].T  # (d, k)

    def ours(solver):
        def run():
            return PCA(k, solver=solver, seed=0, device=device).fit(X)
        return run

    def sk(solver):
        def run():
            return SkPCA(k, svd_solver=solver, random_state=0).fit(Xnp)
        return run

    def lowrank():
        return torch.pca_lowrank(X, q=k, center=True)

    pairs = [
        ("auto (covariance)", "auto", "sklearn covariance_eigh", sk("covariance_eigh"), "<= 1.0"),
        ("full", "full", "sklearn full", sk("full"), "<= 1.0"),
        ("randomized", "randomized", "sklearn randomized", sk("randomized"), "<= 1.0"),
        ("randomized", "randomized", "torch.pca_lowrank (q=k, niter=2)", lowrank, ""),
    ]
    if device != "cpu":
        pairs = [p for p in pairs if not p[2].startswith("sklearn")] + [
            ("auto (covariance)", "auto", "sklearn covariance_eigh (CPU)", sk("covariance_eigh"),
             "")]
    rows = []
    for ours_name, solver, ref_name, ref_fn, target in pairs:
        t_ours, t_ref = time_pair(ours(solver), ref_fn, device=device, repeats=repeats, warmup=1)
        err_ours = _sin_theta(ours(solver)().components_, V_ref)
        res = ref_fn()
        if isinstance(res, SkPCA):
            V = torch.from_numpy(res.components_)
        else:
            V = res[2].T
        err_ref = _sin_theta(V, V_ref)
        rows.append([f"ours {ours_name} vs {ref_name}", device, f"{t_ours * 1e3:.1f}",
                     f"{t_ref * 1e3:.1f}", f"{t_ours / t_ref:.2f}", f"{err_ours:.1e}",
                     f"{err_ref:.1e}", target])
    return rows


def _sym_separated(batch: tuple[int, ...], n: int, device: str, dtype: torch.dtype):
    """Symmetric matrices with eigenvalues 1..n (gaps >= 1/n relative)."""
    Q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=torch.float64))
    lam = torch.arange(1.0, n + 1, dtype=torch.float64)
    A = (Q * lam) @ Q.mT
    return ((A + A.mT) / 2).to(device=device, dtype=dtype)


def bench_backward(device: str, repeats: int) -> list[list[str]]:
    rows = []
    cases = [
        ("eigh", (), 256, torch.float32), ("eigh", (), 256, torch.float64),
        ("eigh", (512,), 16, torch.float32),
        ("svd", (), 256, torch.float32), ("svd", (64,), 32, torch.float32),
    ]
    for op, batch, n, dtype in cases:
        if op == "eigh":
            A = _sym_separated(batch, n, device, dtype)
            ours_fn, ref_fn = eigh, torch.linalg.eigh
        else:
            A = torch.randn(*batch, n + n // 2, n, device=device, dtype=dtype)
            ours_fn = svd

            def ref_fn(a):
                return torch.linalg.svd(a, full_matrices=False)
        G = [torch.randn_like(t) for t in ref_fn(A)]

        def fwd_bwd(fn, A=A, G=G):
            a = A.clone().requires_grad_()
            outs = fn(a)
            # sign-invariant upstream: quadratic in the vectors
            loss = sum(((o * o) * g).sum() for o, g in zip(outs, G))

            def backward():
                torch.autograd.grad(loss, a, retain_graph=True)
            return backward

        t_ours, t_ref = time_pair(fwd_bwd(ours_fn), fwd_bwd(ref_fn), device=device,
                                  repeats=repeats * 4, warmup=2)
        shape = "x".join(str(s) for s in (*batch, *A.shape[-2:]))
        rows.append([f"{op} backward", shape, device, str(dtype).removeprefix("torch."),
                     f"{t_ours * 1e3:.2f}", f"{t_ref * 1e3:.2f}", f"{t_ours / t_ref:.2f}",
                     "<= 1.2"])
    # batched small eigh, forward only
    A = _sym_separated((10000,), 8, device, torch.float32)
    for label, fn in (("eigh forward (validated)", lambda: eigh(A)),
                      ("eigh forward (validate=False)", lambda: eigh(A, validate=False))):
        t_ours, t_ref = time_pair(fn, lambda: torch.linalg.eigh(A), device=device,
                                  repeats=repeats * 4, warmup=2)
        rows.append([label, "10000x8x8", device, "float32", f"{t_ours * 1e3:.2f}",
                     f"{t_ref * 1e3:.2f}", f"{t_ours / t_ref:.2f}", "<= 1.2"])
    return rows


def _degenerate_inputs() -> list[tuple[str, torch.Tensor, int]]:
    """(kind, input, k): well-defined top-k projector losses on degenerate spectra."""
    g = torch.Generator().manual_seed(1)
    cases = []
    for lam in ([1, 2, 3, 5, 5, 5], [1, 1, 1, 4, 4, 4], [1, 2, 3, 5, 5 + 1e-6, 5 + 2e-6],
                [1, 2, 3, 5, 5 + 1e-10, 5 + 2e-10], [0, 0, 0, 2, 3, 3]):
        L = torch.tensor(lam, dtype=torch.float64)
        cases.append(("eigh", torch.diag(L), 3))
        Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=g))
        A = (Q * L) @ Q.T
        cases.append(("eigh", (A + A.T) / 2, 3))
    X = torch.randn(5, 10, dtype=torch.float64, generator=g)
    C = (X - X.mean(0)).T @ (X - X.mean(0)) / 4
    cases.append(("eigh", (C + C.T) / 2, 3))
    cases.append(("svd", torch.randn(15, 3, dtype=torch.float64, generator=g)
                  @ torch.randn(3, 15, dtype=torch.float64, generator=g), 3))
    cases.append(("svd", torch.diag(torch.tensor([3.0, 2, 2, 2, 1], dtype=torch.float64)), 4))
    cases.append(("svd", torch.diag(torch.tensor([2.0, 1, 0, 0], dtype=torch.float64)), 2))
    return cases


def _projector_loss(kind: str, k: int, G: torch.Tensor, outs) -> torch.Tensor:
    U = outs.eigenvectors[:, -k:] if kind == "eigh" else outs.U[:, :k]
    return ((U @ U.T) * G).sum()


def bench_degenerate() -> list[list[str]]:
    counts = {"ours": [0, 0], "torch.linalg": [0, 0]}  # finite, correct
    cases = _degenerate_inputs()
    for kind, A, k in cases:
        G = torch.randn(A.shape[0], A.shape[0], dtype=torch.float64)
        fns = {"ours": eigh if kind == "eigh" else svd,
               "torch.linalg": torch.linalg.eigh if kind == "eigh" else torch.linalg.svd}
        # reference: central differences of the (well-defined) projector loss, symmetric
        # perturbations for eigh
        ref = torch.zeros_like(A)
        h = 1e-6
        for i in range(A.shape[0]):
            for j in range(A.shape[1]):
                E = torch.zeros_like(A)
                E[i, j] = h
                if kind == "eigh":
                    E = (E + E.T) / 2
                ref[i, j] = (_projector_loss(kind, k, G, fns["torch.linalg"](A + E))
                             - _projector_loss(kind, k, G, fns["torch.linalg"](A - E))) / (2 * h)
        for label, fn in fns.items():
            a = A.clone().requires_grad_()
            _projector_loss(kind, k, G, fn(a)).backward()
            gr = a.grad
            if kind == "eigh":  # compare on symmetric perturbations
                gr = (gr + gr.T) / 2
                gr = gr * (2 - torch.eye(A.shape[0], dtype=gr.dtype)) / 2 + torch.diag(
                    gr.diagonal()) / 2
            if torch.isfinite(gr).all():
                counts[label][0] += 1
                if float((gr - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max())):
                    counts[label][1] += 1
    n = len(cases)
    return [[label, f"{c[0]}/{n}", f"{c[1]}/{n}"] for label, c in counts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller PCA problem (4000 x 256)")
    args = parser.parse_args()
    torch.manual_seed(0)
    n, d, k = (4000, 256, 16) if args.quick else (20000, 512, 32)
    print(f"Machine: {machine()}\n")

    rows = []
    for device in devices():
        rows += bench_pca(device, args.repeats, n, d, k)
    print(f"PCA fit, ({n}, {d}) float32, k={k}; median of {args.repeats} after warm-up; "
          "sin theta = subspace error vs float64 SVD.\n")
    print(markdown_table(["case", "device", "ours ms", "ref ms", "ratio", "ours sin theta",
                          "ref sin theta", "target"], rows))

    rows = []
    for device in devices():
        rows += bench_backward(device, args.repeats)
    print("\nForward + backward on well-separated spectra (eigenvalues 1..n), and batched "
          "small eigh forward.\n")
    print(markdown_table(["case", "shape", "device", "dtype", "ours ms", "torch ms", "ratio",
                          "target"], rows))

    print("\nDegenerate inputs (exact repeats, gaps 1e-6/1e-10, zero blocks, rank-deficient "
          "covariance n<d, rank-3 15x15): top-k projector loss, float64; correct = within "
          "1e-5 of central differences.\n")
    print(markdown_table(["implementation", "finite gradients", "correct gradients"],
                         bench_degenerate()))


if __name__ == "__main__":
    main()
