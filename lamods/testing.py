"""Gradient-check helpers and a reusable test battery for lamods modules.

Functions (no test framework needed):

- :func:`check_gradients` runs ``torch.autograd.gradcheck`` and, optionally,
  ``gradgradcheck`` in float64 on copies of the inputs.
- :func:`check_module_gradients` does the same for a module's input *and* all
  its parameters (through ``torch.func.functional_call``).
- :func:`assert_matches_reference` compares outputs and every input/parameter
  gradient of a function with a reference (plain torch ops, autograd) at the
  named tolerance of :data:`TOLERANCES`.
- :func:`available_devices` lists ``cpu`` and ``cuda`` when present.

:class:`ModuleBattery` is one test battery that a layer's tests join by giving
a builder and a reference (pytest is needed for it)::

    class TestMyLayer(ModuleBattery):
        name = "MyLayer"
        in_features = 7

        def build(self, *, device, dtype):
            return MyLayer(7, 3, device=device, dtype=dtype)

        def reference(self, module, params, x):
            return x @ params["weight"].T

It checks device x dtype x batch shape against the reference (outputs and
gradients), float64 gradcheck/gradgradcheck, ``state_dict`` round trip,
``.to(dtype)``, bf16 autocast on CPU, ``torch.compile``, ``torch.func.grad``
and the bad-input messages.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BATCH_SHAPES",
    "DTYPES",
    "TOLERANCES",
    "ModuleBattery",
    "Tolerance",
    "assert_close",
    "assert_matches_reference",
    "available_devices",
    "check_gradients",
    "check_module_gradients",
]


@dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance for ``torch.testing.assert_close``."""

    rtol: float
    atol: float


#: Named tolerances for comparing with a reference computed in the same dtype.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-12),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-5),
    torch.bfloat16: Tolerance(rtol=2e-2, atol=2e-2),
    torch.float16: Tolerance(rtol=2e-3, atol=2e-3),
}

#: The leading batch shapes every layer is tested with: ``(*, features)``.
BATCH_SHAPES: tuple[tuple[int, ...], ...] = ((), (5,), (2, 3))

#: The dtypes every layer is tested in.
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)


def available_devices() -> list[str]:
    """``["cpu"]`` plus ``"cuda"`` when a CUDA device is present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_close(actual: Tensor, expected: Tensor, *, what: str = "value",
                 tolerance: Tolerance | None = None) -> None:
    """``torch.testing.assert_close`` at the named tolerance of ``expected``'s dtype."""
    tol = tolerance or TOLERANCES[expected.dtype]
    torch.testing.assert_close(
        actual, expected, rtol=tol.rtol, atol=tol.atol,
        msg=lambda m: f"{what} differs from the reference: {m}",
    )


def _float64_leaves(inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(
        t.detach().to(torch.float64).requires_grad_(t.is_floating_point())
        if isinstance(t, Tensor) else t
        for t in inputs
    )


def check_gradients(fn: Callable[..., Tensor], *inputs: Tensor, gradgrad: bool = True,
                    **gradcheck_kwargs) -> None:
    """gradcheck (and gradgradcheck) ``fn`` in float64 at float64 copies of ``inputs``.

    Raises ``torch.autograd.gradcheck.GradcheckError`` with torch's message on a mismatch.
    """
    leaves = _float64_leaves(inputs)
    torch.autograd.gradcheck(fn, leaves, **gradcheck_kwargs)
    if gradgrad:
        torch.autograd.gradgradcheck(fn, leaves, **gradcheck_kwargs)


def check_module_gradients(module: nn.Module, x: Tensor, *, gradgrad: bool = True,
                           **gradcheck_kwargs) -> None:
    """gradcheck a module with respect to its input and every parameter, in float64."""
    module = copy.deepcopy(module).to(torch.float64)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = [p for _, p in module.named_parameters() if p.requires_grad]

    def fn(x: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    check_gradients(fn, x, *params, gradgrad=gradgrad, **gradcheck_kwargs)


def assert_matches_reference(
    fn: Callable[..., Tensor],
    reference: Callable[..., Tensor],
    *inputs: Tensor,
    tolerance: Tolerance | None = None,
) -> None:
    """Outputs and gradients of ``fn`` equal those of ``reference`` on the same inputs.

    Every floating-point input is made a fresh leaf that requires grad; both
    functions are backpropagated with the same random upstream gradient.
    """
    def leaves() -> list[Tensor]:
        return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]

    ours_in, ref_in = leaves(), leaves()
    ours, ref = fn(*ours_in), reference(*ref_in)
    assert_close(ours, ref, what="output", tolerance=tolerance)
    grad_out = torch.randn_like(ref)
    ours.backward(grad_out)
    ref.backward(grad_out)
    for i, (a, b) in enumerate(zip(ours_in, ref_in)):
        if b.grad is None:
            assert a.grad is None, f"input {i}: reference has no gradient but ours does"
            continue
        assert a.grad is not None, f"input {i}: gradient missing"
        assert_close(a.grad, b.grad, what=f"gradient of input {i}", tolerance=tolerance)


# ---------------------------------------------------------------------------
# The battery (needs pytest)
# ---------------------------------------------------------------------------
try:  # pragma: no cover - import guard
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    _DEVICES = [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.cuda, pytest.mark.skipif(
                not torch.cuda.is_available(), reason="CUDA device not present")],
        ),
    ]
    _parametrize_device = pytest.mark.parametrize("device", _DEVICES)
    _parametrize_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=str)
    _parametrize_batch = pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
