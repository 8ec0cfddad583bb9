"""lamods.decomp.eigh: agreement with torch, gradient checks, degenerate spectra, bad input."""

from __future__ import annotations

import re

import pytest
import torch

from lamods.decomp import eigh
from lamods.testing import TOLERANCES, Tolerance, assert_close, check_gradients


def _sym(n: int, *batch: int, dtype=torch.float64) -> torch.Tensor:
    X = torch.randn(*batch, n, n, dtype=dtype)
    return X + X.mT


def _with_spectrum(lam: torch.Tensor) -> torch.Tensor:
    """Q diag(lam) Q^T with a random orthogonal Q (float64)."""
    n = lam.shape[-1]
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    A = Q @ torch.diag(lam.to(torch.float64)) @ Q.T
    return (A + A.T) / 2


def _gauge_fixed_loss(L: torch.Tensor, U: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """A loss of eigenvalues and eigenvectors that does not depend on the sign convention."""
    U = U * torch.sign(U[..., :1, :])
    return L.sin().sum() + (U.pow(3) * C).sum()


def projector_reference_grad(A: torch.Tensor, k: int, G: torch.Tensor) -> torch.Tensor:
    r"""dL/dA of L = <G, P_k>, P_k the top-k eigenprojector, from the cross-group gaps only.

    dP = sum_{i in top, j out} (u_j u_j^T dA u_i u_i^T + transpose) / (lambda_i - lambda_j),
    which needs only lambda_k > lambda_{k+1}: repeats inside either group do not enter.
    """
    L, U = torch.linalg.eigh(A)
    n = A.shape[-1]
    M = U.T @ ((G + G.T) / 2) @ U
    inside = torch.arange(n) >= n - k
    cross = (~inside).unsqueeze(1) & inside.unsqueeze(0)          # rows j out, cols i in
    gap = L.unsqueeze(0) - L.unsqueeze(1)                          # gap[j, i] = lambda_i - lambda_j
    Wm = torch.where(cross, 2 * M / torch.where(cross, gap, torch.ones_like(gap)), 0.0)
    g = U @ Wm @ U.T
    return (g + g.T) / 2


def _projector_loss(U: torch.Tensor, k: int, G: torch.Tensor) -> torch.Tensor:
    return ((U[..., -k:] @ U[..., -k:].mT) * G).sum()


# ---------------------------------------------------------------------------
# Distinct spectra: equal to torch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)], ids=str)
def test_matches_torch_float64(batch):
    A = _sym(6, *batch)
    C = torch.randn(*batch, 6, 6, dtype=torch.float64)
    grads = []
    for fn in (eigh, torch.linalg.eigh):
        a = A.clone().requires_grad_()
        L, U = fn(a)
        _gauge_fixed_loss(L, U, C).backward()
        grads.append(a.grad)
    L0, U0 = torch.linalg.eigh(A)
    L1, U1 = eigh(A)
    assert_close(L1, L0, what="eigenvalues")
    assert_close(U1.abs(), U0.abs(), what="eigenvectors up to sign",
                 tolerance=Tolerance(rtol=1e-8, atol=1e-10))
    assert_close(grads[0], grads[1], what="gradient", tolerance=Tolerance(rtol=1e-9, atol=1e-10))


def test_matches_torch_float32_separated():
    # gaps >= 0.1 * max|lambda|: the broadening bias (eps/gap)^2 is below 1.2e-5
    A = _with_spectrum(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).float()
    C = torch.randn(6, 6)
    grads = []
    for fn in (eigh, torch.linalg.eigh):
        a = A.clone().requires_grad_()
        L, U = fn(a)
        _gauge_fixed_loss(L, U, C).backward()
        grads.append(a.grad)
    assert_close(grads[0], grads[1], what="float32 gradient", tolerance=Tolerance(1e-3, 1e-4))


@pytest.mark.parametrize("batch", [(), (2,)], ids=str)
def test_gradcheck_gradgradcheck(batch):
    A = _sym(5, *batch)
    check_gradients(lambda a: eigh(a, validate=False), A)


def test_gradient_is_exact_for_nonsymmetric_perturbations():
    # Note [symmetric input]: the forward reads (A + A^T)/2, so gradcheck needs no wrapper
    A = _sym(4) + 1e-3 * torch.randn(4, 4, dtype=torch.float64)
    check_gradients(lambda a: eigh(a, validate=False).eigenvectors, A, gradgrad=False)


def test_sign_convention_and_reconstruction():
    A = _sym(7, 3)
    L, U = eigh(A)
    idx = U.abs().argmax(-2, keepdim=True)
    assert (U.gather(-2, idx) > 0).all()
    assert_close(U @ torch.diag_embed(L) @ U.mT, A, what="reconstruction",
                 tolerance=Tolerance(1e-10, 1e-10))
    assert (L.diff(dim=-1) >= 0).all(), "eigenvalues ascending"


def test_torch_func_grad_and_vmap():
    A = _sym(5, 3)

    def loss(a):
        return eigh(a, validate=False).eigenvectors[..., -2:].pow(3).sum()

    per = torch.func.vmap(torch.func.grad(loss))(A)
    for i in range(3):
        a = A[i].clone().requires_grad_()
        loss(a).backward()
        assert_close(per[i], a.grad, what="vmap(grad)")


# ---------------------------------------------------------------------------
# Degenerate spectra: exact on well-defined quantities
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gap", [0.0, 1e-6, 1e-10])
@pytest.mark.parametrize("rotate", [True, False], ids=["rotated", "diagonal"])
def test_top_k_projector_with_repeats_inside_group(gap, rotate):
    lam = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0 + gap, 5.0 + 2 * gap], dtype=torch.float64)
    A = _with_spectrum(lam) if rotate else torch.diag(lam)
    G = torch.randn(6, 6, dtype=torch.float64)
    a = A.clone().requires_grad_()
    _projector_loss(eigh(a).eigenvectors, 3, G).backward()
    ref = projector_reference_grad(A, 3, G)
    assert torch.isfinite(a.grad).all()
    assert_close(a.grad, ref, what="projector gradient", tolerance=Tolerance(1e-7, 1e-9))


