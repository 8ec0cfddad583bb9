r"""Random projections that keep pairwise distances: Gaussian, sparse and SRHT.

Johnson-Lindenstrauss lemma: for any :math:`n` points in :math:`\mathbb{R}^d`
and :math:`0 < \varepsilon < 1`, a random linear map :math:`f` to
:math:`\mathbb{R}^k` with

.. math::
    k \ge \frac{4 \ln n}{\varepsilon^2/2 - \varepsilon^3/3}

keeps every squared distance within a factor :math:`1 \pm \varepsilon` with
high probability:
:math:`(1-\varepsilon)\|x_i-x_j\|^2 \le \|f(x_i)-f(x_j)\|^2 \le (1+\varepsilon)\|x_i-x_j\|^2`
(Dasgupta and Gupta, 2003). :func:`johnson_lindenstrauss_min_dim` gives that
:math:`k`; every projection here accepts ``out_features="auto"`` with ``eps``
and ``n_samples`` to use it. Each map is scaled so :math:`E\|f(x)\|^2 = \|x\|^2`.

- :class:`GaussianRandomProjection`: :math:`y = x R^T`,
  :math:`R_{ij} \sim \mathcal N(0, 1/k)`; :math:`O(dk)` per row.
- :class:`SparseRandomProjection`: Achlioptas (2003) / Li, Hastie and Church
  (2006) "very sparse" entries :math:`\pm\sqrt{s/k}` with probability
  :math:`1/(2s)` each, 0 otherwise, :math:`s = 1/\text{density}`
  (:math:`\sqrt d` by default); :math:`O(dk/s)` per row with a sparse matrix.
- :class:`SRHTProjection`: subsampled randomized Hadamard transform
  (Ailon and Chazelle, 2009; Tropp, 2011)
  :math:`y = \sqrt{D/k}\, R\, (H_D/\sqrt{D})\, \operatorname{diag}(\sigma)\, x`
  with random signs :math:`\sigma`, :math:`k` coordinates :math:`R` sampled
  without replacement, the input zero-padded to :math:`D = 2^{\lceil \log_2 d\rceil}`;
  :math:`O(D \log D)` per row through :func:`~lamods.layers.hadamard.fwht`.

What each samples is a buffer, so ``state_dict`` and ``.to()`` carry it and a
saved model projects the same way. Randomness is explicit: ``seed`` (the same
seed gives the same matrix on every device: it is drawn on the CPU) or a
``torch.Generator``; with neither, torch's global generator is used.

Note [sparse layout]: :class:`SparseRandomProjection` keeps its matrix as COO
buffers (``indices``, ``values``) and multiplies with a cached CSR copy when
``layout="sparse"``. Measured on 2 CPU threads for X of shape (10000, 4096),
density 1/64: CSR 0.45 s vs dense 0.41 s at k=256, CSR 0.56 s vs dense 1.05 s
at k=1024 (CSR pays a fixed transpose of X). So ``layout="auto"`` is sparse for
``density <= 1/16`` and ``out_features >= 512``. Under ``torch.compile`` and
``torch.func`` transforms (which do not take sparse tensors) the dense matrix
is built from the buffers instead: same numbers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamods._precision import autocast_dtype
from lamods._random import check_randomness, generator_device, make_generator
from lamods._validation import check_features, check_like, check_positive_int
from lamods.distances import paired_sq_distances, pairwise_sq_distances
from lamods.layers.hadamard import _scaled_fwht

__all__ = [
    "pairwise_sq_distances",
    "GaussianRandomProjection",
    "SRHTProjection",
    "SparseRandomProjection",
    "johnson_lindenstrauss_min_dim",
    "pairwise_distance_distortion",
]


def johnson_lindenstrauss_min_dim(n_samples: int, eps: float = 0.1) -> int:
    r"""Smallest :math:`k \ge 4 \ln n / (\varepsilon^2/2 - \varepsilon^3/3)` (rounded up).

    Projecting ``n_samples`` points to this many dimensions with any projection
    here keeps every squared pairwise distance within :math:`1 \pm \varepsilon`
    with high probability. scikit-learn's function of the same name truncates
    instead of rounding up, so it can return one less, and returns 0 for one sample,
    where this returns 1.

    Args:
        n_samples: number of points, a positive int.
        eps: allowed distortion, in :math:`(0, 1)`.

    Examples::

        >>> johnson_lindenstrauss_min_dim(1_000_000, eps=0.5)
        664
        >>> johnson_lindenstrauss_min_dim(10_000, eps=0.1)
        7895
    """
    check_positive_int("johnson_lindenstrauss_min_dim", "n_samples", n_samples)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"johnson_lindenstrauss_min_dim: expected eps in (0, 1), got {eps!r}")
    # k >= 4 ln n / (eps^2/2 - eps^3/3); at least 1 (one point has no distances to keep,
    # and a zero-width projection is no layer)
    return max(1, math.ceil(4 * math.log(n_samples) / (eps**2 / 2 - eps**3 / 3)))


def pairwise_distance_distortion(
    X: Tensor,
    Y: Tensor,
    *,
    n_pairs: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Ratios :math:`\|y_i - y_j\|^2 / \|x_i - x_j\|^2` over pairs of rows, in float64.

    A projection within the JL bound gives ratios in :math:`(1-\varepsilon, 1+\varepsilon)`.
    Pairs with :math:`x_i = x_j` are left out (the ratio is undefined).

    Args:
        X: original points, ``(n, d)``.
        Y: their images, ``(n, k)`` (row ``i`` of ``Y`` is the image of row ``i`` of ``X``).
        n_pairs: if None, every pair :math:`i < j`; else that many random pairs
            :math:`i \ne j` (drawn with replacement, from ``generator``).
        generator: randomness for the sampled pairs.

    Returns:
        a float64 tensor of ratios, one per pair, on ``X``'s device.

    Examples::

        >>> X = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
        >>> pairwise_distance_distortion(X, 2 * X)
        tensor([4., 4., 4.], dtype=torch.float64)
    """
    name = "pairwise_distance_distortion"
    for what, t in (("X", X), ("Y", Y)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            got = f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected {what} to be a 2-D tensor (n, features), got {got}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{name}: expected X and Y with the same number of rows, "
                         f"got {X.shape[0]} and {Y.shape[0]}")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"{name}: expected at least 2 rows, got {n}")
    X, Y = X.detach().double(), Y.to(X.device).detach().double()
    if n_pairs is None:
        den_all, num_all = pairwise_sq_distances(X), pairwise_sq_distances(Y)
        keep = den_all > 0
        return num_all[keep] / den_all[keep]
    else:
        check_positive_int(name, "n_pairs", n_pairs)
        i = torch.randint(0, n, (n_pairs,), generator=generator, device="cpu")
        j = (i + torch.randint(1, n, (n_pairs,), generator=generator, device="cpu")) % n
        i, j = i.to(X.device), j.to(X.device)
    # exact differences (no |x|^2 + |y|^2 - 2<x, y> cancellation), in blocks of pairs
    num_t, den_t = paired_sq_distances(Y, i, j), paired_sq_distances(X, i, j)
    keep = den_t > 0
    return num_t[keep] / den_t[keep]


