"""What every fit-style module of :mod:`lamods.classic` shares: fitted buffers and input checks.

The fit-style protocol (the one ``experiments.fitted`` relies on): ``fit(X)`` or
``fit(X, y)`` returns ``self``; ``is_fitted()`` says whether it has been fitted;
what was learned lives in registered buffers whose names end in ``_`` (so
``state_dict``, ``.to()`` and checkpoints carry it, and an unfitted module can
load a fitted ``state_dict``); ``forward`` predicts or transforms; using an
unfitted module raises :class:`NotFittedError`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lamods._checks import check_like
from lamods.decomp._checks import check_matrix, check_symmetric_finite


class NotFittedError(RuntimeError):
    """Raised when a fit-style module is used before ``fit`` (or loading a fitted state)."""

    __module__ = "lamods.classic"


class SingularSystemError(ValueError):
    """Raised when a linear system has no unique solution and the method cannot pick one."""

    __module__ = "lamods.classic"


class FitState(nn.Module):
    """Base of the fit-style modules: empty fitted buffers, resized on ``load_state_dict``.

    Subclasses list their data-shaped buffers in ``_FITTED`` (created empty) and
    name in ``_FITTED_MARK`` the one whose emptiness means "not fitted".
    """

    _FITTED: tuple[str, ...] = ()
    _FITTED_MARK: str = ""

    def _register_fitted(self, device: torch.device | str | None,
                         dtype: torch.dtype | None) -> None:
        for buf in self._FITTED:
            self.register_buffer(buf, torch.empty(0, device=device, dtype=dtype))

    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or a fitted ``state_dict`` was loaded)."""
        return getattr(self, self._FITTED_MARK).numel() > 0

    def _check_fitted(self, method: str) -> None:
        if not self.is_fitted():
            name = type(self).__name__
            raise NotFittedError(f"{name}.{method}: this {name} is not fitted yet; call fit "
                                 "first, or load a fitted state_dict")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # fitted buffers change shape with the data: take the incoming shapes
        for buf in self._FITTED:
            key = prefix + buf
            if key in state_dict and buf in self._buffers:
                old = self._buffers[buf]
                self._buffers[buf] = torch.empty(state_dict[key].shape, dtype=old.dtype,
                                                 device=old.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def check_data(name: str, X: object, reference: Tensor | None = None,
               what: str = "the module's") -> Tensor:
    """``X`` must be a finite floating tensor of shape ``(n_samples, n_features)``."""
    check_matrix(name, X)
    if X.dim() != 2:
        raise ValueError(f"{name}: expected data of shape (n_samples, n_features), "
                         f"got shape {tuple(X.shape)}")
    if reference is not None:
        check_like(name, X, reference, what=what)
    check_symmetric_finite(name, X, symmetric=False)
    return X


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``; None (torch's global RNG) for None."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)
