"""lamods: differentiable linear-algebra modules for PyTorch.

Public API::

    from lamods import ManualMLP, LowRankLinear, PCA, eigh, svd, compress
    from lamods.layers import ...      # nn.Modules used inside networks
    from lamods.decomp import ...      # decompositions and fit-style modules
    from lamods.recsys import ...      # matrix-factorization recommender, MovieLens
    from lamods.classic import ...     # least squares, Gram-Schmidt, k-means, spectral, NMF
    from lamods import testing         # gradient-check helpers
    from lamods.base import Estimator  # the base of every fit-style module
    from lamods import distances       # squared distances (kernels, k-means, spectral)
"""

from lamods import distances
from lamods.base import Estimator
from lamods.cg import cg
from lamods.classic import (
    NMF,
    KMeans,
    LinearRegression,
    RidgeRegression,
    SpectralClustering,
    gram_schmidt,
    lstsq,
    orthonormalize,
    project,
    spectral_embedding,
)
from lamods.decomp import (
    PCA,
    PCAWhitening,
    ZCAWhitening,
    cp_als,
    eigh,
    hooi,
    hosvd,
    inv_sqrtm,
    pca,
    randomized_svd,
    svd,
    topk_eigh,
)
from lamods.exceptions import (
    ConvergenceError,
    ConvergenceWarning,
    NotFittedError,
    NotPSDError,
    SingularSystemError,
)
from lamods.layers import (
    CPLinear,
    GaussianRandomProjection,
    KernelRidgeHead,
    LinearSVMHead,
    LowRankAdapter,
    LowRankLinear,
    ManualConv2d,
    ManualLinear,
    ManualMLP,
    NystromFeatures,
    NystromKernelRidge,
    RandomFourierFeatures,
    RBFKernel,
    SparseRandomProjection,
    SRHTProjection,
    TuckerLinear,
    add_adapters,
    compress,
    fwht,
    johnson_lindenstrauss_min_dim,
    merge_adapters,
)
from lamods.recsys import MatrixFactorization, MovieLens

__version__ = "0.1.0"

__all__ = [
    "CPLinear",
    "TuckerLinear",
    "ConvergenceError",
    "ConvergenceWarning",
    "Estimator",
    "cg",
    "NotFittedError",
    "NotPSDError",
    "SingularSystemError",
    "distances",
    "KernelRidgeHead",
    "LinearSVMHead",
    "NystromFeatures",
    "NystromKernelRidge",
    "RBFKernel",
    "RandomFourierFeatures",
    "NMF",
    "KMeans",
    "LinearRegression",
    "RidgeRegression",
    "SpectralClustering",
    "gram_schmidt",
    "lstsq",
    "orthonormalize",
    "project",
    "spectral_embedding",
    "PCA",
    "GaussianRandomProjection",
    "SRHTProjection",
    "SparseRandomProjection",
    "LowRankAdapter",
    "LowRankLinear",
    "ManualConv2d",
    "ManualLinear",
    "ManualMLP",
    "MatrixFactorization",
    "MovieLens",
    "PCAWhitening",
    "ZCAWhitening",
    "__version__",
    "add_adapters",
    "compress",
    "cp_als",
    "eigh",
    "fwht",
    "hooi",
    "hosvd",
    "inv_sqrtm",
    "johnson_lindenstrauss_min_dim",
    "merge_adapters",
    "pca",
    "randomized_svd",
    "svd",
    "topk_eigh",
]
