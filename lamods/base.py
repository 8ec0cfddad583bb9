r"""The one estimator base of every fit-style module (PCA, KMeans, NMF, regressions, ...).

The protocol, shared by every subclass:

- ``fit(X[, y])`` returns ``self``; what was learned lives in registered buffers
  whose names end in ``_`` (so ``state_dict``, ``.to()`` and checkpoints carry it).
  An unfitted module holds them empty; ``is_fitted()`` says which; using an
  unfitted module raises :class:`~lamods.exceptions.NotFittedError`.
- Inputs as users bring them: ``fit``, ``transform`` and ``predict`` take tensors
  or array-likes (NumPy arrays, lists) and return tensors.
- Note [fitted dtype]: the fitted state follows the training data's floating dtype
  and device (float32 stays float32, float64 stays float64, as scikit-learn
  preserves them; half precision is fitted in float32; integer and bool data in
  torch's default float dtype), unless the module was built with an explicit
  ``dtype=`` / ``device=``, which then wins. ``fit`` moves the whole module
  (hyperparameters included, Note [exact hyperparameters]) to that dtype and device.
- Note [input dtype rule]: ``transform`` / ``predict`` / ``forward`` cast floating,
  integer and bool inputs to the fitted dtype (differentiably) and return results
  in the fitted dtype; a tensor on another device is an error (move it); an
  array-like goes to the module's device.
- Note [NaN policy], one rule per kind of module:

  * fit-style modules (this base) refuse non-finite data. ``fit``, ``fit_transform``,
    ``partial_fit`` and the like check their training data and targets once per call
    (:meth:`Estimator._fit_input`, :meth:`Estimator._fit_target`) and raise
    ``ValueError`` counting the NaN or infinite entries. The methods that use a fitted
    module (``predict``, ``transform``, ``inverse_transform``, ``forward``, ``score``)
    check their input once per call (:meth:`Estimator._input`) and raise ``ValueError``
    naming how many rows hold NaN or infinity and the first such row. The check is one
    reduction and one device synchronisation; it cannot run while ``torch.compile``
    traces or inside ``torch.func`` transforms, and there a NaN row gives NaN in its own
    output row only (a cluster label of such a row is -1, never a real cluster);
  * layers (``nn.Module``\ s used inside networks: kernels, random features,
    projections, low-rank layers, whitening in eval mode) keep torch's semantics and do
    not check: a NaN or infinite input row gives non-finite values in its own output row
    (and its own row and column of a Gram matrix) only, never in other rows;
  * layers that learn batch statistics (whitening in training mode) refuse a batch
    with a non-finite row, with the error above, and leave their running statistics as
    they were;
  * iterative fits (Lloyd, NMF's MU and HALS, gradient descent, SGD, ALS) watch their
    loss or iterate and raise :class:`~lamods.exceptions.ConvergenceError` naming the
    iteration (and the step size where there is one) instead of returning NaN;
  * fitted buffers that hold training data (``X_fit_``, ``landmarks_``) are copies: no
    module keeps a reference to the caller's data, so changing it later changes nothing.
- ``n_features_in_``: the width seen by ``fit`` (0 before).
- ``get_params()`` / ``set_params()`` follow scikit-learn's contract (constructor
  arguments only, stored unmodified), so ``sklearn.base.clone`` works.
- ``load_state_dict`` takes a fitted state of any size: the fitted buffers are
  resized to the incoming shapes, after checking that those shapes agree with each
  other and with the constructor arguments; a mismatch raises at load time.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lamods._hyperparams import retype_hyperparameters
from lamods._validation import (
    as_float_tensor,
    check_data,
    check_device,
    check_features,
    check_finite_rows,
    check_float_dtype,
)
from lamods.exceptions import NotFittedError

__all__ = ["Estimator"]


class Estimator(nn.Module):
    """Base class of lamods' fit-style modules (see the module docstring for the protocol).

    Subclasses declare:

    - ``_FITTED``: names of the floating fitted buffers, created empty;
    - ``_RESIZED``: other data-shaped buffers the subclass registers itself (e.g.
      integer labels), resized on ``load_state_dict`` like the fitted ones;
    - ``_FITTED_MARK``: the buffer whose emptiness means "not fitted" (default:
      the first of ``_FITTED``; ``""`` for a module usable before ``fit``);
    - ``_FITTED_SHAPES``: symbolic shapes checked on ``load_state_dict``, e.g.
      ``{"components_": ("k", "d"), "mean_": ("d",)}``; a leading ``"..."``
      binds any leading dimensions; :meth:`_known_dims` pins symbols to
      constructor arguments;
    - ``_FIT_CALL``: how the not-fitted message says to fit (``"fit"``);
    - ``_DERIVED``: for :meth:`set_params`, the members built from a parameter
      (``{"kernel": ("kernel_module",)}``), copied from a freshly built module.

    Args:
        device: where the fitted state lives; None follows the training data.
        dtype: floating dtype of the fitted state; None follows the training data.
    """

    _FITTED: ClassVar[tuple[str, ...]] = ()
    _RESIZED: ClassVar[tuple[str, ...]] = ()
    _FITTED_MARK: ClassVar[str | None] = None
    _FITTED_SHAPES: ClassVar[dict[str, tuple[str | int, ...]]] = {}
    _FIT_CALL: ClassVar[str] = "fit"
    _DERIVED: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_float_dtype(name, dtype)
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"{name}: expected device to be a torch.device, a device "
                                 f"string or None, got {device!r} ({err})") from None
        self.device = device
        self.dtype = dtype
        for buf in self._FITTED:
            self.register_buffer(buf, torch.empty(0, device=device, dtype=dtype))

    # -- fitted state --------------------------------------------------------
    def _mark(self) -> str:
        return self._FITTED[0] if self._FITTED_MARK is None else self._FITTED_MARK

    def is_fitted(self) -> bool:
        """Whether ``fit`` has run (or a fitted ``state_dict`` was loaded)."""
        mark = self._mark()
        return not mark or getattr(self, mark).numel() > 0

    def _check_fitted(self, method: str) -> None:
        if not self.is_fitted():
            name = type(self).__name__
            raise NotFittedError(f"{name}.{method}: this {name} is not fitted yet; call "
                                 f"{self._FIT_CALL} first, or load a fitted state_dict")

    def _fitted_reference(self) -> Tensor:
        """A tensor with the fitted dtype and device (the mark buffer, or any floating one)."""
        mark = self._mark()
        if mark:
            return getattr(self, mark)
        for t in (*self.parameters(), *self.buffers()):
            if t.is_floating_point():
                return t
        raise NotImplementedError(f"{type(self).__name__} holds no floating tensor")

    @property
    def n_features_in_(self) -> int:
        """Number of features seen by ``fit`` (0 before fitting)."""
        return self._n_features() if self.is_fitted() else 0

    def _n_features(self) -> int:
        return getattr(self, self._mark()).shape[-1]

    # -- inputs ----------------------------------------------------------------
    def _fit_input(self, method: str, X: object, *, what: str = "X", ndim: int = 2,
                   min_samples: int = 1, adopt: bool = True) -> Tensor:
        """Training data as a finite floating tensor in the fit dtype (Note [fitted dtype]).

        Moves the module to that dtype and device when ``adopt``.
        """
        name = f"{type(self).__name__}.{method}"
        X = as_float_tensor(name, X, what=what, dtype=self.dtype, device=self.device)
        check_data(name, X, what=what, ndim=ndim, min_samples=min_samples)
        if adopt:
            self._adopt(X.dtype, X.device)
        return X

    def _fit_target(self, method: str, y: object, X: Tensor, *, what: str = "y",
                    ndims: tuple[int, ...] = (1, 2)) -> Tensor:
        """Targets ``y`` with one row per row of ``X``, in ``X``'s dtype and device, finite."""
        name = f"{type(self).__name__}.{method}"
        if isinstance(y, Tensor) and y.device != X.device and self.device is None:
            check_device(name, y, X, what="X's")
        y = as_float_tensor(name, y, what=what, dtype=X.dtype, device=X.device)
        if y.dim() not in ndims:
            shapes = " or ".join({1: "(n_samples,)", 2: "(n_samples, n_targets)"}[d]
                                 for d in ndims)
            raise ValueError(f"{name}: expected {what} of shape {shapes}, got shape "
                             f"{tuple(y.shape)}")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"{name}: expected {what} with {X.shape[0]} rows (one per row of "
                             f"X), got {y.shape[0]}")
        check_data(name, y, what=what, ndim=y.dim())
        return y

    def _input(self, method: str, X: object, *, what: str = "X",
               width: int | None = None, finite: bool = True) -> Tensor:
        """Input of a fitted method ``(*, width)`` in the fitted dtype (Note [input dtype rule]).

        With ``finite``, a row holding NaN or infinity raises (Note [NaN policy]).
        """
        self._check_fitted(method)
        name = f"{type(self).__name__}.{method}"
        ref = self._fitted_reference()
        if isinstance(X, Tensor):
            check_device(name, X, ref, what="the module's")
        X = as_float_tensor(name, X, what=what, dtype=ref.dtype, device=ref.device)
        check_features(name, X, self.n_features_in_ if width is None else width)
        if finite:
            check_finite_rows(name, X, what)
        return X

    def _adopt(self, dtype: torch.dtype, device: torch.device) -> None:
        """Move the module (hyperparameters exactly, Note [exact hyperparameters]) to the fit
        dtype and device."""
        retype_hyperparameters(self, dtype, device)
        self.to(device=device, dtype=dtype)

    # -- loading -----------------------------------------------------------------
    def _known_dims(self) -> dict[str, int]:
        """Symbols of ``_FITTED_SHAPES`` fixed by constructor arguments (e.g. ``{"k": 8}``)."""
        return {}

    def _shape_mismatch(self, shapes: dict[str, torch.Size]) -> str | None:
        """Why the incoming fitted shapes disagree, or None when they fit together."""
        bound: dict[str, Any] = dict(self._known_dims())
        for key, spec in self._FITTED_SHAPES.items():
            if key not in shapes or shapes[key].numel() == 0:
                continue  # absent, or empty (e.g. PCA's scatter_ after the full solver)
            shape = tuple(shapes[key])
            if spec and spec[0] == "...":
                lead, spec = shape[:len(shape) - len(spec) + 1], spec[1:]
                shape = shape[len(lead):]
                if "..." in bound and bound["..."] != lead:
                    return f"{key} has leading dimensions {lead}, expected {bound['...']}"
                bound["..."] = lead
            if len(shape) != len(spec):
                return f"{key} has shape {tuple(shapes[key])}, expected {len(spec)} dimensions"
            for size, sym in zip(shape, spec):
                want = sym if isinstance(sym, int) else bound.setdefault(sym, size)
                if size != want:
                    return (f"{key} has shape {tuple(shapes[key])}, expected {sym} = {want} "
                            f"from the other fitted buffers and the constructor arguments")
        return None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        incoming = {buf: state_dict[prefix + buf].shape
                    for buf in (*self._FITTED, *self._RESIZED) if prefix + buf in state_dict}
        if any(s.numel() for s in incoming.values()):
            why = self._shape_mismatch(incoming)
            if why is not None:
                error_msgs.append(f"{type(self).__name__}: the fitted state does not fit "
                                  f"together: {why}")
                return
        # fitted buffers change shape with the data: take the incoming shapes
        for buf, shape in incoming.items():
            old = self._buffers[buf]
            assert old is not None
            self._buffers[buf] = torch.empty(shape, dtype=old.dtype, device=old.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    # -- scikit-learn parameters -----------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Constructor arguments (scikit-learn's ``get_params`` keys), sorted."""
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (scikit-learn's contract).

        With ``deep``, parameters that have ``get_params`` add theirs as ``name__param``.
        """
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor arguments (``name__param`` for nested ones); returns ``self``.

        Values are validated by building a new module with them first, so a bad value
        raises and leaves this module as it was. A changed parameter is stored as given;
        what the constructor derives from it (``_DERIVED``) is rebuilt. The fitted state
        is kept, as in scikit-learn: call ``fit`` again for it to reflect the change.
        """
        if not params:
            return self
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        plain: dict[str, Any] = {}
        for key, value in params.items():
            head, _, sub = key.partition("__")
            if head not in valid:
                raise ValueError(f"Invalid parameter {head!r} for estimator "
                                 f"{type(self).__name__}. Valid parameters are: {valid!r}.")
            if sub:
                nested.setdefault(head, {})[sub] = value
            else:
                plain[head] = value
        merged = {**self.get_params(deep=False), **plain}
        fresh = type(self)(**merged)  # validates; raises before anything changes
        for head, sub in nested.items():
            getattr(self if head not in plain else fresh, head).set_params(**sub)
        for key, value in plain.items():
            setattr(self, key, value)
            for member in self._DERIVED.get(key, ()):
                setattr(self, member, getattr(fresh, member))
        return self

    def __sklearn_clone__(self) -> Estimator:
        """``sklearn.base.clone``: a new unfitted module with deep copies of the parameters
        (a ``torch.device`` is passed as is: it has no identity to keep)."""
        params = {k: v if isinstance(v, (torch.device, torch.dtype)) else copy.deepcopy(v)
                  for k, v in self.get_params(deep=False).items()}
        return type(self)(**params)
