r"""Model surgery: swap a model's ``nn.Linear`` layers for low-rank ones or wrap them in adapters.

- :func:`compress` replaces each selected ``nn.Linear`` by the
  :class:`~lamods.layers.LowRankLinear` of its truncated SVD where that saves
  parameters, and returns a :class:`CompressionReport` (per layer: shape, rank,
  parameters before and after, relative weight error; totals).
- :func:`add_adapters` wraps each selected ``nn.Linear`` in a
  :class:`~lamods.layers.LowRankAdapter` and freezes every other parameter;
  :func:`merge_adapters` turns the adapters back into plain ``nn.Linear``\ s.

Layers are selected by their names in ``model.named_modules()`` (``"encoder.0"``,
``"head.fc"``). ``include`` and ``exclude`` take one pattern or a list of them:

- a ``str`` is a shell-style glob matched against the whole name with
  :func:`fnmatch.fnmatchcase` (``"encoder.*"``, ``"*.fc?"``; ``*`` also crosses dots);
- a compiled ``re.Pattern`` must match the whole name (``re.fullmatch``):
  ``re.compile(r"layers\.\d+\.mlp\..*")``.

A layer is selected when it matches some ``include`` pattern (``None``: every
layer) and no ``exclude`` pattern. Only exact ``nn.Linear`` instances are touched:
subclasses (e.g. the ``out_proj`` of ``nn.MultiheadAttention``, whose weight the
attention reads directly) are listed in the report as kept, with the reason, as are
layers whose weight is tied to another module and layers already inside a
``LowRankAdapter``. A layer that appears under several names is replaced everywhere.

Parameter counts: an ``nn.Linear(n, m)`` holds :math:`m n` (+ ``m`` bias)
parameters, its rank-``r`` replacement :math:`r (m + n + 1)` (+ ``m``); the
relative weight error is :math:`\|W - W_r\|_F / \|W\|_F = \sqrt{\sum_{i>r}
\sigma_i^2 / \sum_i \sigma_i^2}` (Note [Eckart-Young] in :mod:`lamods.layers.lowrank`).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lamods._validation import check_positive_int
from lamods.layers.lowrank import (
    LowRankAdapter,
    LowRankLinear,
    check_energy,
    check_rank_or_energy,
    energy_rank,
    weight_svd,
)

__all__ = [
    "AdapterReport",
    "CompressionReport",
    "LayerAdapter",
    "LayerCompression",
    "add_adapters",
    "compress",
    "merge_adapters",
]

Pattern = str | re.Pattern[str]
Patterns = Pattern | Sequence[Pattern] | None


# ---------------------------------------------------------------------------
# Selecting and replacing layers
# ---------------------------------------------------------------------------
def _as_patterns(who: str, arg: str, patterns: Patterns) -> tuple[Pattern, ...] | None:
    if patterns is None:
        return None
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    out = tuple(patterns) if isinstance(patterns, (list, tuple)) else (patterns,)
    for p in out:
        if not isinstance(p, (str, re.Pattern)):
            raise TypeError(
                f"{who}: expected {arg} to be a str glob, a compiled re.Pattern or a list of "
                f"them, got {type(p).__name__}"
            )
    return out


def _matches(name: str, patterns: Iterable[Pattern]) -> bool:
    for p in patterns:
        if isinstance(p, str):
            if fnmatch.fnmatchcase(name, p):
                return True
        elif p.fullmatch(name):
            return True
    return False


def _pattern_repr(patterns: tuple[Pattern, ...] | None) -> str:
    if patterns is None:
        return "None"
    return repr([p if isinstance(p, str) else p.pattern for p in patterns])


@dataclass
class _Candidate:
    name: str                    # first name in named_modules()
    module: nn.Linear
    aliases: list[str] = field(default_factory=list)   # every name it appears under
    skip: str = ""               # why it cannot be replaced ("" when it can)


def _linear_candidates(model: nn.Module) -> list[_Candidate]:
    """Every nn.Linear of ``model``, first name first, with the reason it must stay if any."""
    found: dict[int, _Candidate] = {}
    parents: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for child in module.children():
            parents.setdefault(id(child), module)
        if isinstance(module, nn.Linear):
            if id(module) in found:
                found[id(module)].aliases.append(name)
            else:
                found[id(module)] = _Candidate(name, module, [name])
    # which module names own each parameter (tied weights show up under two owners)
    owners: dict[int, set[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), set()).add(pname.rpartition(".")[0])
    for cand in found.values():
        m = cand.module
        if type(m) is not nn.Linear:
            cand.skip = f"a subclass of nn.Linear ({type(m).__name__}), left alone"
        elif isinstance(parents.get(id(m)), LowRankAdapter):
            cand.skip = "inside a LowRankAdapter (merge_adapters first)"
        elif owners.get(id(m.weight), set()) - set(cand.aliases):
            others = sorted(owners[id(m.weight)] - set(cand.aliases))
            cand.skip = f"weight tied to {', '.join(others)}"
    return list(found.values())


def _select(who: str, model: nn.Module, include: Patterns,
            exclude: Patterns) -> list[_Candidate]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: expected an nn.Module, got {type(model).__name__}")
    inc = _as_patterns(who, "include", include)
    exc = _as_patterns(who, "exclude", exclude)
    candidates = _linear_candidates(model)
    if not candidates:
        raise ValueError(f"{who}: expected a model with nn.Linear layers, got none in "
                         f"{type(model).__name__}")
    chosen = [
        c for c in candidates
        if (inc is None or any(_matches(a, inc) for a in c.aliases))
        and not (exc is not None and any(_matches(a, exc) for a in c.aliases))
    ]
    if not chosen:
        names = [c.name or "(the model itself)" for c in candidates]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ValueError(
            f"{who}: expected include/exclude to match at least one nn.Linear, got none "
            f"(include={_pattern_repr(inc)}, exclude={_pattern_repr(exc)}); "
            f"the model's Linear layers are: {shown}"
        )
    return chosen


def _replace(model: nn.Module, names: Iterable[str], new: nn.Module) -> nn.Module:
    """Put ``new`` at every name in ``names``; return the (possibly new) root."""
    for name in names:
        if name == "":
            model = new
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
    return model


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear_params(in_features: int, out_features: int, bias: bool) -> int:
    return in_features * out_features + (out_features if bias else 0)


def _lowrank_params(in_features: int, out_features: int, rank: int, bias: bool) -> int:
    return rank * (in_features + out_features + 1) + (out_features if bias else 0)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(before: int, after: int) -> float:
    return before / after if after else math.inf


# ---------------------------------------------------------------------------
# compress
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCompression:
    """One ``nn.Linear`` that :func:`compress` looked at.

    Attributes:
        name: its name in ``model.named_modules()`` (``""`` for the model itself).
        in_features, out_features: its shape.
        rank: the rank of the replacement; None when the layer was kept.
        params_before: parameters of the ``nn.Linear`` (weight and bias).
        params_after: parameters of what is there now (``params_before`` when kept).
        rel_error: :math:`\\|W - W_r\\|_F / \\|W\\|_F` of the weight now there (0 when kept).
        spectral_error: :math:`\\|W - W_r\\|_2 / \\|W\\|_2 = \\sigma_{r+1} / \\sigma_1` (0 when
            kept or at full rank).
        energy: :math:`\\sum_{i \\le r} \\sigma_i^2 / \\sum_i \\sigma_i^2` kept (1 when kept).
        replaced: whether it is now a ``LowRankLinear``.
        note: why it was kept ("" when replaced).
    """

    name: str
    in_features: int
    out_features: int
    rank: int | None
    params_before: int
    params_after: int
    rel_error: float
    spectral_error: float
    energy: float
    replaced: bool
    note: str = ""

    @property
    def params_saved(self) -> int:
        return self.params_before - self.params_after


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress` did: one :class:`LayerCompression` per selected layer, and totals.

    ``params_before`` / ``params_after`` / ``ratio`` count the replaced layers only;
    ``model_params_before`` / ``model_params_after`` the whole model (shared
    parameters once).
    """

    layers: tuple[LayerCompression, ...]
    model_params_before: int
    model_params_after: int
    rank: int | None = None
    energy: float | None = None

    @property
    def replaced(self) -> tuple[LayerCompression, ...]:
        return tuple(layer for layer in self.layers if layer.replaced)

    @property
    def params_before(self) -> int:
        return sum(layer.params_before for layer in self.replaced)

    @property
    def params_after(self) -> int:
        return sum(layer.params_after for layer in self.replaced)

    @property
    def ratio(self) -> float:
        """``params_before / params_after`` over the replaced layers (1 when none was)."""
        return _ratio(self.params_before, self.params_after) if self.replaced else 1.0

    @property
    def model_ratio(self) -> float:
        return _ratio(self.model_params_before, self.model_params_after)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"settings", "layers": [...], "totals"}``."""
        return {
            "settings": {"rank": self.rank, "energy": self.energy},
            "layers": [asdict(layer) for layer in self.layers],
            "totals": {
                "layers_replaced": len(self.replaced),
                "layers_kept": len(self.layers) - len(self.replaced),
                "params_before": self.params_before,
                "params_after": self.params_after,
                "ratio": self.ratio,
                "model_params_before": self.model_params_before,
                "model_params_after": self.model_params_after,
                "model_ratio": self.model_ratio,
            },
        }

    def as_markdown(self) -> str:
        """A Markdown table, one row per layer, then the totals."""
        rows = []
        for lay in self.layers:
            rows.append([
                f"`{lay.name}`" if lay.name else "(model)",
                f"{lay.in_features} -> {lay.out_features}",
                lay.rank if lay.rank is not None else "-",
                f"{lay.params_before:,}", f"{lay.params_after:,}",
                f"{lay.rel_error:.4f}", f"{lay.energy:.4f}",
                "replaced" if lay.replaced else f"kept: {lay.note}",
            ])
        rows.append([f"**replaced layers ({len(self.replaced)})**", "", "",
                     f"{self.params_before:,}", f"{self.params_after:,}", "", "",
                     f"{self.ratio:.2f}x fewer"])
        rows.append(["**whole model**", "", "", f"{self.model_params_before:,}",
                     f"{self.model_params_after:,}", "", "", f"{self.model_ratio:.2f}x fewer"])
        return _table(["layer", "in -> out", "rank", "params before", "params after",
                       "rel. Frobenius error", "energy kept", "result"], rows)

    def __str__(self) -> str:
        return self.as_markdown()


def compress(
    model: nn.Module,
    rank: int | None = None,
    energy: float | None = None,
    *,
    min_params_saved: int = 1,
    include: Patterns = None,
    exclude: Patterns = None,
    inplace: bool = False,
    orthonormal: bool = False,
) -> tuple[nn.Module, CompressionReport]:
    r"""Replace ``nn.Linear`` layers by the :class:`LowRankLinear` of their truncated SVD.

    Each selected layer (module docstring: ``include`` / ``exclude``) becomes
    ``LowRankLinear.from_linear(layer, rank=rank)`` (or ``energy=energy``) when that
    saves at least ``min_params_saved`` parameters, i.e. when
    :math:`m n - r (m + n + 1) \ge` ``min_params_saved``; otherwise it is kept and the
    report says why. The replacement is the best rank-``r`` approximation of the
    weight (Eckart-Young); the report gives its relative error.

    Args:
        model: any ``nn.Module`` (an ``nn.Linear`` itself too).
        rank: the rank of every replacement; layers with ``min(in, out) < rank`` are kept.
        energy: instead of ``rank``: per layer, the smallest rank that keeps this
            fraction in ``(0, 1]`` of the squared singular values. Exactly one of the two.
        min_params_saved: replace a layer only if that saves at least this many
            parameters (default 1: whenever it saves any; 0 also replaces break-even
            layers; a negative number allows growth).
        include: patterns of layer names to consider (None: every ``nn.Linear``).
        exclude: patterns of layer names to leave alone.
        inplace: modify ``model`` itself; by default a deep copy is compressed and
            ``model`` is left as it was.
        orthonormal: build the replacements with ``orthonormal=True``.

    Returns:
        ``(compressed_model, report)``: the model (``model`` itself when ``inplace``,
        except when ``model`` is itself an ``nn.Linear``) and a :class:`CompressionReport`.

    Raises:
        ValueError: both or neither of ``rank`` / ``energy``; ``rank < 1``; ``energy``
            outside ``(0, 1]``; no ``nn.Linear`` matched ``include`` / ``exclude``.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32),
        ...                     nn.ReLU(), nn.Linear(32, 4))
        >>> small, report = compress(net, rank=8)
        >>> [type(m).__name__ for m in small]
        ['LowRankLinear', 'ReLU', 'LowRankLinear', 'ReLU', 'Linear']
        >>> report.layers[2].note
        'rank 8 > min(in, out) = 4'
        >>> report.params_before, report.params_after  # 128*64+64 + 64*32+32 -> 8*193+64 + 8*97+32
        (10336, 2416)
        >>> small(torch.randn(3, 128)).shape
        torch.Size([3, 4])
        >>> print(report.as_markdown())  # doctest: +ELLIPSIS
        | layer | in -> out | rank | params before | params after | rel. Frobenius error | ...
        |---|---|---|---|---|---|---|---|
        | `0` | 128 -> 64 | 8 | 8,256 | 1,608 | 0.8... | 0.2... | replaced |
        ...
    """
    who = "compress"
    check_rank_or_energy(who, rank, energy)
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"{who}: expected rank to be a positive int, got {rank!r}")
    else:
        energy = check_energy(who, energy)
    if isinstance(min_params_saved, bool) or not isinstance(min_params_saved, int):
        raise TypeError(f"{who}: expected min_params_saved to be an int, got {min_params_saved!r}")
    if not inplace:
        model = copy.deepcopy(model)
    chosen = _select(who, model, include, exclude)
    model_before = _count(model)
    rows: list[LayerCompression] = []
    for cand in chosen:
        lin = cand.module
        n, m, has_bias = lin.in_features, lin.out_features, lin.bias is not None
        before = _count(lin)

        def kept(note: str, cand: _Candidate = cand, before: int = before) -> LayerCompression:
            lin = cand.module
            return LayerCompression(cand.name, lin.in_features, lin.out_features, None, before,
                                    before, 0.0, 0.0, 1.0, False, note)

        if cand.skip:
            rows.append(kept(cand.skip))
            continue
        if rank is not None and rank > min(n, m):
            rows.append(kept(f"rank {rank} > min(in, out) = {min(n, m)}"))
            continue
        if rank is not None and before - _lowrank_params(n, m, rank, has_bias) < min_params_saved:
            saved = before - _lowrank_params(n, m, rank, has_bias)
            rows.append(kept(f"saves {saved:,} parameters (< min_params_saved={min_params_saved})"))
            continue
        U, S, Vh = weight_svd(who, lin.weight)
        r = rank if rank is not None else energy_rank(S, energy)
        saved = before - _lowrank_params(n, m, r, has_bias)
        if saved < min_params_saved:
            rows.append(kept(f"rank {r} for energy {energy:g} saves {saved:,} parameters "
                             f"(< min_params_saved={min_params_saved})"))
            continue
        power = S.detach().to(torch.float64).square()
        total = float(power.sum())
        tail = float(power[r:].sum())
        s1 = float(S[0])
        new = LowRankLinear._from_svd(lin, U, S, Vh, r, orthonormal=orthonormal)
        new.train(lin.training)
        for p in new.parameters():
            p.requires_grad_(lin.weight.requires_grad)
        model = _replace(model, cand.aliases, new)
        rows.append(LayerCompression(
            name=cand.name, in_features=n, out_features=m, rank=r, params_before=before,
            params_after=_count(new),
            rel_error=math.sqrt(tail / total) if total > 0 else 0.0,
            spectral_error=float(S[r]) / s1 if r < S.numel() and s1 > 0 else 0.0,
            energy=(total - tail) / total if total > 0 else 1.0,
            replaced=True,
        ))
    return model, CompressionReport(tuple(rows), model_before, _count(model), rank, energy)


# ---------------------------------------------------------------------------
# add_adapters / merge_adapters
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerAdapter:
    """One ``nn.Linear`` that :func:`add_adapters` looked at (``rank`` None when kept)."""

    name: str
    in_features: int
    out_features: int
    rank: int | None
    adapter_params: int
    wrapped: bool
    note: str = ""


@dataclass(frozen=True)
class AdapterReport:
    """What :func:`add_adapters` did, with the trainable-parameter totals after it."""

    layers: tuple[LayerAdapter, ...]
    trainable_params: int
    total_params: int
    rank: int
    alpha: float

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"settings", "layers": [...], "totals"}``."""
        return {
            "settings": {"rank": self.rank, "alpha": self.alpha},
            "layers": [asdict(layer) for layer in self.layers],
            "totals": {
                "layers_wrapped": sum(layer.wrapped for layer in self.layers),
                "trainable_params": self.trainable_params,
                "total_params": self.total_params,
                "trainable_fraction": self.trainable_fraction,
            },
        }

    def as_markdown(self) -> str:
        rows = [[f"`{lay.name}`" if lay.name else "(model)",
                 f"{lay.in_features} -> {lay.out_features}",
                 lay.rank if lay.rank is not None else "-", f"{lay.adapter_params:,}",
                 "wrapped" if lay.wrapped else f"kept: {lay.note}"] for lay in self.layers]
        rows.append(["**trainable / total**", "", "",
                     f"{self.trainable_params:,} / {self.total_params:,}",
                     f"{100 * self.trainable_fraction:.2f}%"])
        return _table(["layer", "in -> out", "rank", "adapter params", "result"], rows)

    def __str__(self) -> str:
        return self.as_markdown()


