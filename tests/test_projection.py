"""fwht and the random projections: battery, Hadamard reference, distributions, JL bound, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn import functional as F

from lamods.layers.hadamard import CHUNK_BYTES, _radices, fwht, hadamard_matrix
from lamods.layers.projection import (
    GaussianRandomProjection,
    SparseRandomProjection,
    SRHTProjection,
    johnson_lindenstrauss_min_dim,
    pairwise_distance_distortion,
)
from lamods.testing import (
    BATCH_SHAPES,
    ModuleBattery,
    Tolerance,
    assert_close,
    check_gradients,
    check_module_gradients,
)

#: z-score allowed for statistical checks (fixed seeds make them deterministic anyway).
Z = 5.0


# ---------------------------------------------------------------------------
# fwht
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("log_d", list(range(0, 11)) + [12, 13])
@pytest.mark.parametrize("normalized", [False, True])
def test_fwht_equals_sylvester_hadamard_matmul(log_d, normalized):
    d = 1 << log_d
    x = torch.randn(3, d, dtype=torch.float64)
    h = hadamard_matrix(d, normalized=normalized, dtype=torch.float64)
    assert_close(fwht(x, normalized=normalized), x @ h, what=f"fwht, d={d}")


def test_hadamard_matrix_is_sylvester_and_orthogonal():
    h = hadamard_matrix(16, dtype=torch.float64)
    i = torch.arange(16)
    popcount = sum(((i[:, None] & i[None, :]) >> b) & 1 for b in range(4))
    assert torch.equal(h, (1 - 2 * (popcount % 2)).double())
    hn = hadamard_matrix(16, normalized=True, dtype=torch.float64)
    assert_close(hn @ hn, torch.eye(16, dtype=torch.float64), what="H H / d")


def test_fwht_stages_cover_every_bit():
    for n in range(0, 20):
        radices = _radices(1 << n)
        assert math.prod(radices) == 1 << n and max(radices) <= 64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)], ids=str)
def test_fwht_normalized_is_an_involution(dtype, batch_shape):
    x = torch.randn(*batch_shape, 4096, dtype=dtype)
    assert_close(fwht(fwht(x)), x, what="fwht(fwht(x))")
    assert fwht(x).shape == x.shape and fwht(x).dtype == dtype


@pytest.mark.parametrize("d", [128, 8192], ids=["2 stages", "3 stages"])
def test_fwht_blocks_of_rows_match_one_matmul(monkeypatch, d):
    # more rows than one CPU block (Note [cache blocking]; the block size made small so the
    # test stays small), with a partial last block; 3 stages ping-pong between two buffers
    import lamods.layers.hadamard as hm

    monkeypatch.setattr(hm, "CHUNK_BYTES", 16 * d * 8)
    assert len(_radices(d)) == (2 if d == 128 else 3)
    x = torch.randn(2 * 16 + 7, d, dtype=torch.float64)
    assert_close(fwht(x, normalized=False), x @ hadamard_matrix(d, dtype=torch.float64),
                 what="blocked fwht")
    assert CHUNK_BYTES >= 1 << 28  # one block for a (10000, 4096) float32 input


def test_fwht_non_contiguous_and_empty_inputs():
    x = torch.randn(64, 6)
    assert_close(fwht(x.t()), x.t().contiguous() @ hadamard_matrix(64, normalized=True),
                 what="fwht of a transposed view")
    assert fwht(torch.empty(0, 256)).shape == (0, 256)


@pytest.mark.parametrize("d", [8, 64, 128, 8192])
def test_fwht_gradcheck_and_gradgradcheck(d):
    # full Jacobians for one small block; wider inputs (one big block, several stages) use
    # gradcheck's fast mode (v^T J u for random u, v): a full Jacobian costs numel^2 calls
    fast = d > 8
    check_gradients(fwht, torch.randn(2, d), fast_mode=fast)
    check_gradients(lambda x: fwht(x, normalized=False), torch.randn(3, 2, d), fast_mode=fast)


def test_fwht_backward_is_the_transform_itself():
    x = torch.randn(4, 512, requires_grad=True)
    g = torch.randn(4, 512)
    fwht(x).backward(g)
    assert_close(x.grad, fwht(g), what="dL/dx")


def test_fwht_torch_func_vmap_jvp_and_compile():
    x = torch.randn(4, 256, 3)
    assert_close(torch.func.vmap(fwht, in_dims=2)(x), fwht(x.movedim(2, 0)), what="vmap")
    t = torch.randn(5, 256)
    _, jvp = torch.func.jvp(fwht, (torch.randn(5, 256),), (t,))
    assert_close(jvp, fwht(t), what="jvp")
    grad = torch.func.grad(lambda v: fwht(v).pow(2).sum())(t)
    assert_close(grad, 2 * t, what="grad of ||Hx||^2 (H orthogonal)")
    torch._dynamo.reset()
    compiled = torch.compile(fwht, backend="aot_eager", fullgraph=True)
    x = torch.randn(6, 8192, requires_grad=True)
    y = compiled(x)
    assert_close(y, fwht(x), what="compiled fwht")
    y.sum().backward()
    assert_close(x.grad, fwht(torch.ones(6, 8192)), what="compiled fwht gradient")


def test_fwht_follows_autocast():
    x = torch.randn(4, 1024)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fwht(x)
    assert y.dtype == torch.bfloat16
    assert_close(y.float(), fwht(x), what="bf16 fwht", tolerance=Tolerance(5e-2, 5e-2))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
def test_fwht_cuda_matches_cpu():
    x = torch.randn(33, 4096, dtype=torch.float64)
    assert_close(fwht(x.cuda()).cpu(), fwht(x), what="CUDA fwht")


def test_fwht_errors():
    with pytest.raises(ValueError, match=re.escape(
            "fwht: expected the last dimension to be a power of two, got 12 (input shape "
            "(3, 12)); zero-pad it to 16")):
        fwht(torch.randn(3, 12))
    with pytest.raises(TypeError, match=re.escape(
            "fwht: expected a floating-point input, got dtype torch.int64")):
        fwht(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="fwht: expected input of shape"):
        fwht(torch.tensor(1.0))
    with pytest.raises(ValueError, match=re.escape(
            "hadamard_matrix: expected n to be a power of two, got 6")):
        hadamard_matrix(6)


# ---------------------------------------------------------------------------
# The battery for each projection
# ---------------------------------------------------------------------------
class TestGaussianRandomProjection(ModuleBattery):
    name = "GaussianRandomProjection"
    in_features = 7
    trainable = False

    def build(self, *, device, dtype):
        return GaussianRandomProjection(7, 3, trainable=self.trainable, device=device,
                                        dtype=dtype)

    def reference(self, module, params, x):
        return x @ params.get("weight", module.weight).T


class TestGaussianRandomProjectionTrainable(TestGaussianRandomProjection):
    trainable = True


class TestSparseRandomProjection(ModuleBattery):
    name = "SparseRandomProjection"
    in_features = 16
    layout = "sparse"

    def build(self, *, device, dtype):
        return SparseRandomProjection(16, 5, density=0.3, layout=self.layout, device=device,
                                      dtype=dtype)

    def reference(self, module, params, x):
        r = torch.zeros(5, 16, dtype=x.dtype, device=x.device)
        r[module.indices[0], module.indices[1]] = module.values.to(x.dtype)
        return x @ r.T


class TestSparseRandomProjectionDense(TestSparseRandomProjection):
    layout = "dense"


class TestSRHTProjection(ModuleBattery):
    name = "SRHTProjection"
    in_features = 12  # zero-padded to 16

    def build(self, *, device, dtype):
        return SRHTProjection(self.in_features, 5, device=device, dtype=dtype)

    def reference(self, module, params, x):
        big = module.padded_features
        h = hadamard_matrix(big, device=x.device, dtype=x.dtype)
        z = F.pad(x * module.signs.to(x.dtype), (0, big - self.in_features))
        return (z @ h)[..., module.index] / math.sqrt(module.out_features)


class TestSRHTProjectionPowerOfTwo(TestSRHTProjection):
    in_features = 128  # two fwht stages

    @pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
    def test_gradcheck(self, batch_shape):
        # overridden: the battery's full float64 Jacobians of a 128-wide input cost ~1 min on
        # 2 cores; gradcheck's fast mode checks v^T J u for random u, v (TestSRHTProjection
        # runs the full check through the same code on a 12-wide input)
        module = self.build(device="cpu", dtype=torch.float64)
        x = self._input(batch_shape, "cpu", torch.float64)
        check_module_gradients(module, x, gradgrad=True, fast_mode=True)


# ---------------------------------------------------------------------------
# Johnson-Lindenstrauss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_samples", [1, 2, 10, 100, 10_000, 1_000_000])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_jl_min_dim_matches_sklearn(n_samples, eps):
    sk = pytest.importorskip("sklearn.random_projection")
    ours = johnson_lindenstrauss_min_dim(n_samples, eps=eps)
    theirs = int(sk.johnson_lindenstrauss_min_dim(n_samples, eps=eps))
    bound = 4 * math.log(n_samples) / (eps**2 / 2 - eps**3 / 3)
    # sklearn truncates, we round up: k is the smallest integer >= the bound, and >= 1
    if n_samples == 1:  # bound 0: sklearn gives a zero-width projection, we give 1
        assert (ours, theirs) == (1, 0)
        return
    assert ours - 1 < bound <= ours
    assert ours in (theirs, theirs + 1)


def test_jl_min_dim_errors():
    with pytest.raises(ValueError, match=re.escape(
            "johnson_lindenstrauss_min_dim: expected eps in (0, 1), got 1.5")):
        johnson_lindenstrauss_min_dim(10, eps=1.5)
    with pytest.raises(ValueError, match=re.escape(
            "johnson_lindenstrauss_min_dim: expected n_samples to be a positive int, got 0")):
        johnson_lindenstrauss_min_dim(0)


_MAKERS = {
    "gaussian": lambda d, k, **kw: GaussianRandomProjection(d, k, **kw),
    "sparse": lambda d, k, **kw: SparseRandomProjection(d, k, **kw),
    "sparse_csr": lambda d, k, **kw: SparseRandomProjection(d, k, layout="sparse", **kw),
    "srht": lambda d, k, **kw: SRHTProjection(d, k, **kw),
}


@pytest.mark.parametrize("kind", list(_MAKERS))
@pytest.mark.parametrize("d", [1000, 1024])
def test_pairwise_distances_within_jl_bound(kind, d):
    n, eps = 60, 0.3
    proj = _MAKERS[kind](d, "auto", eps=eps, n_samples=n, seed=1)
    assert proj.out_features == johnson_lindenstrauss_min_dim(n, eps) == 455
    x = torch.randn(n, d, dtype=torch.float64) * torch.rand(n, 1, dtype=torch.float64)
    ratios = pairwise_distance_distortion(x, proj.double()(x))
    assert ratios.numel() == n * (n - 1) // 2
    assert ratios.min() > 1 - eps and ratios.max() < 1 + eps, (ratios.min(), ratios.max())
    # all pairs share one matrix and span only n - 1 directions: their mean moves with it
    assert abs(ratios.mean() - 1) < 0.05


def test_pairwise_distance_distortion_sampled_pairs_and_errors():
    x = torch.randn(30, 8)
    y = 3 * x
    assert_close(pairwise_distance_distortion(x, y, n_pairs=500),
                 torch.full((500,), 9.0, dtype=torch.float64), what="ratios",
                 tolerance=Tolerance(rtol=1e-5, atol=0))
    dup = torch.cat([x, x[:1]])
    assert pairwise_distance_distortion(dup, 2 * dup).numel() == 31 * 30 // 2 - 1
    with pytest.raises(ValueError, match=re.escape(
            "pairwise_distance_distortion: expected X and Y with the same number of rows, "
            "got 30 and 29")):
        pairwise_distance_distortion(x, y[:29])
    with pytest.raises(ValueError, match=re.escape(
            "pairwise_distance_distortion: expected X to be a 2-D tensor (n, features), "
            "got shape (30,)")):
        pairwise_distance_distortion(x[:, 0], y)


# ---------------------------------------------------------------------------
# Distributions of what each projection samples
# ---------------------------------------------------------------------------
def _assert_mean_var(entries, var, what):
    entries = entries.double().flatten()
    n = entries.numel()
    assert abs(entries.mean()) < Z * math.sqrt(var / n), f"{what}: mean {entries.mean()}"
    # sd of the sample variance of a variable with kurtosis kappa: var * sqrt((kappa - 1) / n)
    kappa = (entries.pow(4).mean() / var**2).item()
    sd = var * math.sqrt((kappa - 1) / n)
    assert abs(entries.var() - var) < Z * sd, f"{what}: variance {entries.var()} vs {var}"


def test_gaussian_entries_are_normal_with_variance_one_over_k():
    d, k = 1024, 256
    w = GaussianRandomProjection(d, k, seed=3).weight
    _assert_mean_var(w, 1 / k, "Gaussian R")
    z = (w * math.sqrt(k)).double().flatten()
    # normal: kurtosis 3, and P(|z| < 1) = 0.6827 (within Z binomial sds)
    assert abs(z.pow(4).mean() - 3) < Z * math.sqrt(96 / z.numel())
    p = 0.682689492
    assert abs((z.abs() < 1).double().mean() - p) < Z * math.sqrt(p * (1 - p) / z.numel())


@pytest.mark.parametrize("density", ["auto", 1 / 3, 0.1])
def test_sparse_entries_have_the_achlioptas_li_distribution(density):
    d, k = 1024, 256
    proj = SparseRandomProjection(d, k, density=density, seed=4)
    s = 1 / proj.density
    if density == "auto":
        assert proj.density == 1 / math.sqrt(d)
    r = proj.to_dense()
    n = r.numel()
    p = 1 / s
    nnz = proj.values.numel()
    assert abs(nnz / n - p) < Z * math.sqrt(p * (1 - p) / n), "density"
    assert torch.equal(r[proj.indices[0], proj.indices[1]], proj.values)
    # nonzeros are exactly +-sqrt(s/k), each sign with probability 1/2
    assert_close(proj.values.abs(), torch.full((nnz,), math.sqrt(s / k)), what="|R_ij|")
    assert abs((proj.values > 0).double().mean() - 0.5) < Z * math.sqrt(0.25 / nnz)
    _assert_mean_var(r, 1 / k, "sparse R")
    # no entry is drawn twice
    flat = proj.indices[0] * d + proj.indices[1]
    assert flat.unique().numel() == nnz


def test_srht_signs_indices_and_rows():
    d, k = 1024, 300
    proj = SRHTProjection(d, k, seed=5, dtype=torch.float64)
    assert set(proj.signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(proj.signs.mean()) < Z / math.sqrt(d)
    idx = proj.index
    assert idx.unique().numel() == k and bool((idx[1:] > idx[:-1]).all())
    assert 0 <= idx.min() and idx.max() < d
    # the implied matrix M (k, d): entries +-1/sqrt(k), orthogonal rows with M M^T = (d/k) I
    m = proj(torch.eye(d, dtype=torch.float64)).T
    assert_close(m.abs(), torch.full((k, d), 1 / math.sqrt(k), dtype=torch.float64),
                 what="|M_ij|")
    assert_close(m @ m.T, torch.eye(k, dtype=torch.float64) * d / k, what="M M^T")
    # sampled coordinates cover [0, D) uniformly: their mean is (D - 1) / 2
    sd = math.sqrt((d**2 - 1) / 12 / k * (d - k) / (d - 1))
    assert abs(idx.double().mean() - (d - 1) / 2) < Z * sd


def test_srht_pads_to_the_next_power_of_two():
    proj = SRHTProjection(100, 20, seed=0, dtype=torch.float64)
    assert proj.padded_features == 128 and proj.index.max() < 128
    x = torch.randn(7, 100, dtype=torch.float64)
    ref = F.pad(x * proj.signs, (0, 28)) @ hadamard_matrix(128, dtype=torch.float64)
    assert_close(proj(x), ref[:, proj.index] / math.sqrt(20), what="padded SRHT")


# ---------------------------------------------------------------------------
# Randomness, state, layouts
# ---------------------------------------------------------------------------
def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht"])
def test_same_seed_same_projection_and_reset_reproduces(kind):
    a = _MAKERS[kind](64, 16, seed=123)
    b = _MAKERS[kind](64, 16, seed=123)
    c = _MAKERS[kind](64, 16, seed=124)
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(5, 64)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    a.reset_parameters()
    assert all(torch.equal(sa[k], v) for k, v in _state(a).items())
    # the same seed gives the same matrix in float64 (drawn on the CPU, then cast)
    d64 = _MAKERS[kind](64, 16, seed=123, dtype=torch.float64)
    assert_close(d64(x.double()).float(), a(x), what="float64 vs float32 projection")


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "srht"])
def test_generator_draws_and_state_dict_reproduces(kind):
    g1 = torch.Generator().manual_seed(9)
    g2 = torch.Generator().manual_seed(9)
    a, b = _MAKERS[kind](64, 16, generator=g1), _MAKERS[kind](64, 16, generator=g2)
    x = torch.randn(3, 64)
    assert torch.equal(a(x), b(x))
    fresh = _MAKERS[kind](64, 16)  # global RNG: another draw
    fresh.load_state_dict(a.state_dict())
    assert torch.equal(fresh(x), a(x))
    buf = __import__("io").BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    other = _MAKERS[kind](64, 16)
    other.load_state_dict(torch.load(buf))
    assert torch.equal(other(x), a(x))


def test_projections_keep_matrices_as_buffers_unless_trainable():
    for kind in ("gaussian", "sparse", "srht"):
        assert list(_MAKERS[kind](32, 8).parameters()) == []
    trainable = GaussianRandomProjection(32, 8, trainable=True)
    assert [n for n, _ in trainable.named_parameters()] == ["weight"]
    trainable(torch.randn(4, 32)).sum().backward()
    assert trainable.weight.grad is not None


def test_sparse_layouts_agree_and_cache_follows_changes():
    dense = SparseRandomProjection(256, 64, layout="dense", seed=2)
    sparse = SparseRandomProjection(256, 64, layout="sparse", seed=2)
    assert SparseRandomProjection(4096, 1024).layout == "sparse"
    assert SparseRandomProjection(4096, 256).layout == "dense"
    x = torch.randn(5, 3, 256, requires_grad=True)
    y = sparse(x)
    assert_close(y, dense(x), what="CSR vs dense")
    y.pow(2).sum().backward()
    g = x.grad.clone()
    x.grad = None
    dense(x).pow(2).sum().backward()
    assert_close(g, x.grad, what="CSR gradient")
    with torch.no_grad():
        sparse.values.mul_(2)  # in place: the cached CSR must be rebuilt
    assert_close(sparse(x), 2 * dense(x), what="after an in-place change")
    assert_close(sparse.double()(x.double()), 2 * dense.double()(x.double()), what="float64")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
@pytest.mark.parametrize("kind", ["gaussian", "sparse_csr", "srht"])
def test_cuda_matches_cpu_for_the_same_seed(kind):
    cpu = _MAKERS[kind](300, 40, seed=7, dtype=torch.float64)
    gpu = _MAKERS[kind](300, 40, seed=7, dtype=torch.float64, device="cuda")
    x = torch.randn(9, 300, dtype=torch.float64)
    assert_close(gpu(x.cuda()).cpu(), cpu(x), what="CUDA projection")
    assert_close(cpu.to("cuda")(x.cuda()).cpu(), cpu(x), what="moved projection")


# ---------------------------------------------------------------------------
# Errors and repr
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GaussianRandomProjection, SparseRandomProjection,
                                 SRHTProjection])
def test_projection_errors(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected out_features <= in_features (a projection does not widen), "
            "got out_features=20 > in_features=10")):
        cls(10, 20)
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected out_features <= in_features, got out_features=455 > "
            "in_features=100 (johnson_lindenstrauss_min_dim(n_samples=60, eps=0.3) = 455)")):
        cls(100, "auto", n_samples=60, eps=0.3)
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: out_features='auto' needs n_samples")):
        cls(100, "auto")
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected out_features to be a positive int or 'auto', got 'all'")):
        cls(100, "all")
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected out_features to be a positive int, got 0")):
        cls(100, 0)
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected at most one of generator and seed, got both")):
        cls(100, 10, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected input with last dimension 100, got 64")):
        cls(100, 10)(torch.randn(3, 64))


def test_sparse_argument_errors():
    with pytest.raises(ValueError, match=re.escape(
            "SparseRandomProjection: expected density in (0, 1] or 'auto', got 1.5")):
        SparseRandomProjection(100, 10, density=1.5)
    with pytest.raises(ValueError, match=re.escape(
            "SparseRandomProjection: expected layout 'auto', 'sparse' or 'dense', got 'coo'")):
        SparseRandomProjection(100, 10, layout="coo")


def test_repr_shows_hyperparameters():
    assert "in_features=10, out_features=4, seed=1, trainable=True" in repr(
        GaussianRandomProjection(10, 4, seed=1, trainable=True))
    assert "density=0.5, layout=dense" in repr(SparseRandomProjection(10, 4, 0.5))
    assert "padded_features=16, generator=<torch.Generator>" in repr(
        SRHTProjection(10, 4, generator=torch.Generator()))
