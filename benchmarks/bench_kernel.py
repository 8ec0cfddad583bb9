"""Kernel heads against scikit-learn: accuracy and fit time on MNIST, RBF Gram matrix time.

    python -m benchmarks.bench_kernel [--train 4000] [--test 1000] [--repeats 3]

Table 1: on the local MNIST subset (``torchvision.datasets.MNIST(root=<repo>/../shared/data,
download=False)``, the first ``--train`` training and ``--test`` test images, pixels scaled to
[0, 1]; scikit-learn's digits with a printed note if absent), test accuracy and fit time
(fit + predict, interleaved medians after one warm-up) of

- ours :class:`KernelRidgeHead` (exact, one-hot targets) vs scikit-learn's ``KernelRidge(rbf)``
  and ``SVC(rbf)``;
- ours :class:`RandomFourierFeatures` (orthogonal) + :class:`RidgeRegression` vs ``RBFSampler`` +
  ``RidgeClassifier`` at equal feature count ``D``;
- ours :class:`NystromFeatures` + :class:`RidgeRegression` vs ``Nystroem`` + ``RidgeClassifier``.

Both sides use the same ``gamma = 1 / (2 l^2)``, ``l`` from the median heuristic (the median
pairwise distance of 1,000 training points), computed once. Ratios are ours / reference
(below 1 means we are faster). On CUDA, a kernel ridge fit through Nystrom features on
1,000,000 synthetic points is timed as well (skipped on the CPU).

Table 1b (``--rff-split``, or alone with ``--rff-only``): the RFF rows split into the feature
map (our construction + ``forward`` on train and test, against ``RBFSampler`` fit + transform)
and the ridge solve on fixed features (our ``RidgeRegression``, against ``RidgeClassifier`` fit +
predict), plus whole RFF + ridge with plain Gaussian frequencies (``orthogonal=False``, the
method of ``RBFSampler``).

Table 2: RBF Gram matrix of 10000 x 10000 points (``--gram-features`` wide, float32) against
``sklearn.metrics.pairwise.rbf_kernel``.
"""

from __future__ import annotations

import os