# ---------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------
def _plain_eager() -> bool:
    """Outside torch.compile and torch.func transforms (where sparse tensors cannot go)."""
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


class _RandomProjection(nn.Module):
    """Argument handling, randomness and checks shared by the projections."""

    _name = "_RandomProjection"

    def __init__(
        self,
        in_features: int,
        out_features: int | str,
        *,
        eps: float,
        n_samples: int | None,
        generator: torch.Generator | None,
        seed: int | None,
    ) -> None:
        super().__init__()
        name = self._name
        self.in_features = check_positive_int(name, "in_features", in_features)
        if out_features == "auto":
            if n_samples is None:
                raise ValueError(
                    f"{name}: out_features='auto' needs n_samples (the number of points "
                    "whose distances to keep), got None"
                )
            k = johnson_lindenstrauss_min_dim(n_samples, eps)
            if k > in_features:
                raise ValueError(
                    f"{name}: expected out_features <= in_features, got out_features={k} > "
                    f"in_features={in_features} (johnson_lindenstrauss_min_dim(n_samples="
                    f"{n_samples}, eps={eps}) = {k}); use a larger eps or fewer samples, "
                    "or keep the data as it is"
                )
        else:
            if isinstance(out_features, str):
                raise ValueError(
                    f"{name}: expected out_features to be a positive int or 'auto', "
                    f"got {out_features!r}")
            k = check_positive_int(name, "out_features", out_features)
            if k > in_features:
                raise ValueError(
                    f"{name}: expected out_features <= in_features (a projection does not "
                    f"widen), got out_features={k} > in_features={in_features}"
                )
        self.out_features = k
        self.eps = eps
        self.n_samples = n_samples
        check_randomness(name, seed, generator)
        self.generator = generator
        self.seed = seed

    def _rng(self) -> tuple[torch.Generator | None, torch.device]:
        """The generator to draw from and the device to draw on (the CPU unless the
        user's generator lives elsewhere), fresh from ``seed`` on every call."""
        gen = make_generator(self._name, self.seed, self.generator)
        return gen, generator_device(gen)

    def _check(self, x: Tensor, reference: Tensor) -> None:
        check_features(self._name, x, self.in_features)
        check_like(self._name, x, reference)

    def _randomness_repr(self) -> str:
        if self.seed is not None:
            return f", seed={self.seed}"
        return ", generator=<torch.Generator>" if self.generator is not None else ""


