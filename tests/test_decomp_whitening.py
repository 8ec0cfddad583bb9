"""ZCAWhitening, PCAWhitening and inv_sqrtm: battery, batch statistics, exact gradients."""

from __future__ import annotations

import re

import pytest
import torch

from lamods.decomp import PCAWhitening, ZCAWhitening, inv_sqrtm
from lamods.testing import ModuleBattery, Tolerance, assert_close, check_gradients

F64 = torch.float64


def _spd(d: int, lam: torch.Tensor | None = None, dtype=F64) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64))
    lam = torch.rand(d, dtype=F64) + 0.5 if lam is None else lam.to(F64)
    A = (Q * lam) @ Q.T
    return ((A + A.T) / 2).to(dtype)


def _inv_sqrt_ref(C: torch.Tensor, eps: float) -> torch.Tensor:
    L, U = torch.linalg.eigh(C)
    return (U / (L + eps).sqrt()) @ U.mT


# ---------------------------------------------------------------------------
# Eval mode (running statistics): the shared battery
# ---------------------------------------------------------------------------
class TestZCAWhiteningEval(ModuleBattery):
    name = "ZCAWhitening"
    in_features = 7

    def build(self, *, device, dtype):
        layer = ZCAWhitening(7, eps=1e-3, device=device, dtype=dtype)
        with torch.no_grad():
            layer.running_mean.copy_(torch.randn(7))
            layer.running_cov.copy_(_spd(7))
        return layer.eval()

    def reference(self, module, params, x):
        W = _inv_sqrt_ref(module.running_cov.double(), module.eps).to(x.dtype)
        return (x - module.running_mean) @ W


class TestPCAWhiteningEval(TestZCAWhiteningEval):
    name = "PCAWhitening"

    def build(self, *, device, dtype):
        layer = PCAWhitening(7, n_components=4, eps=1e-3, device=device, dtype=dtype)
        with torch.no_grad():
            layer.running_mean.copy_(torch.randn(7))
            layer.running_cov.copy_(_spd(7))
        return layer.eval()

    def reference(self, module, params, x):
        L, U = torch.linalg.eigh(module.running_cov.double())
        L, U = L[-4:].flip(0), U[:, -4:].flip(1)
        U = U * torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))
        W = (U / (L + module.eps).sqrt()).to(x.dtype)
        return (x - module.running_mean) @ W


# ---------------------------------------------------------------------------
# Training mode: batch statistics, running updates, gradients
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ZCAWhitening, PCAWhitening])
def test_training_output_is_white_and_running_stats_update(cls):
    layer = cls(5, eps=0.0, momentum=0.5, dtype=F64)
    x = torch.randn(4, 100, 5, dtype=F64) @ torch.randn(5, 5, dtype=F64) + 2.0
    y = layer(x).reshape(-1, 5)
    assert_close(y.T @ y / 400, torch.eye(5, dtype=F64), what="whitened covariance",
                 tolerance=Tolerance(1e-9, 1e-9))
    x2 = x.reshape(-1, 5)
    assert_close(layer.running_mean, 0.5 * x2.mean(0), what="running_mean")
    assert_close(layer.running_cov, 0.5 * torch.eye(5, dtype=F64) + 0.5 * torch.cov(x2.T),
                 what="running_cov")
    assert int(layer.num_batches_tracked) == 1


def test_zca_is_the_symmetric_whitening():
    layer = ZCAWhitening(4, eps=0.0, dtype=F64, track_running_stats=False)
    x = torch.randn(200, 4, dtype=F64) @ torch.randn(4, 4, dtype=F64)
    xc = x - x.mean(0)
    W = _inv_sqrt_ref(xc.T @ xc / 200, 0.0)
    assert_close(layer(x), xc @ W, what="ZCA output", tolerance=Tolerance(1e-9, 1e-10))


@pytest.mark.parametrize("cls", [ZCAWhitening, PCAWhitening])
def test_training_gradcheck_gradgradcheck(cls):
    layer = cls(3, eps=0.1, dtype=F64)
    check_gradients(lambda x: layer.train()(x), torch.randn(8, 3, dtype=F64))


def test_zca_gradient_exact_with_repeated_batch_variances():
    # isotropic batch: the covariance has one eigenvalue repeated 4 times
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64))
    x0 = torch.cat([Q, -Q]) * 2.0            # covariance = 2 I exactly (up to rounding)
    G = torch.randn(8, 4, dtype=F64)
    layer = ZCAWhitening(4, eps=1e-3, dtype=F64, track_running_stats=False)
    x = x0.clone().requires_grad_()
    (layer(x) * G).sum().backward()
    assert torch.isfinite(x.grad).all()

    def f(z):
        zc = z - z.mean(0)
        return ((zc @ _inv_sqrt_ref(zc.T @ zc / 8, 1e-3)) * G).sum()

    for _ in range(3):
        E = torch.randn_like(x0)
        h = 1e-6
        fd = (f(x0 + h * E) - f(x0 - h * E)) / (2 * h)
        torch.testing.assert_close((x.grad * E).sum(), fd, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------
# inv_sqrtm
# ---------------------------------------------------------------------------
def test_inv_sqrtm_gradcheck_gradgradcheck():
    check_gradients(lambda a: inv_sqrtm(a, 0.1, validate=False), _spd(4).unsqueeze(0))


@pytest.mark.parametrize("lam", [[1.0, 1.0, 1.0, 3.0], [1.0, 1.0 + 1e-10, 2.0, 2.0 + 1e-6]],
                         ids=["exact-repeats", "close"])
def test_inv_sqrtm_gradient_exact_on_degenerate_spectra(lam):
    A = _spd(4, torch.tensor(lam))
    G = torch.randn(4, 4, dtype=F64)
    a = A.clone().requires_grad_()
    (inv_sqrtm(a) * G).sum().backward()
    for _ in range(3):
        E = torch.randn(4, 4, dtype=F64)
        E = (E + E.T) / 2
        h = 1e-6
        fd = ((_inv_sqrt_ref(A + h * E, 0.0) - _inv_sqrt_ref(A - h * E, 0.0)) * G).sum() / (2 * h)
        torch.testing.assert_close((a.grad * E).sum(), fd, rtol=1e-6, atol=1e-8)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=re.escape(
            "ZCAWhitening: expected at least 2 samples per batch in training mode, got 1")):
        ZCAWhitening(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match=re.escape(
            "PCAWhitening: expected n_components <= num_features = 3, got 4")):
        PCAWhitening(3, n_components=4)
    with pytest.raises(ValueError, match=re.escape(
            "ZCAWhitening: expected momentum in [0, 1], got 2.0")):
        ZCAWhitening(3, momentum=2.0)
    with pytest.raises(ValueError, match=re.escape(
            "inv_sqrtm: expected eps to be a float >= 0, got -1.0")):
        inv_sqrtm(torch.eye(2), -1.0)
    with pytest.raises(ValueError, match=re.escape(
            "inv_sqrtm: expected a square matrix (*, n, n), got shape (2, 3)")):
        inv_sqrtm(torch.randn(2, 3))
