"""lamods.decomp.svd: agreement with torch, gradient checks, rank-deficient and repeated inputs."""

from __future__ import annotations

import re

import pytest
import torch

from lamods.decomp import svd
from lamods.testing import Tolerance, assert_close, check_gradients

SHAPES = [(5, 5), (7, 4), (4, 7), (2, 6, 3), (2, 3, 6)]


def _gauge_fixed_loss(U, S, Vh, C1, C2):
    s = torch.sign(U[..., :1, :])
    U, Vh = U * s, Vh * s.mT
    return S.sin().sum() + (U.pow(3) * C1).sum() + (Vh.pow(3) * C2).sum()


def _with_singular_values(m: int, n: int, s: torch.Tensor) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(m, s.numel(), dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, s.numel(), dtype=torch.float64))
    return U @ torch.diag(s.to(torch.float64)) @ V.T


def _directional_check(loss_of_A, A, grad, n_dirs=3, h=1e-6, rtol=1e-6):
    """<grad, E> equals the central difference of loss_of_A (computed with torch.linalg)."""
    for _ in range(n_dirs):
        E = torch.randn_like(A)
        fd = (loss_of_A(A + h * E) - loss_of_A(A - h * E)) / (2 * h)
        torch.testing.assert_close((grad * E).sum(), fd, rtol=rtol, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch_float64(shape):
    A = torch.randn(*shape, dtype=torch.float64)
    k = min(shape[-2:])
    C1 = torch.randn(*shape[:-1], k, dtype=torch.float64)
    C2 = torch.randn(*shape[:-2], k, shape[-1], dtype=torch.float64)
    grads = []
    for fn in (svd, lambda a: torch.linalg.svd(a, full_matrices=False)):
        a = A.clone().requires_grad_()
        _gauge_fixed_loss(*fn(a), C1, C2).backward()
        grads.append(a.grad)
    U, S, Vh = svd(A)
    assert_close(S, torch.linalg.svdvals(A), what="singular values")
    assert_close(U @ torch.diag_embed(S) @ Vh, A, what="reconstruction",
                 tolerance=Tolerance(1e-10, 1e-10))
    idx = U.abs().argmax(-2, keepdim=True)
    assert (U.gather(-2, idx) > 0).all(), "sign convention"
    assert_close(grads[0], grads[1], what="gradient", tolerance=Tolerance(1e-9, 1e-10))


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5)], ids=str)
def test_gradcheck_gradgradcheck(shape):
    check_gradients(lambda a: svd(a, validate=False), torch.randn(*shape, dtype=torch.float64))


# ---------------------------------------------------------------------------
# pytorch #49886: rank-3 15x15
# ---------------------------------------------------------------------------
def _rank3():
    return torch.randn(15, 3, dtype=torch.float64) @ torch.randn(3, 15, dtype=torch.float64)


def test_rank3_singular_value_functions_exact():
    A = _rank3()
    a = A.clone().requires_grad_()
    U, S, Vh = svd(a)
    (S[:3].sum() + S.square().sum()).backward()
    U0, _, Vh0 = torch.linalg.svd(A)
    expected = U0[:, :3] @ Vh0[:3] + 2 * A
    assert torch.isfinite(a.grad).all()
    assert_close(a.grad, expected, what="Ky Fan + Frobenius gradient",
                 tolerance=Tolerance(1e-9, 1e-10))


@pytest.mark.parametrize("which", ["left", "right", "reconstruction"])
def test_rank3_subspace_losses_match_finite_differences(which):
    A = _rank3()
    G = torch.randn(15, 15, dtype=torch.float64)

    def loss(U, S, Vh):
        if which == "left":
            return ((U[:, :3] @ U[:, :3].T) * G).sum()
        if which == "right":
            return ((Vh[:3].T @ Vh[:3]) * G).sum()
        return ((U[:, :3] * S[:3]) @ Vh[:3] * G).sum()

    a = A.clone().requires_grad_()
    loss(*svd(a)).backward()
    assert torch.isfinite(a.grad).all()
    _directional_check(lambda M: loss(*torch.linalg.svd(M)), A, a.grad)


def test_repeated_singular_values_inside_top_group():
    A = _with_singular_values(8, 6, torch.tensor([3.0, 2.0, 2.0, 2.0, 0.5, 0.0]))
    G = torch.randn(8, 8, dtype=torch.float64)

    def loss(U, S, Vh):
        return ((U[:, :4] @ U[:, :4].T) * G).sum() + S[:4].pow(3).sum()

    a = A.clone().requires_grad_()
    loss(*svd(a)).backward()
    assert torch.isfinite(a.grad).all()
    _directional_check(lambda M: loss(*torch.linalg.svd(M, full_matrices=False)), A, a.grad)


def test_zero_matrix_has_finite_gradient():
    A = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    U, S, Vh = svd(A)
    (U.sum() + S.sum() + Vh.sum()).backward()
    assert torch.isfinite(A.grad).all()


def test_half_inputs_and_autocast():
    A = torch.randn(5, 3)
    U, S, Vh = svd(A.to(torch.bfloat16))
    assert S.dtype == torch.bfloat16
    a = A.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        U, S, Vh = svd(a)
        assert U.dtype == torch.float32
    S.sum().backward()
    assert a.grad.dtype == torch.float32


@pytest.mark.parametrize(
    ("A", "error", "message"),
    [
        (torch.randn(4), ValueError,
         "svd: expected a matrix or batch of matrices (*, m, n) as input, got shape (4,)"),
        (torch.tensor([[1.0, float("inf")]]), ValueError,
         "svd: expected a finite input, got 1 NaN or infinite entries"),
        (torch.ones(2, 2, dtype=torch.int32), TypeError,
         "svd: expected a floating-point input, got dtype torch.int32"),
        (torch.empty(0, 3), ValueError, "svd: expected a non-empty input, got shape (0, 3)"),
    ],
    ids=["vector", "inf", "integer", "empty"],
)
def test_bad_input_messages(A, error, message):
    with pytest.raises(error, match=re.escape(message)):
        svd(A)
