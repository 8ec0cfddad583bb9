"""randomized_svd and topk_eigh: accuracy, determinism, the fixed-basis backward, bad input."""

from __future__ import annotations

import re

import pytest
import torch

from lamods.decomp import randomized_range_finder, randomized_svd, svd, topk_eigh
from lamods.testing import Tolerance, assert_close


def _decaying(m: int, n: int, rate: float = 0.7, *batch: int) -> torch.Tensor:
    """(*, m, n) with singular values rate**i (float64)."""
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(*batch, m, r, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(*batch, n, r, dtype=torch.float64))
    s = rate ** torch.arange(r, dtype=torch.float64)
    return (U * s.unsqueeze(-2)) @ V.mT


def _psd(n: int, lam: torch.Tensor) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    A = (Q * lam.unsqueeze(0)) @ Q.T
    return (A + A.T) / 2


@pytest.mark.parametrize(("shape", "batch"), [((120, 40), ()), ((40, 120), ()), ((60, 30), (2,))],
                         ids=["tall", "wide", "batched"])
def test_randomized_svd_matches_exact_top_k(shape, batch):
    A = _decaying(*shape, 0.6, *batch)
    U, S, Vh = randomized_svd(A, 6)
    U0, S0, Vh0 = svd(A)
    assert U.shape == (*batch, shape[0], 6) and Vh.shape == (*batch, 6, shape[1])
    tol = Tolerance(1e-9, 1e-11)
    assert_close(S, S0[..., :6], what="singular values", tolerance=tol)
    assert_close(U, U0[..., :6], what="U (same sign rule)", tolerance=tol)
    assert_close(Vh, Vh0[..., :6, :], what="Vh", tolerance=tol)


