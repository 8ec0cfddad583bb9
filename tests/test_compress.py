"""compress / add_adapters / merge_adapters: report numbers, selection, skips, errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from lamods.layers.lowrank import LowRankAdapter, LowRankLinear
from lamods.layers.surgery import add_adapters, compress, merge_adapters

F64 = torch.float64


def _mlp(dtype=torch.float32):
    return nn.Sequential(nn.Linear(96, 64, dtype=dtype), nn.ReLU(),
                         nn.Linear(64, 32, dtype=dtype), nn.ReLU(),
                         nn.Linear(32, 10, dtype=dtype))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 12))
        self.head = nn.ModuleDict({"fc1": nn.Linear(12, 8), "fc2": nn.Linear(8, 3, bias=False)})

    def forward(self, x):
        return self.head["fc2"](torch.tanh(self.head["fc1"](self.encoder(x))))


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------
# compress: numbers
# ---------------------------------------------------------------------------
def test_report_numbers_rank():
    torch.manual_seed(0)
    net = _mlp(F64)
    small, report = compress(net, rank=8)
    assert [layer.name for layer in report.layers] == ["0", "2", "4"]
    for name, (n_in, n_out) in {"0": (96, 64), "2": (64, 32)}.items():
        row = next(layer for layer in report.layers if layer.name == name)
        assert row.replaced and row.rank == 8 and row.note == ""
        assert (row.in_features, row.out_features) == (n_in, n_out)
        assert row.params_before == n_in * n_out + n_out
        assert row.params_after == 8 * (n_in + n_out + 1) + n_out
        # relative errors measured on the dense weights, not from the singular values
        W = net[int(name)].weight.detach()
        W_r = small[int(name)].dense_weight().detach()
        rel = torch.linalg.matrix_norm(W - W_r) / torch.linalg.matrix_norm(W)
        assert row.rel_error == pytest.approx(float(rel), rel=1e-9)
        spec = torch.linalg.matrix_norm(W - W_r, ord=2) / torch.linalg.matrix_norm(W, ord=2)
        assert row.spectral_error == pytest.approx(float(spec), rel=1e-9)
        assert row.energy == pytest.approx(1 - float(rel) ** 2, rel=1e-12)
    last = report.layers[2]
    assert not last.replaced and last.rank is None
    # 32 * 10 + 10 = 330 parameters now, 8 * (32 + 10 + 1) + 10 = 354 at rank 8
    assert last.params_before == last.params_after == 330
    assert last.note == "saves -24 parameters (< min_params_saved=1)"
    # totals over the replaced layers, and over the whole model
    assert report.params_before == 96 * 64 + 64 + 64 * 32 + 32
    assert report.params_after == 8 * (96 + 64 + 1) + 64 + 8 * (64 + 32 + 1) + 32
    assert report.ratio == pytest.approx(report.params_before / report.params_after)
    assert report.model_params_before == _n_params(net)
    assert report.model_params_after == _n_params(small)
    assert report.model_params_before - report.model_params_after == (
        report.params_before - report.params_after)


def test_report_energy_ranks_match_the_spectrum():
    torch.manual_seed(1)
    net = _mlp()
    _, report = compress(net, energy=0.6)
    for row in report.layers:
        s2 = torch.linalg.svdvals(net[int(row.name)].weight.detach().double()).square()
        kept = s2.cumsum(0) / s2.sum()
        r = int((kept < 0.6).sum()) + 1
        if row.replaced:
            assert row.rank == r
            assert row.energy == pytest.approx(float(kept[r - 1]), rel=1e-4)
            assert row.energy >= 0.6 - 1e-6
        else:
            assert f"rank {r} for energy 0.6 saves" in row.note


def test_energy_one_and_full_replacement_reproduce_the_model():
    net = _net_f64()
    x = torch.randn(5, 20, dtype=F64)
    small, report = compress(net, energy=1.0, min_params_saved=-10**9)
    assert all(row.replaced for row in report.layers)
    torch.testing.assert_close(small(x), net(x), rtol=0, atol=1e-12)


def _net_f64():
    return _Net().to(F64)


def test_min_params_saved_keeps_break_even_layers():
    # Linear(20, 16) at rank 8: 320 weights vs 8 * 37 = 296: saves 24
    net = _Net()
    _, report = compress(net, rank=8, include="encoder.0", min_params_saved=25)
    (row,) = report.layers
    assert not row.replaced
    assert row.note == "saves 24 parameters (< min_params_saved=25)"
    _, report = compress(net, rank=8, include="encoder.0", min_params_saved=24)
    assert report.layers[0].replaced and report.layers[0].params_saved == 24
    _, report = compress(net, rank=4, include="head.fc2")
    assert report.layers[0].note == "rank 4 > min(in, out) = 3"


# ---------------------------------------------------------------------------
# compress: copies, selection, special layers
# ---------------------------------------------------------------------------
def test_copy_by_default_inplace_on_request():
    net = _mlp()
    w0 = net[0].weight.detach().clone()
    small, _ = compress(net, rank=16)
    assert small is not net and type(net[0]) is nn.Linear and torch.equal(net[0].weight, w0)
    assert isinstance(small[0], LowRankLinear)
    same, _ = compress(net, rank=16, inplace=True)
    assert same is net and isinstance(net[0], LowRankLinear)


@pytest.mark.parametrize(("include", "exclude", "expected"), [
    (None, None, ["encoder.0", "encoder.2", "head.fc1", "head.fc2"]),
    ("encoder.*", None, ["encoder.0", "encoder.2"]),
    ("*fc?", None, ["head.fc1", "head.fc2"]),
    (None, "head.*", ["encoder.0", "encoder.2"]),
    (re.compile(r"encoder\.\d"), None, ["encoder.0", "encoder.2"]),
    (re.compile(r"fc"), None, None),  # fullmatch: 'fc' alone matches no name
    (["encoder.0", re.compile(r"head\.fc2")], None, ["encoder.0", "head.fc2"]),
    ("*", ["encoder.2", "head.fc1"], ["encoder.0", "head.fc2"]),
])
def test_include_exclude(include, exclude, expected):
    net = _Net()
    if expected is None:
        with pytest.raises(ValueError, match="no|none"):
            compress(net, rank=1, include=include, exclude=exclude)
        return
    _, report = compress(net, rank=1, include=include, exclude=exclude)
    assert [row.name for row in report.layers] == expected


def test_no_match_error_lists_the_layers():
    with pytest.raises(ValueError, match=re.escape(
            "compress: expected include/exclude to match at least one nn.Linear, got none "
            "(include=['decoder.*'], exclude=None); the model's Linear layers are: encoder.0, "
            "encoder.2, head.fc1, head.fc2")):
        compress(_Net(), rank=2, include="decoder.*")


def test_model_without_linears():
    with pytest.raises(ValueError, match=re.escape(
            "compress: expected a model with nn.Linear layers, got none in Conv1d")):
        compress(nn.Conv1d(2, 2, 1), rank=1)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({}, ValueError, "compress: expected exactly one of rank and energy, got neither"),
    ({"rank": 2, "energy": 0.5}, ValueError,
     "compress: expected exactly one of rank and energy, got both"),
    ({"rank": 0}, ValueError, "compress: expected rank to be a positive int, got 0"),
    ({"energy": 1.2}, ValueError, "compress: expected energy in (0, 1], got 1.2"),
    ({"rank": 2, "min_params_saved": 0.5}, TypeError,
     "compress: expected min_params_saved to be an int, got 0.5"),
    ({"rank": 2, "include": 3}, TypeError,
     "compress: expected include to be a str glob, a compiled re.Pattern or a list of them, "
     "got int"),
])
def test_compress_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        compress(_Net(), **kwargs)


def test_the_model_itself_a_linear():
    lin = nn.Linear(30, 20)
    small, report = compress(lin, rank=4)
    assert isinstance(small, LowRankLinear) and small.rank == 4
    assert report.layers[0].name == ""
    assert "(model)" in report.as_markdown()


def test_shared_layer_is_replaced_everywhere():
    shared = nn.Linear(16, 16)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    small, report = compress(net, rank=2)
    assert len(report.layers) == 1
    assert small[0] is small[2] and isinstance(small[0], LowRankLinear)


def test_attention_out_proj_and_tied_weights_are_kept():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(40, 16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.mid = nn.Linear(16, 16)
            self.out = nn.Linear(16, 40, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, tokens):
            h = self.embed(tokens)
            h = self.attn(h, h, h, need_weights=False)[0]
            return self.out(self.mid(h))

    model = Tied()
    tokens = torch.randint(0, 40, (2, 5))
    small, report = compress(model, rank=2)
    notes = {row.name: (row.replaced, row.note) for row in report.layers}
    assert notes["mid"] == (True, "")
    assert notes["attn.out_proj"][0] is False
    assert "subclass of nn.Linear (NonDynamicallyQuantizableLinear)" in notes["attn.out_proj"][1]
    assert notes["out"] == (False, "weight tied to embed")
    assert small.out.weight is small.embed.weight
    assert small(tokens).shape == (2, 5, 40)


def test_training_mode_and_requires_grad_carry_over():
    net = _Net().eval()
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    small, _ = compress(net, rank=2)
    assert not small.encoder[0].training
    assert not any(p.requires_grad for p in small.encoder[0].parameters())
    assert all(p.requires_grad for p in small.head["fc1"].parameters())


def test_report_as_dict_and_markdown():
    _, report = compress(_mlp(), rank=8)
    d = json.loads(json.dumps(report.as_dict()))
    assert d["settings"] == {"rank": 8, "energy": None}
    assert d["totals"]["layers_replaced"] == 2 and d["totals"]["layers_kept"] == 1
    assert d["totals"]["params_after"] == report.params_after
    assert d["layers"][0]["rank"] == 8 and d["layers"][2]["rank"] is None
    md = report.as_markdown()
    assert md.splitlines()[0].startswith("| layer | in -> out | rank | params before |")
    assert "| `0` | 96 -> 64 | 8 | 6,208 | 1,352 |" in md
    assert "kept: saves -24 parameters" in md
    assert f"{report.ratio:.2f}x fewer" in md
    assert str(report) == md


def test_compressed_model_trains_and_round_trips_state_dict():
    net = _Net()
    small, _ = compress(net, rank=3)
    other, _ = compress(_Net(), rank=3)
    other.load_state_dict(small.state_dict())
    x = torch.randn(4, 20)
    torch.testing.assert_close(other(x), small(x), rtol=0, atol=0)
    small(x).square().sum().backward()
    assert small.encoder[0].U.grad is not None


# ---------------------------------------------------------------------------
# add_adapters / merge_adapters
# ---------------------------------------------------------------------------
def test_add_adapters_freezes_the_rest_and_reports():
    net = _Net()
    x = torch.randn(6, 20)
    y = net(x)
    tuned, report = add_adapters(net, rank=4, alpha=8, exclude="head.fc2")
    assert isinstance(tuned.encoder[0], LowRankAdapter) and type(tuned.head["fc2"]) is nn.Linear
    torch.testing.assert_close(tuned(x), y, rtol=0, atol=0)  # B = 0
    trainable = [n for n, p in tuned.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(
        f"{m}.{ab}" for m in ("encoder.0", "encoder.2", "head.fc1") for ab in "AB")
    expected = 4 * (20 + 16) + 4 * (16 + 12) + 4 * (12 + 8)
    assert report.trainable_params == expected
    assert report.total_params == _n_params(tuned) == _n_params(net) + expected
    assert report.trainable_fraction == pytest.approx(expected / _n_params(tuned))
    assert json.loads(json.dumps(report.as_dict()))["totals"]["trainable_params"] == expected
    assert "| `encoder.0` | 20 -> 16 | 4 | 144 | wrapped |" in report.as_markdown()
    assert type(net.encoder[0]) is nn.Linear, "the original must be left alone"


def test_add_adapters_keeps_layers_too_small_for_the_rank():
    _, report = add_adapters(_Net(), rank=4)
    row = next(r for r in report.layers if r.name == "head.fc2")
    assert not row.wrapped and row.note == "rank 4 > min(in, out) = 3"


def test_adapters_train_then_merge_into_plain_linears():
    net = _Net().to(F64)
    tuned, _ = add_adapters(net, rank=2, include="head.*")
    opt = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=0.1)
    x, target = torch.randn(16, 20, dtype=F64), torch.randn(16, 3, dtype=F64)
    for _ in range(3):
        opt.zero_grad()
        (tuned(x) - target).square().mean().backward()
        opt.step()
    assert tuned.head["fc1"].B.abs().sum() > 0
    y = tuned(x)
    merged = merge_adapters(tuned, inplace=False)
    assert isinstance(tuned.head["fc1"], LowRankAdapter)
    assert type(merged.head["fc1"]) is nn.Linear and type(merged.head["fc2"]) is nn.Linear
    torch.testing.assert_close(merged(x), y, rtol=0, atol=1e-12)
    assert merged.head["fc1"].weight.requires_grad


def test_compress_leaves_adapter_bases_alone():
    tuned, _ = add_adapters(_Net(), rank=2, include="encoder.0")
    _, report = compress(tuned, rank=2, include="encoder.*")
    notes = {row.name: row.note for row in report.layers}
    assert notes["encoder.0.base"] == "inside a LowRankAdapter (merge_adapters first)"
    assert notes["encoder.2"] == ""


def test_add_adapters_errors():
    with pytest.raises(ValueError, match=re.escape(
            "add_adapters: expected rank to be a positive int, got 0")):
        add_adapters(_Net(), rank=0)
    with pytest.raises(ValueError, match=re.escape(
            "add_adapters: expected include/exclude to match at least one nn.Linear")):
        add_adapters(_Net(), rank=2, include="nothing")
    with pytest.raises(TypeError, match=re.escape(
            "merge_adapters: expected an nn.Module, got int")):
        merge_adapters(3)
