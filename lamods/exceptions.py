"""The typed errors every lamods package raises.

Each subclasses the builtin a user would already catch, so ``except ValueError``
or ``except RuntimeError`` keeps working, while ``except NotFittedError`` can be
precise. Messages follow one shape: ``Name.method: expected X, got Y``.

Examples::

    >>> import lamods, torch
    >>> try:
    ...     lamods.KMeans(2).predict(torch.zeros(3, 4))
    ... except lamods.NotFittedError as err:
    ...     print(err)
    KMeans.predict: this KMeans is not fitted yet; call fit first, or load a fitted state_dict
"""

from __future__ import annotations

__all__ = [
    "ConvergenceError",
    "ConvergenceWarning",
    "NotFittedError",
    "NotPSDError",
    "SingularSystemError",
]


class NotFittedError(RuntimeError, ValueError, AttributeError):
    """A fit-style module was used before ``fit`` (or before loading a fitted state).

    A ``RuntimeError`` (torch's convention for a module in the wrong state), a
    ``ValueError`` and an ``AttributeError`` (scikit-learn's ``NotFittedError`` is both).
    """

    __module__ = "lamods"


class SingularSystemError(ValueError):
    """A linear system has no unique solution and the method cannot pick one."""

    __module__ = "lamods"


class NotPSDError(ValueError):
    """A matrix that must be symmetric positive (semi-)definite is not, numerically."""

    __module__ = "lamods"


class ConvergenceError(RuntimeError):
    """An iterative fit diverged (a non-finite loss or iterate); the message says where."""

    __module__ = "lamods"


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its iteration limit before meeting its tolerance."""

    __module__ = "lamods"