else:  # pragma: no cover
    def _identity(f):
        return f

    _parametrize_device = _parametrize_dtype = _parametrize_batch = _identity


class ModuleBattery:
    """A pytest battery for a layer with inputs ``(*, in_features)``.

    Subclass it in a test file as ``class TestX(ModuleBattery)`` and set:

    Attributes:
        name: the module's name as its error messages spell it.
        in_features: width of the input's last dimension.
        gradgrad: whether double backward is meant to work.
        compile_backend: backend for the ``torch.compile`` test.
        casts_inputs: the module follows lamods' fit-style input rule (Note [input
            dtype rule] in :mod:`lamods.base`): integer and other floating inputs are
            cast to its dtype rather than refused, as the layers do.

    and implement :meth:`build` and :meth:`reference`.
    """

    name: str = ""
    in_features: int = 0
    gradgrad: bool = True
    compile_backend: str = "aot_eager"
    casts_inputs: bool = False

    def build(self, *, device: str, dtype: torch.dtype) -> nn.Module:
        raise NotImplementedError

    def reference(self, module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """The module's output computed with plain torch ops (autograd does the backward).

        ``params`` maps ``module``'s parameter names to the tensors to use.
        """
        raise NotImplementedError

    def _reference(self, module: nn.Module, x: Tensor) -> Tensor:
        return self.reference(module, dict(module.named_parameters()), x)

    # -- helpers ---------------------------------------------------------
    def _input(self, batch_shape: tuple[int, ...], device: str, dtype: torch.dtype) -> Tensor:
        return torch.randn(*batch_shape, self.in_features, device=device, dtype=dtype)

    def _run_both(self, module: nn.Module, x: Tensor, tolerance: Tolerance | None = None) -> None:
        names = [n for n, _ in module.named_parameters()]
        params = [p for _, p in module.named_parameters()]

        def ours(x: Tensor, *ps: Tensor) -> Tensor:
            return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

        def ref(x: Tensor, *ps: Tensor) -> Tensor:
            return self.reference(module, dict(zip(names, ps)), x)

        assert_matches_reference(ours, ref, x, *params, tolerance=tolerance)

    # -- the tests -------------------------------------------------------
    @_parametrize_device
    @_parametrize_dtype
    @_parametrize_batch
    def test_matches_reference(self, device: str, dtype: torch.dtype,
                               batch_shape: tuple[int, ...]) -> None:
        module = self.build(device=device, dtype=dtype)
        self._run_both(module, self._input(batch_shape, device, dtype))

    @_parametrize_device
    @_parametrize_batch
    def test_gradcheck(self, device: str, batch_shape: tuple[int, ...]) -> None:
        module = self.build(device=device, dtype=torch.float64)
        x = self._input(batch_shape, device, torch.float64)
        check_module_gradients(module, x, gradgrad=self.gradgrad)

    @_parametrize_device
    def test_state_dict_round_trip(self, device: str) -> None:
        module = self.build(device=device, dtype=torch.float32)
        fresh = self.build(device=device, dtype=torch.float32)
        fresh.load_state_dict(module.state_dict())
        x = self._input((4,), device, torch.float32)
        torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)

    @_parametrize_device
    def test_to_dtype(self, device: str) -> None:
        module = self.build(device=device, dtype=torch.float32).to(torch.float64)
        for p in module.parameters():
            assert p.dtype == torch.float64
        x = self._input((3,), device, torch.float64)
        assert module(x).dtype == torch.float64
        self._run_both(module, x)

    def test_wrong_last_dimension(self) -> None:
        module = self.build(device="cpu", dtype=torch.float32)
        bad = self.in_features + 1
        expected = (f"{self.name}: expected input with last dimension {self.in_features}, "
                    f"got {bad}")
        with pytest.raises(ValueError, match=re.escape(expected)):
            module(torch.randn(2, bad))

    def _check_cast(self, module: nn.Module, x: Tensor) -> None:
        y = module(x)
        assert y.dtype == torch.float32
        assert_close(y, self._reference(module, x.to(torch.float32)).detach(),
                     what="output on an input cast to the module's dtype")

    def test_non_floating_input(self) -> None:
        module = self.build(device="cpu", dtype=torch.float32)
        if self.casts_inputs:
            self._check_cast(module, torch.ones(2, self.in_features, dtype=torch.int64))
            return
        with pytest.raises(TypeError, match=re.escape(
                f"{self.name}: expected a floating-point input, got dtype torch.int64")):
            module(torch.ones(2, self.in_features, dtype=torch.int64))

    def test_dtype_mismatch(self) -> None:
        module = self.build(device="cpu", dtype=torch.float32)
        if self.casts_inputs:
            self._check_cast(module, torch.randn(2, self.in_features, dtype=torch.float64))
            return
        with pytest.raises(TypeError, match=re.escape(
                f"{self.name}: expected input of dtype torch.float32 (the layer's dtype), "
                "got torch.float64")):
            module(torch.randn(2, self.in_features, dtype=torch.float64))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
    def test_device_mismatch(self) -> None:
        module = self.build(device="cpu", dtype=torch.float32)
        what = "the module's" if self.casts_inputs else "the layer's"
        with pytest.raises(RuntimeError, match=re.escape(
                f"{self.name}: expected input on device cpu ({what} device), got cuda:0")):
            module(torch.randn(2, self.in_features, device="cuda"))

    def test_autocast_bf16_cpu(self) -> None:
        module = self.build(device="cpu", dtype=torch.float32)
        x = self._input((4,), "cpu", torch.float32).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        assert y.dtype == torch.bfloat16
        assert_close(y.float(), self._reference(module, x).detach(), what="bf16 autocast output",
                     tolerance=Tolerance(rtol=5e-2, atol=5e-2))
        y.float().sum().backward()
        assert x.grad is not None and x.grad.dtype == x.dtype, "input gradient under autocast"
        assert torch.isfinite(x.grad).all(), "input gradient under autocast"
        for name, p in module.named_parameters():
            if not p.requires_grad:  # frozen (e.g. an adapter's base): no gradient at all
                assert p.grad is None, name
                continue
            assert p.grad is not None and p.grad.dtype == p.dtype, name
            assert torch.isfinite(p.grad).all(), name

    def test_torch_compile(self) -> None:
        torch._dynamo.reset()
        module = self.build(device="cpu", dtype=torch.float32)
        compiled = torch.compile(module, backend=self.compile_backend, fullgraph=True)
        x = self._input((3,), "cpu", torch.float32).requires_grad_()
        y = compiled(x)
        y.sum().backward()
        grad_compiled = x.grad.clone()
        x.grad = None
        self._reference(module, x).sum().backward()
        assert_close(y, self._reference(module, x), what="compiled output")
        assert_close(grad_compiled, x.grad, what="compiled input gradient")

    def test_torch_func_grad(self) -> None:
        module = self.build(device="cpu", dtype=torch.float64)
        x = self._input((4,), "cpu", torch.float64)
        params = {n: p.detach() for n, p in module.named_parameters()}

        def loss(params: dict[str, Tensor], x: Tensor) -> Tensor:
            return torch.func.functional_call(module, params, (x,)).pow(2).sum()

        grads = torch.func.grad(loss, argnums=(0, 1))(params, x)
        leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
        xr = x.clone().requires_grad_()
        self.reference(module, leaves, xr).pow(2).sum().backward()
        for n in params:
            assert_close(grads[0][n], leaves[n].grad, what=f"torch.func.grad of {n}")
        assert_close(grads[1], xr.grad, what="torch.func.grad of the input")