# Note [OpenMP spin-wait] in benchmarks/bench_scale.py: torch and scikit-learn interleave in
# one process here, so their OpenMP pools wait passively
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._timing import (  # noqa: E402
    devices,
    load,
    machine,
    markdown_table,
    time_blocks,
    time_pair,
)
from lamods import RidgeRegression  # noqa: E402
from lamods.layers import (  # noqa: E402
    KernelRidgeHead,
    NystromFeatures,
    RandomFourierFeatures,
    RBFKernel,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_data(n_train: int, n_test: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """``(name, X_train, y_train, X_test, y_test)``: MNIST subset, else digits (with a note)."""
    try:
        from torchvision.datasets import MNIST

        tr = MNIST(root=str(DATA), train=True, download=False)
        te = MNIST(root=str(DATA), train=False, download=False)
        Xtr = tr.data[:n_train].reshape(-1, 784).float().div(255).numpy()
        Xte = te.data[:n_test].reshape(-1, 784).float().div(255).numpy()
        return ("MNIST", Xtr, tr.targets[:n_train].numpy(), Xte, te.targets[:n_test].numpy())
    except (ImportError, RuntimeError, OSError) as exc:
        from sklearn.datasets import load_digits

        print(f"Note: MNIST not found under {DATA} ({type(exc).__name__}); using scikit-learn's "
              f"digits instead.\n")
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(X))
        n_tr = int(0.8 * len(X))
        return "digits", X[perm[:n_tr]], y[perm[:n_tr]], X[perm[n_tr:]], y[perm[n_tr:]]


def median_lengthscale(X: np.ndarray, n: int = 1000) -> float:
    """Median heuristic: ``l`` = median pairwise distance of (up to) ``n`` rows."""
    x = torch.from_numpy(X[:n]).double()
    d = torch.cdist(x, x)
    return float(d[torch.triu_indices(len(x), len(x), 1).unbind()].median())


def ridge_fit_predict(Z: torch.Tensor, Y: torch.Tensor, Zq: torch.Tensor,
                      alpha: float) -> torch.Tensor:
    r"""lamods' :class:`~lamods.RidgeRegression` (intercept, Cholesky of
    :math:`Z_c^T Z_c + \alpha I`, as ``RidgeClassifier``): fit on ``Z``, predict ``Zq``."""
    return RidgeRegression(alpha=alpha).fit(Z, Y).predict(Zq)


def _acc(pred: torch.Tensor | np.ndarray, y: np.ndarray) -> float:
    p = pred.argmax(-1).cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    return float((p == y).mean())


def accuracy_table(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray,
                   lengthscale: float, dims: list[int], repeats: int, alpha_exact: float,
                   alpha_feat: float, svc_c: float, seeds: tuple[int, ...]) -> list[list[str]]:
    from sklearn.kernel_approximation import Nystroem, RBFSampler
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import RidgeClassifier
    from sklearn.svm import SVC

    gamma = 1.0 / (2 * lengthscale**2)
    d = Xtr.shape[1]
    k = int(ytr.max()) + 1
    onehot = np.eye(k, dtype=np.float32)[ytr]
    rows: list[list[str]] = []

    def add(case: str, D: object, device: str, ours, ref, target: str,
            seeds: tuple[int, ...] = (0,)) -> None:
        with torch.no_grad():
            a_o = float(np.mean([_acc(ours(seed=s), yte) for s in seeds]))
            a_r = float(np.mean([_acc(ref(seed=s), yte) for s in seeds]))
            t_o, t_r = time_pair(ours, ref, device=device, repeats=repeats, warmup=1)
        rows.append([case, str(D), device, f"{a_o:.4f}", f"{a_r:.4f}", f"{t_o:.3f}",
                     f"{t_r:.3f}", f"{t_o / t_r:.2f}", target])

    def sk_kr(seed=0):
        return KernelRidge(alpha=alpha_exact, kernel="rbf", gamma=gamma).fit(
            Xtr, onehot).predict(Xte).argmax(1)

    def sk_svc(seed=0):
        return SVC(C=svc_c, kernel="rbf", gamma=gamma).fit(Xtr, ytr).predict(Xte)

    for device in devices():
        xtr, xte = torch.from_numpy(Xtr).to(device), torch.from_numpy(Xte).to(device)
        Ytr = torch.from_numpy(onehot).to(device)

        def ours_exact(xtr=xtr, xte=xte, Ytr=Ytr, device=device, seed=0):
            head = KernelRidgeHead("rbf", alpha=alpha_exact, lengthscale=lengthscale,
                                   device=device)
            return head.fit(xtr, Ytr)(xte)

        if device == "cpu":
            add("KernelRidgeHead vs KernelRidge(rbf)", "exact", device, ours_exact, sk_kr,
                "acc >=")
            add("KernelRidgeHead vs SVC(rbf)", "exact", device, ours_exact, sk_svc,
                "acc >=, ratio < 1")
        else:  # references stay on the CPU
            add("KernelRidgeHead vs SVC(rbf) (CPU)", "exact", device, ours_exact, sk_svc,
                "acc >=, ratio < 1")

        for D in dims:
            def ours_rff(D=D, xtr=xtr, xte=xte, Ytr=Ytr, device=device, seed=0):
                rff = RandomFourierFeatures(d, D, lengthscale, orthogonal=True, seed=seed,
                                            device=device)
                return ridge_fit_predict(rff(xtr), Ytr, rff(xte), alpha_feat)

            def sk_rff(D=D, seed=0):
                s = RBFSampler(gamma=gamma, n_components=D, random_state=seed)
                return RidgeClassifier(alpha=alpha_feat).fit(s.fit_transform(Xtr), ytr).predict(
                    s.transform(Xte))

            def ours_ny(D=D, xtr=xtr, xte=xte, Ytr=Ytr, device=device, seed=0):
                ny = NystromFeatures(d, D, "rbf", lengthscale=lengthscale, seed=seed,
                                     device=device).fit(xtr)
                return ridge_fit_predict(ny(xtr), Ytr, ny(xte), alpha_feat)

            def sk_ny(D=D, seed=0):
                s = Nystroem(kernel="rbf", gamma=gamma, n_components=D, random_state=seed)
                return RidgeClassifier(alpha=alpha_feat).fit(s.fit_transform(Xtr), ytr).predict(
                    s.transform(Xte))

            add("RFF + ridge vs RBFSampler + RidgeClassifier", D, device, ours_rff, sk_rff,
                "acc >=", seeds)
            if D <= len(Xtr):
                add("Nystrom + ridge vs Nystroem + RidgeClassifier", D, device, ours_ny, sk_ny,
                    "acc >=", seeds)
    return rows


def rff_split_table(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray,
                    lengthscale: float, dims: list[int], repeats: int,
                    alpha: float) -> list[list[str]]:
    """RFF + ridge split into the feature map and the ridge solve, ours vs scikit-learn (CPU)."""
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import RidgeClassifier

    gamma = 1.0 / (2 * lengthscale**2)
    d = Xtr.shape[1]
    xtr, xte = torch.from_numpy(Xtr), torch.from_numpy(Xte)
    Ytr = torch.from_numpy(np.eye(int(ytr.max()) + 1, dtype=np.float32)[ytr])
    rows: list[list[str]] = []
    for D in dims:
        for ortho in (True, False):
            def ours_map(D=D, ortho=ortho):
                rff = RandomFourierFeatures(d, D, lengthscale, orthogonal=ortho, seed=0)
                return rff(xtr), rff(xte)

            def sk_map(D=D):
                s = RBFSampler(gamma=gamma, n_components=D, random_state=0)
                return s.fit_transform(Xtr), s.transform(Xte)

            with torch.no_grad():
                (Ztr, Zte), (Str, Ste) = ours_map(), sk_map()
                what = "orthogonal" if ortho else "Gaussian"
                t_o, t_r = time_pair(ours_map, sk_map, device="cpu", repeats=repeats, warmup=1)
                rows.append([f"feature map ({what}): construct + transform", str(D),
                             f"{t_o:.3f}", f"{t_r:.3f}", f"{t_o / t_r:.2f}", ""])
                if ortho:
                    t_o, t_r = time_pair(
                        lambda Ztr=Ztr, Zte=Zte: ridge_fit_predict(Ztr, Ytr, Zte, alpha),
                        lambda Str=Str, Ste=Ste: RidgeClassifier(alpha=alpha).fit(
                            Str, ytr).predict(Ste), device="cpu", repeats=repeats, warmup=1)
                    rows.append(["ridge fit + predict on the features", str(D), f"{t_o:.3f}",
                                 f"{t_r:.3f}", f"{t_o / t_r:.2f}", ""])
                else:
                    def ours_all(D=D):
                        rff = RandomFourierFeatures(d, D, lengthscale, seed=0)
                        return ridge_fit_predict(rff(xtr), Ytr, rff(xte), alpha)

                    def sk_all(D=D):
                        s = RBFSampler(gamma=gamma, n_components=D, random_state=0)
                        return RidgeClassifier(alpha=alpha).fit(s.fit_transform(Xtr),
                                                                ytr).predict(s.transform(Xte))

                    acc = f"{_acc(ours_all(), yte):.4f} / {_acc(sk_all(), yte):.4f}"
                    t_o, t_r = time_pair(ours_all, sk_all, device="cpu", repeats=repeats,
                                         warmup=1)
                    rows.append(["RFF (Gaussian) + ridge vs RBFSampler + RidgeClassifier",
                                 str(D), f"{t_o:.3f}", f"{t_r:.3f}", f"{t_o / t_r:.2f}", acc])
                    t_o, t_r = time_blocks(ours_all, sk_all, device="cpu", repeats=repeats)
                    rows.append(["the same, timed in blocks (each side alone; best of 2)",
                                 str(D), f"{t_o:.3f}", f"{t_r:.3f}", f"{t_o / t_r:.2f}", ""])
    return rows


def million_point_fit(n: int, d: int, m: int, alpha: float) -> list[str] | None:
    """Nystrom kernel ridge on ``n`` synthetic points on CUDA: one timed fit (after warm-up)."""
    if not torch.cuda.is_available():
        return None
    gen = torch.Generator(device="cuda").manual_seed(0)
    X = torch.randn(n, d, device="cuda", generator=gen)
    w = torch.randn(d, 1, device="cuda", generator=gen)
    y = torch.sin(X @ w / math.sqrt(d)) + 0.1 * torch.randn(n, 1, device="cuda", generator=gen)
    l = math.sqrt(d)  # noqa: E741

    def fit() -> torch.Tensor:
        ny = NystromFeatures(d, m, "rbf", lengthscale=l, seed=0, device="cuda").fit(X[:100_000])
        Z = ny(X)
        return ridge_fit_predict(Z, y, Z[:1000], alpha)

    with torch.no_grad():
        fit()
        torch.cuda.synchronize()
        start = time.perf_counter()
        pred = fit()
        torch.cuda.synchronize()
        t = time.perf_counter() - start
    r2 = 1 - float(((pred - y[:1000]) ** 2).mean() / y[:1000].var())
    return [f"{n:,}", str(d), str(m), "cuda", f"{t:.2f}", f"{r2:.3f}", "< 60 s"]


def gram_table(n: int, d: int, repeats: int, lengthscale: float) -> list[list[str]]:
    from sklearn.metrics.pairwise import rbf_kernel

    gamma = 1.0 / (2 * lengthscale**2)
    x_cpu = torch.rand(n, d)
    x_np = x_cpu.numpy()
    rows = []
    for device in devices():
        x = x_cpu.to(device)
        k = RBFKernel(lengthscale, device=device)
        with torch.no_grad():
            err = (k(x[:500]).cpu().double()
                   - torch.from_numpy(rbf_kernel(x_np[:500], gamma=gamma))).abs().max()
            t_o, t_r = time_pair(lambda k=k, x=x: k(x), lambda: rbf_kernel(x_np, gamma=gamma),
                                 device=device, repeats=repeats, warmup=1)
        rows.append([f"{n} x {n}", str(d), device, f"{t_o:.3f}", f"{t_r:.3f}",
                     f"{t_o / t_r:.2f}", f"{float(err):.1e}", "<= 1"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alpha-exact", type=float, default=0.1)
    parser.add_argument("--alpha-features", type=float, default=0.1)
    parser.add_argument("--svc-c", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=3,
                        help="random-feature accuracies are means over this many seeds")
    parser.add_argument("--gram-rows", type=int, default=10000)
    parser.add_argument("--gram-features", type=int, default=784)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-gram", action="store_true")
    parser.add_argument("--rff-split", action="store_true", help="add table 1b")
    parser.add_argument("--rff-only", action="store_true", help="table 1b alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"Machine: {machine()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}; "
          f"load {load()}\n")
    if args.rff_split or args.rff_only:
        name, Xtr, ytr, Xte, yte = load_data(args.train, args.test)
        l = median_lengthscale(Xtr)  # noqa: E741
        print(f"RFF + ridge split ({name}, {len(Xtr)} train / {len(Xte)} test, l = {l:.3f}, "
              f"alpha = {args.alpha_features}; seed 0; median of {args.repeats}).\n")
        print(markdown_table(["part", "D", "ours s", "ref s", "ratio", "acc ours / ref"],
                             rff_split_table(Xtr, ytr, Xte, yte, l, args.dims, args.repeats,
                                             args.alpha_features)))
        print()
        if args.rff_only:
            return
    if not args.skip_accuracy:
        name, Xtr, ytr, Xte, yte = load_data(args.train, args.test)
        l = median_lengthscale(Xtr)  # noqa: E741
        print(f"{name}: {len(Xtr)} train / {len(Xte)} test, {Xtr.shape[1]} features; median "
              f"heuristic l = {l:.3f}, gamma = 1/(2 l^2) = {1 / (2 * l * l):.5f} on both sides; "
              f"alpha = {args.alpha_exact} (exact), {args.alpha_features} (features), SVC C = "
              f"{args.svc_c}. Random-feature accuracies: means over seeds 0..{args.seeds - 1} "
              f"on each side. Fit time = fit + predict, median of {args.repeats} interleaved "
              f"runs after one warm-up (seed 0); scikit-learn runs on the CPU.\n")
        print(markdown_table(
            ["case", "D", "device", "acc ours", "acc ref", "ours s", "ref s", "ratio", "target"],
            accuracy_table(Xtr, ytr, Xte, yte, l, args.dims, args.repeats, args.alpha_exact,
                           args.alpha_features, args.svc_c, tuple(range(args.seeds)))))
        print()
        row = million_point_fit(args.million, 64, 2048, 1e-3)
        if row is None:
            print(f"Nystrom kernel ridge on {args.million:,} synthetic points: skipped "
                  f"(no CUDA device).\n")
        else:
            print(markdown_table(["points", "d", "landmarks", "device", "fit s", "R^2 (1k)",
                                  "target"], [row]))
            print()
    if not args.skip_gram:
        l = math.sqrt(args.gram_features / 6)  # noqa: E741  (median distance of U(0,1)^d)
        print(f"RBF Gram matrix of uniform X ({args.gram_rows}, {args.gram_features}) float32, "
              f"l = {l:.3f}, vs sklearn.metrics.pairwise.rbf_kernel; max abs error on 500 rows.\n")
        print(markdown_table(["n", "d", "device", "ours s", "sklearn s", "ratio", "max err",
                              "target"],
                             gram_table(args.gram_rows, args.gram_features,
                                        args.repeats, l)))


if __name__ == "__main__":
    main()