def add_adapters(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    *,
    init: str = "zero",
    include: Patterns = None,
    exclude: Patterns = None,
    inplace: bool = False,
) -> tuple[nn.Module, AdapterReport]:
    r"""Wrap ``nn.Linear`` layers in :class:`LowRankAdapter`\ s and freeze everything else.

    After the call only the adapters' ``A`` and ``B`` require a gradient, so an
    optimiser over ``filter(lambda p: p.requires_grad, model.parameters())`` fine-tunes
    :math:`r (m + n)` parameters per wrapped layer. Layers with
    ``min(in, out) < rank`` are kept (and reported).

    Args:
        model: any ``nn.Module``.
        rank, alpha, init: as in :class:`LowRankAdapter`.
        include, exclude: layer-name patterns (module docstring).
        inplace: modify ``model`` itself; by default a deep copy. If wrapping fails
            part-way (a layer's SVD for ``init="svd"``, a bad ``alpha``), ``model`` is
            left exactly as it was: its layers, weights and ``requires_grad`` flags.

    Returns:
        ``(adapted_model, report)``.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
        >>> tuned, report = add_adapters(net, rank=8, alpha=16, include="0")
        >>> type(tuned[0]).__name__, type(tuned[2]).__name__
        ('LowRankAdapter', 'Linear')
        >>> report.trainable_params  # 8 * (784 + 512)
        10368
        >>> merged = merge_adapters(tuned)
        >>> type(merged[0]).__name__
        'Linear'
    """
    who = "add_adapters"
    check_positive_int(who, "rank", rank)
    if not inplace:
        model = copy.deepcopy(model)
    chosen = _select(who, model, include, exclude)
    # what a failure part-way must restore (Note [NaN policy] in lamods.base: a failed
    # in-place change leaves the model as it was): flags, the wrapped layers, and the
    # weights an "svd" adapter rewrites in place
    flags = [(p, p.requires_grad) for p in model.parameters()]
    root = model
    wrapped: list[tuple[list[str], nn.Linear, torch.Tensor | None]] = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        rows: list[LayerAdapter] = []
        used_alpha = float(rank) if alpha is None else alpha
        for cand in chosen:
            lin = cand.module
            n, m = lin.in_features, lin.out_features
            note = cand.skip or (f"rank {rank} > min(in, out) = {min(n, m)}"
                                 if rank > min(n, m) else "")
            if note:
                rows.append(LayerAdapter(cand.name, n, m, None, 0, False, note))
                continue
            saved = lin.weight.detach().clone() if init == "svd" else None
            wrapped.append((cand.aliases, lin, saved))
            adapter = LowRankAdapter(lin, rank, alpha, init=init)
            adapter.train(lin.training)
            model = _replace(model, cand.aliases, adapter)
            rows.append(LayerAdapter(cand.name, n, m, rank,
                                     adapter.A.numel() + adapter.B.numel(), True))
    except BaseException:
        for aliases, lin, saved in reversed(wrapped):
            model = _replace(model, aliases, lin)
            if saved is not None:
                with torch.no_grad():
                    lin.weight.copy_(saved)
        for p, flag in flags:
            p.requires_grad_(flag)
        assert model is root
        raise
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = AdapterReport(tuple(rows), trainable, _count(model), rank, used_alpha)
    return model, report


def merge_adapters(model: nn.Module, *, inplace: bool = True) -> nn.Module:
    r"""Replace every :class:`LowRankAdapter` by its merged ``nn.Linear`` (weight W + alpha/r B A).

    The new layers' parameters require grad as the adapter's ``A`` did; every
    other parameter is left as it is. Returns the model (a deep copy unless ``inplace``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"merge_adapters: expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    names: dict[int, list[str]] = {}
    adapters: dict[int, LowRankAdapter] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, LowRankAdapter):
            names.setdefault(id(module), []).append(name)
            adapters[id(module)] = module
    for key, adapter in adapters.items():
        linear = adapter.to_linear()
        for p in linear.parameters():
            p.requires_grad_(adapter.A.requires_grad)
        linear.train(adapter.training)
        model = _replace(model, names[key], linear)
    return model