def test_projector_gradient_matches_finite_differences():
    lam = torch.tensor([0.5, 1.0, 1.0, 4.0, 4.0, 4.0], dtype=torch.float64)
    A = _with_spectrum(lam)
    G = torch.randn(6, 6, dtype=torch.float64)
    a = A.clone().requires_grad_()
    _projector_loss(eigh(a).eigenvectors, 3, G).backward()

    def f(M):
        return _projector_loss(torch.linalg.eigh(M).eigenvectors, 3, G)

    for _ in range(3):
        E = torch.randn(6, 6, dtype=torch.float64)
        E = (E + E.T) / 2
        h = 1e-6
        fd = (f(A + h * E) - f(A - h * E)) / (2 * h)
        torch.testing.assert_close((a.grad * E).sum(), fd, rtol=1e-6, atol=1e-8)


def test_eigenvalue_functions_with_repeats():
    lam = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    A = _with_spectrum(lam)
    a = A.clone().requires_grad_()
    L, _ = eigh(a)
    (L.log().sum() + L[-2:].sum()).backward()
    _, U = torch.linalg.eigh(A)
    expected = torch.linalg.inv(A) + U[:, -2:] @ U[:, -2:].T
    assert_close(a.grad, expected, what="logdet + top-2 sum gradient",
                 tolerance=Tolerance(1e-10, 1e-12))


def test_individual_eigenvectors_in_a_repeated_group_get_finite_gradients():
    A = torch.eye(4, dtype=torch.float64).requires_grad_()
    eigh(A).eigenvectors[:, 0].sum().backward()
    assert torch.isfinite(A.grad).all()


def test_eps_zero_is_the_exact_formula():
    A = _sym(5)
    C = torch.randn(5, 5, dtype=torch.float64)
    grads = []
    for fn in (lambda a: eigh(a, eps=0.0), torch.linalg.eigh):
        a = A.clone().requires_grad_()
        _gauge_fixed_loss(*fn(a), C).backward()
        grads.append(a.grad)
    assert_close(grads[0], grads[1], what="eps=0 gradient", tolerance=TOLERANCES[torch.float64])


# ---------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_inputs_are_decomposed_in_float32(dtype):
    A = _sym(4, dtype=torch.float32).to(dtype)
    L, U = eigh(A)
    assert L.dtype == dtype and U.dtype == dtype
    L32, _ = eigh(A.float())
    assert torch.equal(L, L32.to(dtype))


def test_autocast_keeps_float32():
    A = _sym(4, dtype=torch.float32).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        L, U = eigh(A)
        assert L.dtype == torch.float32 and U.dtype == torch.float32
        loss = L.sum() + U[:, -1].abs().sum()
    loss.backward()
    assert A.grad.dtype == torch.float32 and torch.isfinite(A.grad).all()


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("A", "error", "message"),
    [
        (torch.randn(3, 4), ValueError,
         "eigh: expected a square matrix (*, n, n), got shape (3, 4)"),
        (torch.randn(4), ValueError,
         "eigh: expected a matrix or batch of matrices (*, m, n) as input, got shape (4,)"),
        (torch.ones(3, 3, dtype=torch.int64), TypeError,
         "eigh: expected a floating-point input, got dtype torch.int64"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), ValueError,
         "eigh: expected a symmetric matrix (max |A - A^T| <= 0.0001 * max |A|), "
         "got max |A - A^T| = 2 with max |A| = 2"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), ValueError,
         "eigh: expected a finite input, got 2 NaN or infinite entries"),
        ([[1.0]], TypeError, "eigh: expected a torch.Tensor input, got list"),
    ],
    ids=["non-square", "vector", "integer", "non-symmetric", "nan", "list"],
)
def test_bad_input_messages(A, error, message):
    with pytest.raises(error, match=re.escape(message)):
        eigh(A)


def test_bad_eps():
    with pytest.raises(ValueError, match=re.escape(
            "eigh: expected eps to be a float >= 0 or None, got -1.0")):
        eigh(torch.eye(2), eps=-1.0)
