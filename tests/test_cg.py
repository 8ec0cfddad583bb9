"""lamods.cg: preconditioned conjugate gradient against torch.linalg.solve, its adjoint
gradient (gradcheck in float64) and its errors."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import lamods
from lamods import cg

F64 = torch.float64


def spd(n: int, seed: int, cond: float = 10.0, dtype: torch.dtype = F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    ev = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=F64)
    return ((Q * ev) @ Q.mT).to(dtype)


def rhs(*shape: int, seed: int = 1, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(20,), (20, 1), (20, 4)])
def test_dense_matches_solve(shape):
    A, B = spd(20, 0, cond=1e3), rhs(*shape)
    X = cg(A, B, rtol=1e-12)
    assert X.shape == B.shape
    ref = torch.linalg.solve(A, B)
    torch.testing.assert_close(X, ref, rtol=0, atol=1e-9 * float(ref.abs().max()))


def test_float32():
    A, B = spd(30, 2, cond=50, dtype=torch.float32), rhs(30, 3, dtype=torch.float32)
    X = cg(A, B, rtol=1e-5)
    ref = torch.linalg.solve(A.double(), B.double())
    assert X.dtype == torch.float32
    assert float((X.double() - ref).norm() / ref.norm()) < 1e-4


def test_sparse_and_callable_match_dense():
    A, B = spd(15, 3), rhs(15, 2)
    ref = torch.linalg.solve(A, B)
    for op in (A.to_sparse(), A.to_sparse_csr(), lambda V: A @ V):
        torch.testing.assert_close(cg(op, B, rtol=1e-12), ref, rtol=1e-9, atol=1e-9)


def test_preconditioner_cuts_iterations():
    # a badly scaled diagonal-dominant system: Jacobi preconditioning makes it easy
    g = torch.Generator().manual_seed(4)
    d = torch.logspace(0, 6, 40, dtype=F64)
    E = 0.01 * torch.randn(40, 40, generator=g, dtype=F64)
    A = torch.diag(d) + (E @ E.mT) * torch.sqrt(d[:, None] * d[None, :])
    B = rhs(40, 2)
    ref = torch.linalg.solve(A, B)
    count = {"plain": 0, "jacobi": 0}

    def counted(key):
        def op(V):
            count[key] += 1
            return A @ V
        return op

    X = cg(counted("plain"), B, rtol=1e-10, maxiter=10_000)
    Xp = cg(counted("jacobi"), B, M=lambda R: R / A.diagonal()[:, None], rtol=1e-10)
    Xm = cg(A, B, M=torch.diag(1 / A.diagonal()), rtol=1e-10)
    for out in (X, Xp, Xm):
        assert float((out - ref).norm() / ref.norm()) < 1e-6
    assert count["jacobi"] < count["plain"] / 3


def test_columns_converge_independently_and_zero_rhs():
    A = spd(12, 5)
    B = torch.stack([rhs(12, seed=6), torch.zeros(12, dtype=F64), 1e-8 * rhs(12, seed=7)], 1)
    X = cg(A, B, rtol=1e-12)
    assert torch.equal(X[:, 1], torch.zeros(12, dtype=F64))
    ref = torch.linalg.solve(A, B)
    for j in (0, 2):  # the tiny column is solved to its own relative tolerance
        assert float((X[:, j] - ref[:, j]).norm() / ref[:, j].norm()) < 1e-9


def test_no_columns():
    X = cg(spd(5, 40), torch.zeros(5, 0, dtype=F64))
    assert X.shape == (5, 0)


def test_x0_warm_start():
    A, B = spd(10, 8), rhs(10, 2)
    ref = torch.linalg.solve(A, B)
    X = cg(A, B, x0=ref + 1e-3 * rhs(10, 2, seed=9), rtol=1e-12)
    torch.testing.assert_close(X, ref, rtol=1e-9, atol=1e-9)


def test_gradcheck_dense():
    A = spd(6, 10, cond=5).requires_grad_()
    B = rhs(6, 2, seed=11).requires_grad_()
    # the symmetric part: gradcheck perturbs single entries
    assert gradcheck(lambda A, B: cg((A + A.mT) / 2, B, rtol=1e-13), (A, B))


def test_gradcheck_vector_and_callable_parameter():
    A = spd(5, 12, cond=5)
    b = rhs(5, seed=13).requires_grad_()
    lam = torch.tensor(0.7, dtype=F64, requires_grad=True)
    # (A + lam I) x = b through a callable: the gradient reaches lam, which it closes over
    assert gradcheck(lambda b, lam: cg(lambda V: A @ V + lam * V, b, rtol=1e-13), (b, lam))


def test_gradient_matches_solve_sparse():
    A = spd(8, 14)
    B = rhs(8, 3, seed=15)
    Bs = B.clone().requires_grad_()
    Br = B.clone().requires_grad_()
    W = rhs(8, 3, seed=16)
    (cg(A.to_sparse(), Bs, rtol=1e-13) * W).sum().backward()
    (torch.linalg.solve(A, Br) * W).sum().backward()
    torch.testing.assert_close(Bs.grad, Br.grad, rtol=1e-9, atol=1e-10)


def test_dense_gradient_of_A_matches_solve():
    A0, B = spd(7, 17), rhs(7, 2, seed=18)
    A1, A2 = A0.clone().requires_grad_(), A0.clone().requires_grad_()
    W = rhs(7, 2, seed=19)
    (cg(A1, B, rtol=1e-13) * W).sum().backward()
    (torch.linalg.solve(A2, B) * W).sum().backward()
    # grad_A = -(A^{-1} g) x^T
    torch.testing.assert_close(A1.grad, A2.grad, rtol=1e-8, atol=1e-10)


def test_second_derivative_raises():
    A = spd(4, 20)
    b = rhs(4, seed=21).requires_grad_()
    x = cg(A, b, rtol=1e-12)
    (g,) = torch.autograd.grad(x.square().sum(), b, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate"):
        g.sum().backward()


def test_no_graph_without_grad():
    A = spd(4, 22)
    b = rhs(4, seed=23)
    assert not cg(A, b).requires_grad
    with torch.no_grad():
        assert not cg(A, b.requires_grad_()).requires_grad


# -- errors -------------------------------------------------------------------------
def test_indefinite_is_not_psd():
    A = spd(10, 24)
    A = A - 2 * torch.eye(10, dtype=F64) * float(torch.linalg.eigvalsh(A)[2])
    with pytest.raises(lamods.NotPSDError, match=r"^cg: expected a symmetric positive-definite "
                       r"A, got a non-positive curvature p\^T A p = "):
        cg(A, rhs(10, seed=25))


def test_singular_direction_is_not_psd():
    v = rhs(6, seed=26)
    A = torch.outer(v, v)  # rank one: p^T A p = 0 for p orthogonal to v
    with pytest.raises(lamods.NotPSDError, match="non-positive curvature"):
        cg(A, rhs(6, seed=27), rtol=1e-12)


def test_indefinite_preconditioner():
    A = spd(6, 28)
    with pytest.raises(lamods.NotPSDError, match=r"^cg: expected a symmetric positive-definite "
                       r"preconditioner M, got r\^T M r <= 0"):
        cg(A, rhs(6, seed=29), M=lambda R: -R)


def test_maxiter_raises_or_returns():
    A, b = spd(30, 30, cond=1e4), rhs(30, seed=31)
    with pytest.raises(lamods.ConvergenceError, match=r"^cg: expected convergence to "
                       r"rtol=1e-12, atol=0 within maxiter=3 iterations, got a relative "
                       r"residual"):
        cg(A, b, rtol=1e-12, maxiter=3)
    x = cg(A, b, rtol=1e-12, maxiter=3, strict=False)
    # the t-th CG iterate minimises the A-norm error over the Krylov space
    # span{b, Ab, A^2 b}: x_3 = V (V^T A V)^{-1} V^T b, V an orthonormal basis of it
    V, _ = torch.linalg.qr(torch.stack([b, A @ b, A @ (A @ b)], 1))
    ref = V @ torch.linalg.solve(V.mT @ A @ V, V.mT @ b)
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("bad, exc, msg", [
    (lambda A, b: (A, b.clone().index_fill_(0, torch.tensor([2]), float("nan"))), ValueError,
     r"^cg: expected a finite B, got 1 NaN or infinite entries"),
    (lambda A, b: (A.clone().index_fill_(0, torch.tensor([1]), float("inf")), b), ValueError,
     r"^cg: expected a finite input, got \d+ NaN or infinite entries"),
    (lambda A, b: (A + torch.triu(torch.ones_like(A), 1), b), ValueError,
     r"^cg: expected a symmetric matrix"),
    (lambda A, b: (A[:, :-1], b), ValueError, r"^cg: expected A as a square matrix"),
    (lambda A, b: (A[:-1, :-1], b), ValueError, r"^cg: expected A of shape \(5, 5\)"),
    (lambda A, b: (A.float(), b), TypeError, r"^cg: expected A of B's dtype torch.float64"),
    (lambda A, b: (A, b.half()), TypeError, r"^cg: expected B of dtype float32 or float64"),
    (lambda A, b: (A, b[:0]), ValueError, r"^cg: expected B of shape \(n,\) or \(n, k\)"),
    (lambda A, b: (A, b.reshape(1, 5, 1)), ValueError, r"^cg: expected B of shape"),
    (lambda A, b: (A, b.tolist()), TypeError, r"^cg: expected B as a torch.Tensor, got list"),
    (lambda A, b: ("A", b), TypeError, r"^cg: expected A as a tensor or a callable"),
    (lambda A, b: (lambda V: V[:-1], b), ValueError,
     r"^cg: expected the callable A to map \(n, k\) = \(5, 1\) to the same shape, got \(4, 1\)"),
    (lambda A, b: (lambda V: V * float("nan"), b), ValueError,
     r"^cg: expected the operator A and the preconditioner M to give finite values"),
])
def test_bad_input(bad, exc, msg):
    A, b = bad(spd(5, 32), rhs(5, seed=33))
    with pytest.raises(exc, match=msg):
        cg(A, b)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"rtol": -1.0}, ValueError, r"^cg: expected rtol to be a float >= 0, got -1.0"),
    ({"atol": float("nan")}, ValueError, r"^cg: expected atol to be a float >= 0, got nan"),
    ({"rtol": 0.0}, ValueError, r"^cg: expected rtol > 0 or atol > 0"),
    ({"maxiter": 0}, ValueError, r"^cg: expected maxiter to be a positive int or None, got 0"),
    ({"x0": torch.zeros(4, dtype=F64)}, ValueError, r"^cg: expected x0 of B's shape \(5,\)"),
    ({"M": torch.eye(4, dtype=F64)}, ValueError, r"^cg: expected M as a \(5, 5\) matrix"),
    ({"M": 3}, TypeError, r"^cg: expected M as a tensor, a callable r -> M r or None, got int"),
])
def test_bad_parameters(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        cg(spd(5, 34), rhs(5, seed=35), **kw)