# ---------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------
class GaussianRandomProjection(_RandomProjection):
    r"""Dense Gaussian random projection :math:`y = x R^T`, :math:`R_{ij} \sim \mathcal N(0, 1/k)`.

    With :math:`k` from :func:`johnson_lindenstrauss_min_dim`, every squared
    pairwise distance among :math:`n` points stays within :math:`1\pm\varepsilon`
    with high probability; :math:`E\|x R^T\|^2 = \|x\|^2`. The same map as
    ``sklearn.random_projection.GaussianRandomProjection`` (fixed at
    construction: no ``fit`` needed), as one matmul on CPU or CUDA.

    Args:
        in_features: input width :math:`d`.
        out_features: output width :math:`k \le d`, or ``"auto"`` for
            ``johnson_lindenstrauss_min_dim(n_samples, eps)``.
        eps: JL distortion for ``out_features="auto"``.
        n_samples: number of points for ``out_features="auto"``.
        generator: ``torch.Generator`` to draw :math:`R` from (advanced by each draw).
        seed: draw :math:`R` from a fresh generator with this seed (the same
            matrix on every device and every ``reset_parameters()``).
        trainable: make :math:`R` an ``nn.Parameter`` (a learnable linear map
            initialised as a JL projection) instead of a buffer.

    Shape:
        - Input: :math:`(*, d)`.
        - Output: :math:`(*, k)`.

    Attributes:
        weight: :math:`R`, shape :math:`(k, d)`: a buffer, or a parameter if ``trainable``.

    Examples::

        >>> proj = GaussianRandomProjection(1000, "auto", eps=0.5, n_samples=100, seed=0)
        >>> proj
        GaussianRandomProjection(in_features=1000, out_features=222, seed=0, trainable=False)
        >>> x = torch.randn(100, 1000)
        >>> ratios = pairwise_distance_distortion(x, proj(x))
        >>> bool(((ratios > 0.5) & (ratios < 1.5)).all())
        True
    """

    _name = "GaussianRandomProjection"

    def __init__(
        self,
        in_features: int,
        out_features: int | str,
        *,
        eps: float = 0.1,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        trainable: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, eps=eps, n_samples=n_samples,
                         generator=generator, seed=seed)
        self.trainable = bool(trainable)
        weight = torch.empty(self.out_features, self.in_features, device=device, dtype=dtype)
        if self.trainable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw :math:`R_{ij} \\sim \\mathcal N(0, 1/k)` again (the same one with ``seed``)."""
        gen, device = self._rng()
        # drawn in float64 on the generator's device: one matrix per seed, whatever the dtype
        r = torch.randn(self.out_features, self.in_features, generator=gen, device=device,
                        dtype=torch.float64)
        # R_ij ~ N(0, 1/k)
        self.weight.copy_(r / math.sqrt(self.out_features))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, self.weight)
        # y = x R^T  (F.linear follows autocast)
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                f"{self._randomness_repr()}, trainable={self.trainable}")


# ---------------------------------------------------------------------------
# Sparse
# ---------------------------------------------------------------------------
class SparseRandomProjection(_RandomProjection):
    r"""Very sparse random projection :math:`y = x R^T`, :math:`R_{ij} \in \{-\sqrt{s/k}, 0, \sqrt{s/k}\}`.

    .. math::
        R_{ij} = \sqrt{s/k} \cdot \begin{cases} -1 & \text{with probability } 1/(2s) \\
        0 & \text{with probability } 1 - 1/s \\ +1 & \text{with probability } 1/(2s)
        \end{cases}, \qquad s = 1/\text{density},

    so :math:`E R_{ij} = 0`, :math:`E R_{ij}^2 = 1/k` like the Gaussian map, with
    only a fraction ``density`` of nonzeros (Achlioptas 2003: :math:`s = 3`;
    Li, Hastie and Church 2006: :math:`s = \sqrt d`, the default). The same
    distribution as ``sklearn.random_projection.SparseRandomProjection``.
    Multiplied as a torch sparse CSR matrix when that is faster (Note [sparse layout]).

    Args:
        in_features: input width :math:`d`.
        out_features: output width :math:`k \le d`, or ``"auto"`` (JL bound).
        density: fraction of nonzeros in :math:`(0, 1]`, or ``"auto"`` for
            :math:`1/\sqrt d`.
        layout: ``"sparse"`` (CSR matmul), ``"dense"`` (dense matmul) or
            ``"auto"`` (sparse when ``density <= 1/16`` and ``out_features >= 512``).
        eps, n_samples: for ``out_features="auto"``.
        generator, seed: explicit randomness, as in :class:`GaussianRandomProjection`.

    Shape:
        - Input: :math:`(*, d)`.
        - Output: :math:`(*, k)`.

    Attributes:
        indices: ``(2, nnz)`` int64 buffer, row and column of each nonzero of :math:`R`.
        values: ``(nnz,)`` buffer, the nonzeros :math:`\pm\sqrt{s/k}`.
        density: the density used (:math:`1/s`).

    Examples::

        >>> proj = SparseRandomProjection(4096, 256, seed=0)
        >>> proj
        SparseRandomProjection(in_features=4096, out_features=256, density=0.015625, layout=dense, seed=0)
        >>> proj(torch.randn(10, 4096)).shape
        torch.Size([10, 256])
        >>> round(proj.indices.shape[1] / (256 * 4096), 3)
        0.016
    """  # noqa: E501

    _name = "SparseRandomProjection"

    def __init__(
        self,
        in_features: int,
        out_features: int | str,
        density: float | str = "auto",
        *,
        layout: str = "auto",
        eps: float = 0.1,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, eps=eps, n_samples=n_samples,
                         generator=generator, seed=seed)
        name = self._name
        if density == "auto":
            density = 1 / math.sqrt(self.in_features)
        elif (isinstance(density, bool) or not isinstance(density, (int, float))
              or not 0 < density <= 1):
            raise ValueError(f"{name}: expected density in (0, 1] or 'auto', got {density!r}")
        self.density = float(density)
        if layout not in ("auto", "sparse", "dense"):
            raise ValueError(f"{name}: expected layout 'auto', 'sparse' or 'dense', got {layout!r}")
        if layout == "auto":
            layout = "sparse" if self.density <= 1 / 16 and self.out_features >= 512 else "dense"
        self.layout = layout
        self.register_buffer("indices", torch.empty(2, 0, dtype=torch.int64, device=device))
        self.register_buffer("values", torch.empty(0, device=device, dtype=dtype))
        self._cache: tuple[tuple, Tensor] | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the sparse :math:`R` again (the same one with ``seed``)."""
        gen, device = self._rng()
        k, d = self.out_features, self.in_features
        s = 1 / self.density
        rows_per_block = max(1, (1 << 22) // d)  # bounded memory for the Bernoulli mask
        idx, signs = [], []
        for r0 in range(0, k, rows_per_block):
            r1 = min(k, r0 + rows_per_block)
            # nonzero with probability 1/s, then a fair sign: +-1 w.p. 1/(2s) each
            mask = torch.rand(r1 - r0, d, generator=gen, device=device) < self.density
            nz = mask.nonzero().t()
            nz[0] += r0
            idx.append(nz)
            signs.append(torch.randint(0, 2, (nz.shape[1],), generator=gen, device=device))
        indices = torch.cat(idx, 1)
        # R_ij = +-sqrt(s/k)
        values = (2 * torch.cat(signs) - 1).to(torch.float64) * math.sqrt(s / k)
        self.indices = indices.to(self.indices.device)
        self.values = values.to(device=self.values.device, dtype=self.values.dtype)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # nnz is random: take the saved matrix's size before the usual copy
        for key in ("indices", "values"):
            saved = state_dict.get(prefix + key)
            mine = getattr(self, key)
            if isinstance(saved, Tensor) and saved.shape != mine.shape:
                setattr(self, key, mine.new_empty(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _matrix(self, layout: str) -> Tensor:
        """:math:`R` as a (k, d) dense tensor, or a CSR tensor cached between calls."""
        k, d = self.out_features, self.in_features
        if layout == "dense" and not _plain_eager():
            # built in the graph: no state to guard on under torch.compile / torch.func
            return self.values.new_zeros(k, d).index_put((self.indices[0], self.indices[1]),
                                                         self.values)
        key = (layout, self.indices.data_ptr(), self.values.data_ptr(), self.indices._version,
               self.values._version, self.values.dtype, self.values.device)
        if self._cache is None or self._cache[0] != key:
            dense = self.values.new_zeros(k, d).index_put_(
                (self.indices[0], self.indices[1]), self.values)
            if layout == "sparse":
                with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
                    dense = dense.to_sparse_csr()
            self._cache = (key, dense)
        return self._cache[1]

    def to_dense(self) -> Tensor:
        """The projection matrix :math:`R` as a dense ``(k, d)`` tensor."""
        return self._matrix("dense").clone()

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, self.values)
        if self.layout == "dense" or not _plain_eager():
            # y = x R^T  (F.linear follows autocast)
            return F.linear(x, self._matrix("dense"))
        csr = self._matrix("sparse")
        x2 = x.reshape(-1, self.in_features)
        # y^T = R x^T as one CSR x dense product, in the layer's dtype (torch.sparse has no
        # bf16 CPU kernel); under autocast the result is cast like a matmul's would be
        with torch.autocast(x.device.type, enabled=False):
            y = torch.sparse.mm(csr, x2.t()).t()
        dtype = autocast_dtype(x)
        if dtype is not None:
            y = y.to(dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        self._cache = None  # .to() / .cuda() / .double(): rebuild from the moved buffers
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density:g}, layout={self.layout}{self._randomness_repr()}")


# ---------------------------------------------------------------------------
# SRHT
# ---------------------------------------------------------------------------
class SRHTProjection(_RandomProjection):
    r"""Subsampled randomized Hadamard transform :math:`y = \sqrt{D/k}\, R H \operatorname{diag}(\sigma) x`.

    :math:`\sigma \in \{\pm 1\}^d` random signs, :math:`H = H_D/\sqrt D` the
    normalized Sylvester Hadamard matrix, :math:`R` keeps :math:`k` of the
    :math:`D` coordinates (sampled without replacement). Inputs whose width
    :math:`d` is not a power of two are zero-padded to
    :math:`D = 2^{\lceil\log_2 d\rceil}`. The random signs spread every input's
    energy evenly over the coordinates (Ailon and Chazelle 2009), so sampling
    :math:`k` of them keeps distances like a Gaussian map, at
    :math:`O(D \log D)` per row through :func:`~lamods.layers.hadamard.fwht`
    instead of :math:`O(dk)`. The matrix is never formed.

    Args:
        in_features: input width :math:`d`.
        out_features: output width :math:`k \le d`, or ``"auto"`` (JL bound).
        eps, n_samples: for ``out_features="auto"``.
        generator, seed: explicit randomness, as in :class:`GaussianRandomProjection`.

    Shape:
        - Input: :math:`(*, d)`.
        - Output: :math:`(*, k)`.

    Attributes:
        signs: :math:`\sigma`, a ``(d,)`` buffer of :math:`\pm 1` in the layer's dtype.
        index: ``(k,)`` int64 buffer, the sampled coordinates of :math:`H\sigma x`, sorted.
        padded_features: :math:`D`.

    Examples::

        >>> proj = SRHTProjection(784, 128, seed=0)
        >>> proj
        SRHTProjection(in_features=784, out_features=128, padded_features=1024, seed=0)
        >>> x = torch.randn(50, 784)
        >>> proj(x).shape
        torch.Size([50, 128])
        >>> ratio = proj(x).pow(2).sum() / x.pow(2).sum()  # E ||y||^2 = ||x||^2
        >>> bool(0.8 < ratio < 1.2)
        True
    """  # noqa: E501

    _name = "SRHTProjection"

    def __init__(
        self,
        in_features: int,
        out_features: int | str,
        *,
        eps: float = 0.1,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, eps=eps, n_samples=n_samples,
                         generator=generator, seed=seed)
        self.padded_features = 1 << (self.in_features - 1).bit_length()
        self.register_buffer("signs", torch.empty(self.in_features, device=device, dtype=dtype))
        self.register_buffer("index", torch.empty(self.out_features, dtype=torch.int64,
                                                  device=device))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the signs and the sampled coordinates again (the same ones with ``seed``)."""
        gen, device = self._rng()
        signs = 2 * torch.randint(0, 2, (self.in_features,), generator=gen, device=device) - 1
        index = torch.randperm(self.padded_features, generator=gen, device=device)
        self.signs.copy_(signs)
        self.index.copy_(index[: self.out_features].sort().values)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, self.signs)
        signs = self.signs
        dtype = autocast_dtype(x)
        if dtype is not None:
            x, signs = x.to(dtype), signs.to(dtype)
        # diag(sigma) x, zero-padded to D
        z = x * signs
        if self.padded_features != self.in_features:
            z = F.pad(z, (0, self.padded_features - self.in_features))
        # sqrt(D/k) (H_D/sqrt(D)) z = H_D z / sqrt(k): the scale rides on fwht's last stage
        z = _scaled_fwht(z, 1 / math.sqrt(self.out_features))
        # R: keep the k sampled coordinates
        return z.index_select(-1, self.index)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"padded_features={self.padded_features}{self._randomness_repr()}")
