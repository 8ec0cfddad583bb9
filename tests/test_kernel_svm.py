"""The linear SVM head on random features and the squared hinge loss."""

from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.svm import LinearSVC

from lamods.layers.kernel_svm import LinearSVMHead, squared_hinge_loss
from lamods.layers.random_features import RandomFourierFeatures

D64 = torch.float64


def test_squared_hinge_loss_formula_and_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(7, 4, generator=gen, dtype=D64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    t = -torch.ones(7, 4, dtype=D64)
    t[torch.arange(7), y] = 1
    ref = (1 - t * s).clamp_min(0).square().sum(1)
    torch.testing.assert_close(squared_hinge_loss(s, y, reduction="none"), ref)
    torch.testing.assert_close(squared_hinge_loss(s, y), ref.mean())
    torch.testing.assert_close(squared_hinge_loss(s, y, reduction="sum"), ref.sum())
    torch.testing.assert_close(squared_hinge_loss(s, y, squared=False, reduction="sum"),
                               (1 - t * s).clamp_min(0).sum())
    assert torch.autograd.gradcheck(lambda a: squared_hinge_loss(a, y), (s,))


def test_linear_svm_on_rff_matches_linear_svc_on_digits() -> None:
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    rff = RandomFourierFeatures(64, 512, lengthscale=3.0, seed=0)
    with torch.no_grad():
        Ztr, Zte = rff(X[tr]), rff(X[te])
    svm = LinearSVMHead(512, 10, C=1.0).fit(Ztr, y[tr])
    with torch.no_grad():
        acc = float((svm(Zte).argmax(1) == y[te]).float().mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear convergence warnings
        ref = LinearSVC(C=1.0, max_iter=5000).fit(Ztr.numpy(), y[tr].numpy())
    acc_ref = float((ref.predict(Zte.numpy()) == y[te].numpy()).mean())
    assert acc > 0.9
    assert acc >= acc_ref - 0.02, (acc, acc_ref)


def test_head_trains_end_to_end_with_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(200, 2, generator=gen)
    y = (X[:, 0] * X[:, 1] > 0).long()  # XOR: not linearly separable in x
    rff = RandomFourierFeatures(2, 64, lengthscale=1.0, learnable_lengthscale=True, seed=0)
    head = LinearSVMHead(64, 2)
    opt = torch.optim.Adam([*rff.parameters(), *head.parameters()], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss = squared_hinge_loss(head(rff(X)), y)
        loss.backward()
        opt.step()
    assert rff.log_lengthscale.grad is not None
    assert float((head(rff(X)).argmax(1) == y).float().mean()) > 0.9
    assert "n_classes=2" in repr(head)


def test_errors() -> None:
    s, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="squared_hinge_loss: expected scores of shape "
                                         r"\(n_samples, n_classes\), got shape \(5,\)"):
        squared_hinge_loss(s[:, 0], y)
    with pytest.raises(ValueError, match="squared_hinge_loss: expected integer labels y of "
                                         "shape"):
        squared_hinge_loss(s, y.float())
    with pytest.raises(ValueError, match="squared_hinge_loss: expected y with 5 labels"):
        squared_hinge_loss(s, y[:4])
    with pytest.raises(ValueError, match=r"squared_hinge_loss: expected labels in \[0, 3\), "
                                         r"got values in \[0, 3\]"):
        squared_hinge_loss(s, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="squared_hinge_loss: expected reduction in"):
        squared_hinge_loss(s, y, reduction="max")
    with pytest.raises(ValueError, match="LinearSVMHead: expected C > 0, got 0"):
        LinearSVMHead(3, 2, C=0)
    with pytest.raises(ValueError, match="LinearSVMHead: expected n_classes >= 2, got 1"):
        LinearSVMHead(3, 1)
    with pytest.raises(ValueError, match="LinearSVMHead.forward: expected input with last "
                                         "dimension 3, got 4"):
        LinearSVMHead(3, 2)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="LinearSVMHead.fit: expected Z of shape"):
        LinearSVMHead(3, 2).fit(torch.randn(3), y)
    bad = torch.randn(5, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="LinearSVMHead.fit: expected a finite Z"):
        LinearSVMHead(3, 3).fit(bad, y)
