r"""A linear SVM head on (random) features: the kernel SVM, approximated.

With explicit features :math:`z(x)` (:class:`~lamods.layers.RandomFourierFeatures`,
:class:`~lamods.layers.NystromFeatures`, or any backbone) a linear SVM on
:math:`z` approximates the kernel SVM with :math:`k(x, y) \approx z(x)^T z(y)`.

- :func:`squared_hinge_loss`: the one-vs-rest squared hinge loss of scores
  :math:`s = z W^T + b` ``(n, K)`` and integer labels ``y``,

  .. math::
      \ell(s, y) = \frac{1}{n} \sum_{i=1}^n \sum_{j=1}^K \max(0,\, 1 - t_{ij} s_{ij})^2,
      \qquad t_{ij} = +1 \text{ if } j = y_i \text{ else } -1,

  (``squared=False`` gives the plain hinge :math:`\max(0, 1 - t s)`).
- :class:`LinearSVMHead`: the scores :math:`s = z W^T + b`, trained end to end with
  :func:`squared_hinge_loss` like any layer, or fitted in closed loop by ``fit(Z, y)``:
  full-batch L-BFGS on scikit-learn's ``LinearSVC`` primal objective (squared hinge,
  L2 penalty, one-vs-rest, bias not penalized)

  .. math:: \tfrac12 \|W\|_F^2 + C \sum_i \sum_j \max(0,\, 1 - t_{ij} s_{ij})^2 .
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lamods._validation import check_positive, check_positive_int
from lamods.base import Estimator

__all__ = ["LinearSVMHead", "squared_hinge_loss"]


def _check_scores_labels(name: str, scores: object, y: object) -> tuple[Tensor, Tensor]:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, Tensor) \
            else type(scores).__name__
        raise ValueError(f"{name}: expected scores of shape (n_samples, n_classes), got {got}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.dtype.is_floating_point \
            or y.dtype == torch.bool:
        got = f"{y.dtype} shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name}: expected integer labels y of shape (n_samples,), got {got}")
    if y.shape[0] != scores.shape[0]:
        raise ValueError(f"{name}: expected y with {scores.shape[0]} labels (one per row of "
                         f"scores), got {y.shape[0]}")
    k = scores.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"{name}: expected labels in [0, {k}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return scores, y


def squared_hinge_loss(scores: Tensor, y: Tensor, *, squared: bool = True,
                       reduction: str = "mean") -> Tensor:
    r"""One-vs-rest (squared) hinge loss :math:`\sum_j \max(0, 1 - t_{ij} s_{ij})^2`.

    Args:
        scores: ``(n, K)`` class scores.
        y: ``(n,)`` integer labels in ``[0, K)``.
        squared: square the hinge (smooth, the ``LinearSVC`` default) or not.
        reduction: ``"mean"`` over samples, ``"sum"``, or ``"none"`` (per sample ``(n,)``).

    Examples::

        >>> s = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
        >>> squared_hinge_loss(s, torch.tensor([0, 1]), reduction="none")
        tensor([0.0000, 3.2500])
    """
    name = "squared_hinge_loss"
    _check_scores_labels(name, scores, y)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: expected reduction in ('mean', 'sum', 'none'), "
                         f"got {reduction!r}")
    t = torch.full_like(scores, -1.0)
    t.scatter_(1, y.unsqueeze(1).to(scores.device), 1.0)  # t_ij = +1 if j = y_i else -1
    h = (1 - t * scores).clamp_min(0)  # max(0, 1 - t s)
    per = (h.square() if squared else h).sum(1)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


class LinearSVMHead(Estimator):
    r"""Linear one-vs-rest SVM head :math:`s(z) = z W^T + b` with a ``fit`` of the SVM primal.

    ``forward`` returns the ``(*, K)`` scores (``argmax`` is the class); train it with
    :func:`squared_hinge_loss` (plus weight decay) like any layer, or call
    ``fit(Z, y)`` to minimize :math:`\tfrac12\|W\|_F^2 + C \sum_{ij} \max(0, 1 - t_{ij}
    s_{ij})^2` by full-batch L-BFGS (the objective is convex and smooth), as
    ``sklearn.svm.LinearSVC(loss="squared_hinge")`` does with its own solver.

    Args:
        in_features: feature width :math:`D`.
        n_classes: :math:`K \ge 2`.
        C: inverse regularization strength :math:`C > 0` of ``fit``.
        device, dtype: of the weights (None: torch's defaults; ``fit`` on data of
            another dtype moves the head to it, see :mod:`lamods.base`).

    Examples::

        >>> Z = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> svm = LinearSVMHead(2, 2, C=10.0).fit(Z, torch.tensor([0, 1, 0, 1]))
        >>> svm(Z).argmax(1)
        tensor([0, 1, 0, 1])
    """

    def __init__(self, in_features: int, n_classes: int, *, C: float = 1.0,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(device=device, dtype=dtype)
        name = "LinearSVMHead"
        self.in_features = check_positive_int(name, "in_features", in_features)
        self.n_classes = check_positive_int(name, "n_classes", n_classes)
        if n_classes < 2:
            raise ValueError(f"{name}: expected n_classes >= 2, got {n_classes}")
        self.C = check_positive(name, "C", C)
        self.linear = nn.Linear(in_features, n_classes, device=device, dtype=dtype)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    _FITTED_MARK = ""  # a layer: usable (all-zero scores) before fit

    def _n_features(self) -> int:
        return self.in_features

    def forward(self, z: Tensor) -> Tensor:
        z = self._input("forward", z)
        return self.linear(z)  # s = z W^T + b

    def fit(self, Z: object, y: object, *, max_iter: int = 200,
            tol: float = 1e-6) -> LinearSVMHead:
        """Minimize the ``LinearSVC`` primal on features ``Z`` ``(n, D)`` and labels ``y``."""
        name = "LinearSVMHead.fit"
        max_iter = check_positive_int(name, "max_iter", max_iter)
        Z = self._fit_input("fit", Z, what="Z", adopt=False)
        if Z.shape[1] != self.in_features:
            raise ValueError(f"{name}: expected Z with last dimension {self.in_features}, "
                             f"got {Z.shape[1]} (shape {tuple(Z.shape)})")
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        self._adopt(Z.dtype, Z.device)
        Z = Z.detach()
        _check_scores_labels(name, Z.new_empty(Z.shape[0], self.n_classes), y)
        W = self.linear.weight
        opt = torch.optim.LBFGS(self.linear.parameters(), lr=1.0, max_iter=max_iter,
                                tolerance_grad=tol, tolerance_change=tol * tol,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            # 1/2 ||W||^2 + C sum_ij max(0, 1 - t s)^2
            loss = 0.5 * W.square().sum() + self.C * squared_hinge_loss(
                self.linear(Z), y, reduction="sum")
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_classes={self.n_classes}, C={self.C:g}"