def test_randomized_svd_generator_is_deterministic():
    A = torch.randn(100, 50, dtype=torch.float64)
    runs = [randomized_svd(A, 5, n_iter=1, generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(runs[0].U, runs[1].U) and torch.equal(runs[0].S, runs[1].S)


def test_randomized_svd_float32():
    A = _decaying(150, 60, 0.7).float()
    _, S, _ = randomized_svd(A, 8)
    assert S.dtype == torch.float32
    assert_close(S, torch.linalg.svdvals(A)[:8], what="float32 singular values",
                 tolerance=Tolerance(1e-4, 1e-5))


def test_randomized_backward_is_the_small_svd_with_q_fixed():
    # Note [randomized backward]: same Q (same generator state), autograd through svd(Q^T A)
    A = torch.randn(60, 30, dtype=torch.float64)
    G = torch.randn(60, 30, dtype=torch.float64)

    def loss(U, S, Vh):
        return (((U * S.unsqueeze(-2)) @ Vh) * G).sum()

    a = A.clone().requires_grad_()
    loss(*randomized_svd(a, 4, oversamples=3, n_iter=1,
                         generator=torch.Generator().manual_seed(0))).backward()
    Q = randomized_range_finder(A, 7, 1, torch.Generator().manual_seed(0))
    b = A.clone().requires_grad_()
    Ub, S, Vh = torch.linalg.svd(Q.T @ b, full_matrices=False)
    loss(Q @ Ub[:, :4], S[:4], Vh[:4]).backward()
    assert_close(a.grad, b.grad, what="fixed-Q gradient", tolerance=Tolerance(1e-9, 1e-11))


def test_randomized_singular_value_gradient_is_exact_when_converged():
    A = _decaying(120, 50, 0.5)
    a = A.clone().requires_grad_()
    randomized_svd(a, 5).S.sum().backward()
    U0, _, Vh0 = torch.linalg.svd(A, full_matrices=False)
    assert_close(a.grad, U0[:, :5] @ Vh0[:5], what="gradient of the top-5 sum",
                 tolerance=Tolerance(1e-8, 1e-10))


# ---------------------------------------------------------------------------
# topk_eigh
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lanczos", "power", "full"])
def test_topk_eigh_psd_matches_full(method):
    lam = torch.cat([torch.tensor([10.0, 8.0, 6.0, 6.0, 6.0]), 2.0 * torch.rand(75)])
    A = _psd(80, lam.double())
    L, U = topk_eigh(A, 5, method=method)
    L0, U0 = torch.linalg.eigh(A)
    assert_close(L, L0[-5:].flip(0), what="top-5 eigenvalues", tolerance=Tolerance(1e-9, 1e-10))
    # the repeated 6.0 group: compare projectors, not vectors (converged to ~(2/6)^(2 n_iter))
    assert_close(U @ U.T, U0[:, -5:] @ U0[:, -5:].T, what="top-5 projector",
                 tolerance=Tolerance(1e-4, 1e-4))


def test_topk_eigh_lanczos_smallest_of_indefinite():
    lam = torch.cat([torch.tensor([-9.0, -7.0, -5.0]), torch.linspace(-1.0, 4.0, 57)]).double()
    A = _psd(60, lam)
    L, _ = topk_eigh(A, 3, largest=False, n_iter=8)
    assert_close(L, torch.tensor([-9.0, -7.0, -5.0], dtype=torch.float64),
                 what="smallest eigenvalues", tolerance=Tolerance(1e-9, 1e-9))


def test_topk_eigh_batched_and_low_rank():
    X = torch.randn(4, 50, 3, dtype=torch.float64)
    A = X @ X.mT  # rank 3: the Krylov blocks break down, the final QR keeps the basis orthonormal
    L, U = topk_eigh(A, 3)
    assert_close(L, torch.linalg.eigvalsh(A)[..., -3:].flip(-1), what="batched low-rank",
                 tolerance=Tolerance(1e-9, 1e-9))
    assert_close(U.mT @ U, torch.eye(3, dtype=torch.float64).expand(4, 3, 3), what="U^T U",
                 tolerance=Tolerance(1e-9, 1e-9))


@pytest.mark.parametrize("method", ["lanczos", "full"])
def test_topk_eigenvalue_sum_gradient(method):
    lam = torch.cat([torch.tensor([9.0, 7.0, 7.0]), torch.rand(37)]).double()
    A = _psd(40, lam)
    a = A.clone().requires_grad_()
    topk_eigh(a, 3, method=method).eigenvalues.sum().backward()
    _, U0 = torch.linalg.eigh(A)
    assert_close(a.grad, U0[:, -3:] @ U0[:, -3:].T, what="gradient of the top-3 sum",
                 tolerance=Tolerance(1e-8, 1e-10))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: randomized_svd(torch.randn(5, 4), 5),
         "randomized_svd: expected k <= min(m, n) = 4, got 5"),
        (lambda: randomized_svd(torch.randn(5, 4), 0),
         "randomized_svd: expected k to be a positive int, got 0"),
        (lambda: randomized_svd(torch.randn(5, 4), 2, n_iter=-1),
         "randomized_svd: expected n_iter to be an int >= 0, got -1"),
        (lambda: topk_eigh(torch.eye(3), 4), "topk_eigh: expected k <= n = 3, got 4"),
        (lambda: topk_eigh(torch.eye(3), 1, method="arnoldi"),
         "topk_eigh: expected method in ('lanczos', 'power', 'full'), got 'arnoldi'"),
        (lambda: topk_eigh(torch.eye(3), 1, method="power", largest=False),
         "topk_eigh: expected largest=True with method='power'"),
        (lambda: topk_eigh(torch.randn(3, 2), 1),
         "topk_eigh: expected a square matrix (*, n, n), got shape (3, 2)"),
        (lambda: randomized_svd(torch.full((3, 3), float("nan")), 1),
         "randomized_svd: expected a finite input, got 9 NaN or infinite entries"),
    ],
    ids=["k>min", "k=0", "n_iter", "k>n", "method", "power-smallest", "non-square", "nan"],
)
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
