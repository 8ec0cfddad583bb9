"""lamods._matmul.at_b: A^T B in the orientation the CPU BLAS runs fast."""

from __future__ import annotations

import pytest
import torch

from lamods._matmul import at_b


@pytest.mark.parametrize(("m", "p", "q"), [(50, 30, 3), (50, 3, 30), (40, 7, 7), (9, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_b_equals_the_transposed_product(m, p, q, dtype):
    # Note [transposed thin products]: either orientation, batch dimensions included
    g = torch.Generator().manual_seed(m * p + q)
    A = torch.randn(2, m, p, generator=g, dtype=dtype)
    B = torch.randn(2, m, q, generator=g, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12,
                                                                       "atol": 1e-12}
    out = at_b(A, B)
    assert out.shape == (2, p, q)
    torch.testing.assert_close(out, A.mT @ B, **tol)
    torch.testing.assert_close(at_b(A[0], B[0]), A[0].mT @ B[0], **tol)


def test_at_b_gradients():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(at_b, (A, B))
