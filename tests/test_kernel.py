"""Kernels, random Fourier features, Nystrom features and the kernel ridge head."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import pairwise

from lamods.layers import (
    CosineKernel,
    KernelRidgeHead,
    LaplacianKernel,
    LinearKernel,
    NystromFeatures,
    PolynomialKernel,
    RandomFourierFeatures,
    RBFKernel,
    kernel_ridge,
    make_kernel,
)

D64 = torch.float64


def _data(n: int = 30, m: int = 20, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, d, dtype=D64), torch.randn(m, d, dtype=D64)


# ---------------------------------------------------------------------------
# Gram matrices against scikit-learn
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kernel", "reference"),
    [
        (RBFKernel(1.7, dtype=D64), lambda a, b: pairwise.rbf_kernel(a, b, gamma=1 / (2 * 1.7**2))),
        (LaplacianKernel(2.5, dtype=D64), lambda a, b: pairwise.laplacian_kernel(a, b, gamma=0.4)),
        (PolynomialKernel(3, 0.5, 2.0),
         lambda a, b: pairwise.polynomial_kernel(a, b, degree=3, gamma=0.5, coef0=2.0)),
        (PolynomialKernel(2), lambda a, b: pairwise.polynomial_kernel(a, b, degree=2)),
        (LinearKernel(), pairwise.linear_kernel),
        (CosineKernel(), pairwise.cosine_similarity),
    ],
    ids=["rbf", "laplacian", "poly", "poly_default_gamma", "linear", "cosine"],
)
def test_gram_matches_sklearn(kernel, reference) -> None:
    X, Y = _data()
    X[3] = 0.0  # a zero row (cosine similarity 0)
    torch.testing.assert_close(kernel(X, Y), torch.from_numpy(reference(X.numpy(), Y.numpy())))
    torch.testing.assert_close(kernel(X), torch.from_numpy(reference(X.numpy(), X.numpy())))


@pytest.mark.parametrize("cls", [RBFKernel, LaplacianKernel, PolynomialKernel, LinearKernel,
                                 CosineKernel])
def test_blocks_batches_and_symmetry(cls) -> None:
    X = torch.randn(3, 40, 4, dtype=D64)
    Y = torch.randn(25, 4, dtype=D64)  # batch dims broadcast
    kw = {"dtype": D64} if cls in (RBFKernel, LaplacianKernel) else {}
    full, blocked = cls(**kw), cls(block_elements=7 * 25, **kw)
    K = full(X, Y)
    assert K.shape == (3, 40, 25)
    torch.testing.assert_close(blocked(X, Y), K)
    torch.testing.assert_close(K[1], full(X[1], Y))
    S = cls(block_elements=3 * 3 * 40, **kw)(X)
    assert torch.equal(S, S.mT)
    torch.testing.assert_close(S, full(X, X))


def test_rbf_psd_and_unit_diagonal_with_near_duplicates() -> None:
    X = 1e4 + torch.randn(200, 3) * 1e-3  # cancellation-prone: |x|^2 >> |x - y|^2
    X = torch.cat([X, X[:50]])
    K = RBFKernel(1e-3)(X)
    assert torch.equal(K, K.mT)
    assert bool((K <= 1).all()) and torch.equal(K.diagonal(), torch.ones(250))
    assert float(torch.linalg.eigvalsh(K.double()).min()) > -1e-3 * 250


def test_learnable_lengthscale_gets_gradient() -> None:
    k = RBFKernel(1.0, learnable_lengthscale=True)
    assert isinstance(k.log_lengthscale, torch.nn.Parameter)
    k(torch.randn(5, 2)).sum().backward()
    assert k.log_lengthscale.grad is not None and torch.isfinite(k.log_lengthscale.grad)
    assert "log_lengthscale" in RBFKernel(2.0).state_dict()


# ---------------------------------------------------------------------------
# Random Fourier features
# ---------------------------------------------------------------------------
def _rff_error(D: int, orthogonal: bool, seed: int, X: torch.Tensor) -> float:
    rff = RandomFourierFeatures(X.shape[1], D, lengthscale=2.0, orthogonal=orthogonal,
                                seed=seed, dtype=D64)
    Z = rff(X)
    return float((Z @ Z.T - RBFKernel(2.0, dtype=D64)(X)).abs().mean())


def test_rff_error_decreases_with_features() -> None:
    X = torch.randn(60, 6, dtype=D64)
    small = sum(_rff_error(256, False, s, X) for s in range(3)) / 3
    large = sum(_rff_error(4096, False, s, X) for s in range(3)) / 3
    assert large < 0.5 * small  # ~ 1/sqrt(D): expect a factor 4
    assert large < 0.02


def test_orthogonal_rff_has_lower_error() -> None:
    X = torch.randn(60, 8, dtype=D64)
    plain = sum(_rff_error(64, False, s, X) for s in range(10)) / 10
    ortho = sum(_rff_error(64, True, s, X) for s in range(10)) / 10
    assert ortho < plain


def test_rff_buffers_seed_and_shapes() -> None:
    a = RandomFourierFeatures(5, 37, seed=3, orthogonal=True)
    b = RandomFourierFeatures(5, 37, seed=3, orthogonal=True)
    assert a.weight.shape == (37, 5) and a.bias.shape == (37,)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert {"weight", "bias", "log_lengthscale"} <= set(a.state_dict())
    assert bool((a.bias >= 0).all()) and bool((a.bias < 2 * math.pi).all())
    x = torch.randn(2, 4, 5)
    assert a(x).shape == (2, 4, 37)
    g = torch.Generator().manual_seed(0)
    c = RandomFourierFeatures(5, 8, learnable_lengthscale=True, generator=g)
    c(torch.randn(3, 5)).sum().backward()
    assert c.log_lengthscale.grad is not None


def test_orthogonal_rff_blocks_are_orthogonal_and_sign_symmetric() -> None:
    # Note [orthogonal blocks]: 2 full blocks of d rows and a partial one of 3, each block's
    # rows mutually orthogonal; with diag(R) > 0 the directions are Haar, so W[0, 0] is
    # positive about half the time (LAPACK's unfixed Q made it negative for every seed)
    d = 6
    W = RandomFourierFeatures(d, 2 * d + 3, orthogonal=True, seed=1, dtype=D64).weight
    assert W.shape == (2 * d + 3, d)
    for block in (W[:d], W[d:2 * d], W[2 * d:]):
        gram = block @ block.mT
        torch.testing.assert_close(gram - torch.diag(gram.diagonal()),
                                   torch.zeros_like(gram), rtol=0, atol=1e-12)
    positive = sum(float(RandomFourierFeatures(4, 4, orthogonal=True, seed=s).weight[0, 0]) > 0
                   for s in range(200))
    assert 70 <= positive <= 130


@pytest.mark.parametrize("shape", [(5,), (7, 5), (2, 3, 5)], ids=str)
def test_rff_forward_is_the_closed_form_and_gradchecks(shape) -> None:
    # Note [one pass per step]: the fused addmm / in-place cos and scale give
    # sqrt(2/D) cos(x W^T / l + b) exactly as written, with and without grad
    g = torch.Generator().manual_seed(21)
    rff = RandomFourierFeatures(5, 16, lengthscale=1.7, learnable_lengthscale=True, seed=4,
                                dtype=D64)
    x = torch.randn(*shape, 5, generator=g, dtype=D64)[..., 0, :] if len(shape) == 1 \
        else torch.randn(*shape, generator=g, dtype=D64)
    ref = math.sqrt(2 / 16) * torch.cos(x @ rff.weight.mT / 1.7 + rff.bias)
    with torch.no_grad():
        torch.testing.assert_close(rff(x), ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(rff(x), ref, rtol=1e-13, atol=1e-13)
    assert rff(x).shape == (*shape[:-1], 16)
    assert rff(torch.empty(0, 5, dtype=D64)).shape == (0, 16)  # no rows: no ambiguous reshape
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t, ll: _rff_at(rff, t, ll), (xg, rff.log_lengthscale))
    assert torch.autograd.gradgradcheck(lambda t, ll: _rff_at(rff, t, ll),
                                        (xg, rff.log_lengthscale))


def _rff_at(rff: RandomFourierFeatures, x: torch.Tensor, log_l: torch.Tensor) -> torch.Tensor:
    """``rff(x)`` with ``log_lengthscale`` replaced by ``log_l`` (for gradcheck)."""
    return torch.func.functional_call(rff, {"log_lengthscale": log_l}, (x,))


# ---------------------------------------------------------------------------
# Nystrom
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["rbf", "laplacian"])
def test_nystrom_all_landmarks_is_exact(kernel) -> None:
    X = torch.randn(40, 4, dtype=D64)
    ny = NystromFeatures(4, 40, kernel, lengthscale=1.5, seed=0, dtype=D64)
    assert not ny.is_fitted()
    ny.fit(X)
    assert ny.is_fitted() and ny.landmarks_.shape == (40, 4)
    assert ny.normalization_.shape == (40, 40)
    Phi = ny(X)
    torch.testing.assert_close(Phi @ Phi.T, make_kernel(kernel, lengthscale=1.5).double()(X),
                               atol=1e-6, rtol=0)


def test_nystrom_subset_approximates_and_state_dict_roundtrip() -> None:
    X = torch.randn(300, 3, dtype=D64)
    ny = NystromFeatures(3, 100, RBFKernel(2.0, dtype=D64), seed=1, dtype=D64).fit(X)
    Phi = ny(X)
    err = (Phi @ Phi.T - RBFKernel(2.0, dtype=D64)(X)).abs().mean()
    assert float(err) < 1e-3
    fresh = NystromFeatures(3, 100, RBFKernel(2.0, dtype=D64), dtype=D64)
    fresh.load_state_dict(ny.state_dict())
    assert fresh.is_fitted()
    torch.testing.assert_close(fresh(X), Phi)


def test_nystrom_kmeans_landmarks_beat_random() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = 6 * torch.randn(8, 2, generator=gen, dtype=D64)
    X = (centers[torch.arange(400) % 8] + 0.5 * torch.randn(400, 2, generator=gen, dtype=D64))
    K = RBFKernel(1.0, dtype=D64)(X)
    errs = {}
    for lm in ("random", "kmeans"):
        ny = NystromFeatures(2, 16, "rbf", landmarks=lm, seed=0, lengthscale=1.0,
                             dtype=D64).fit(X)
        Phi = ny(X)
        errs[lm] = float((Phi @ Phi.T - K).abs().mean())
    assert errs["kmeans"] < 0.85 * errs["random"]
    assert "landmarks='kmeans'" in repr(ny)
    # the landmarks are centers, not rows of X; the state_dict carries them
    assert not bool((torch.cdist(ny.landmarks_, X).min(dim=1).values < 1e-12).all())
    fresh = NystromFeatures(2, 16, "rbf", landmarks="kmeans", lengthscale=1.0, dtype=D64)
    fresh.load_state_dict(ny.state_dict())
    torch.testing.assert_close(fresh(X), Phi)
    with pytest.raises(ValueError, match="NystromFeatures: expected landmarks to be one of "
                                         "'random', 'kmeans', got 'grid'"):
        NystromFeatures(2, 4, landmarks="grid")
    with pytest.raises(ValueError, match="NystromFeatures: expected kmeans_iter"):
        NystromFeatures(2, 4, kmeans_iter=0)


@pytest.mark.parametrize("cls", [RBFKernel, LaplacianKernel])
def test_no_grad_block_paths_match_autograd_path(cls) -> None:
    # without autograd: in-place RBF blocks, and K(X, X) from its upper block rows
    X, Y = _data(70, 50)
    k = cls(1.3, dtype=D64, block_elements=500)
    with torch.no_grad():
        fast_xx, fast_xy = k(X), k(X, Y)
    X.requires_grad_(True)
    torch.testing.assert_close(fast_xx, k(X).detach(), atol=1e-14, rtol=0)
    torch.testing.assert_close(fast_xy, k(X, Y).detach(), atol=1e-14, rtol=0)
    assert bool((fast_xx.diagonal() == 1).all())
    assert bool((fast_xx == fast_xx.T).all())


# ---------------------------------------------------------------------------
# Kernel ridge
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("multi", [False, True])
def test_kernel_ridge_head_matches_sklearn(multi) -> None:
    X, Xq = _data(50, 15, 4)
    Y = torch.randn(50, 3, dtype=D64) if multi else torch.randn(50, dtype=D64)
    l, alpha = 1.3, 0.1
    head = KernelRidgeHead("rbf", alpha=alpha, lengthscale=l, dtype=D64)
    assert not head.is_fitted()
    head.fit(X, Y)
    assert head.is_fitted() and head.dual_coef_.shape == (50, 3 if multi else 1)
    ref = KernelRidge(kernel="rbf", gamma=1 / (2 * l * l), alpha=alpha).fit(X.numpy(), Y.numpy())
    expected = torch.from_numpy(ref.predict(Xq.numpy()))
    torch.testing.assert_close(head(Xq), expected)
    torch.testing.assert_close(kernel_ridge(X, Y, Xq, "rbf", alpha, lengthscale=l), expected)
    fresh = KernelRidgeHead("rbf", alpha=alpha, lengthscale=l, dtype=D64)
    fresh.load_state_dict(head.state_dict())
    torch.testing.assert_close(fresh(Xq), expected)


def test_kernel_ridge_gradcheck_query_targets_lengthscale() -> None:
    X, Xq = _data(8, 4, 3)
    Y = torch.randn(8, 2, dtype=D64, requires_grad=True)
    Xq.requires_grad_(True)
    log_l = torch.tensor(0.2, dtype=D64, requires_grad=True)
    alpha = torch.tensor(0.3, dtype=D64, requires_grad=True)

    def f(xq, y, log_l, alpha):
        k = RBFKernel(dtype=D64)
        k.log_lengthscale = log_l  # a tensor in the graph
        return kernel_ridge(X, y, xq, k, alpha)

    assert torch.autograd.gradcheck(f, (Xq, Y, log_l, alpha))
    Xt = X.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kernel_ridge(x, Y.detach(), Xq.detach(),
                                                           "rbf", 0.3), (Xt,))


def test_head_trains_end_to_end() -> None:
    X = torch.randn(30, 2, dtype=D64)
    Y = torch.sin(X.sum(1, keepdim=True))
    head = KernelRidgeHead(RBFKernel(1.0, learnable_lengthscale=True, dtype=D64), alpha=0.5,
                           learnable_alpha=True, dtype=D64)
    loss = (head.fit(X[:20], Y[:20])(X[20:]) - Y[20:]).square().mean()
    loss.backward()
    assert head.log_alpha.grad is not None and head.kernel.log_lengthscale.grad is not None


def test_not_pd_warns_and_adds_jitter() -> None:
    X = torch.randn(20, 3, dtype=D64)
    X = torch.cat([X, X])  # duplicate rows: a singular linear Gram matrix
    head = KernelRidgeHead(LinearKernel(), alpha=1e-300, dtype=D64)
    with pytest.warns(RuntimeWarning, match="not numerically positive definite"):
        head.fit(X, torch.randn(40, dtype=D64))
    assert bool(torch.isfinite(head.dual_coef_).all())


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
def test_errors() -> None:
    X = torch.randn(10, 3)
    with pytest.raises(ValueError, match="RBFKernel: expected input with last dimension 3, got 4"):
        RBFKernel()(X, torch.randn(5, 4))
    with pytest.raises(ValueError, match="RBFKernel: expected lengthscale > 0, got -1.0"):
        RBFKernel(-1.0)
    with pytest.raises(ValueError, match="RandomFourierFeatures: expected lengthscale > 0"):
        RandomFourierFeatures(3, 8, lengthscale=0.0)
    with pytest.raises(ValueError, match="KernelRidgeHead: expected alpha > 0, got 0"):
        KernelRidgeHead(alpha=0)
    with pytest.raises(ValueError, match="kernel_ridge: expected alpha > 0"):
        kernel_ridge(X, torch.randn(10), X, alpha=-1.0)
    with pytest.raises(RuntimeError, match="KernelRidgeHead.forward: this KernelRidgeHead is "
                                           "not fitted yet"):
        KernelRidgeHead()(X)
    with pytest.raises(RuntimeError, match="NystromFeatures.forward: this NystromFeatures is "
                                           "not fitted yet"):
        NystromFeatures(3, 5)(X)
    bad = X.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="KernelRidgeHead.fit: expected a finite X, got 1 NaN"):
        KernelRidgeHead().fit(bad, torch.randn(10))
    with pytest.raises(ValueError, match="NystromFeatures.fit: expected a finite X"):
        NystromFeatures(3, 5).fit(bad)
    with pytest.raises(ValueError, match="NystromFeatures.fit: expected input with last "
                                         "dimension 3, got 4"):
        NystromFeatures(3, 5).fit(torch.randn(10, 4))
    with pytest.raises(ValueError, match="expected at least n_landmarks=20 rows, got 10"):
        NystromFeatures(3, 20).fit(X)
    head = KernelRidgeHead().fit(X, torch.randn(10))
    with pytest.raises(ValueError, match="KernelRidgeHead.forward: expected input with last "
                                         "dimension 3, got 2"):
        head(torch.randn(4, 2))
    with pytest.raises(ValueError, match="expected Y with 10 rows"):
        KernelRidgeHead().fit(X, torch.randn(9))
    with pytest.raises(ValueError, match="RandomFourierFeatures: expected input with last "
                                         "dimension 3, got 2"):
        RandomFourierFeatures(3, 8)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="KernelRidgeHead: expected kernel to be a Kernel"):
        KernelRidgeHead("sigmoid")


@pytest.mark.parametrize("orthogonal", [False, True])
def test_rff_one_draw_for_every_dtype(orthogonal):
    # Note [one draw for every dtype]: one seed, one set of frequencies in float32 and float64
    a = RandomFourierFeatures(6, 20, seed=7, orthogonal=orthogonal, dtype=torch.float32)
    b = RandomFourierFeatures(6, 20, seed=7, orthogonal=orthogonal, dtype=torch.float64)
    torch.testing.assert_close(a.weight.double(), b.weight, rtol=0 if not orthogonal else 1e-7,
                               atol=0 if not orthogonal else 1e-7)
    torch.testing.assert_close(a.bias.double(), b.bias, rtol=1e-7, atol=1e-7)
    if not orthogonal:  # W_ij ~ N(0, 1)
        W = RandomFourierFeatures(50, 4000, seed=0, dtype=torch.float64).weight
        assert abs(float(W.mean())) < 0.01 and abs(float(W.var()) - 1) < 0.01
