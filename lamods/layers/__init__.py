"""``nn.Module`` layers used inside networks."""

from lamods.layers.activations import ACTIVATIONS, Activation
from lamods.layers.conv import ManualConv2d, conv2d
from lamods.layers.hadamard import fwht, hadamard_matrix
from lamods.layers.kernel_heads import (
    KernelRidgeHead,
    NystromFeatures,
    NystromKernelRidge,
    kernel_ridge,
)
from lamods.layers.kernel_svm import LinearSVMHead, squared_hinge_loss
from lamods.layers.kernels import (
    CosineKernel,
    Kernel,
    LaplacianKernel,
    LinearKernel,
    PolynomialKernel,
    RBFKernel,
    make_kernel,
)
from lamods.layers.lowrank import LowRankAdapter, LowRankLinear, energy_rank, lowrank_linear
from lamods.layers.manual import ManualLinear, ManualMLP, linear, mlp
from lamods.layers.projection import (
    GaussianRandomProjection,
    SparseRandomProjection,
    SRHTProjection,
    johnson_lindenstrauss_min_dim,
    pairwise_distance_distortion,
    pairwise_sq_distances,
)
from lamods.layers.random_features import RandomFourierFeatures
from lamods.layers.surgery import (
    AdapterReport,
    CompressionReport,
    LayerAdapter,
    LayerCompression,
    add_adapters,
    compress,
    merge_adapters,
)
from lamods.layers.tensorized import CPLinear, TuckerLinear

__all__ = [
    "CPLinear",
    "TuckerLinear",
    "CosineKernel",
    "Kernel",
    "KernelRidgeHead",
    "LaplacianKernel",
    "LinearKernel",
    "LinearSVMHead",
    "NystromFeatures",
    "NystromKernelRidge",
    "PolynomialKernel",
    "RBFKernel",
    "RandomFourierFeatures",
    "kernel_ridge",
    "make_kernel",
    "ACTIVATIONS",
    "Activation",
    "AdapterReport",
    "CompressionReport",
    "GaussianRandomProjection",
    "LayerAdapter",
    "LayerCompression",
    "LowRankAdapter",
    "ManualConv2d",
    "LowRankLinear",
    "ManualLinear",
    "ManualMLP",
    "SRHTProjection",
    "SparseRandomProjection",
    "add_adapters",
    "compress",
    "conv2d",
    "energy_rank",
    "fwht",
    "hadamard_matrix",
    "johnson_lindenstrauss_min_dim",
    "linear",
    "lowrank_linear",
    "merge_adapters",
    "mlp",
    "pairwise_distance_distortion",
    "pairwise_sq_distances",
    "squared_hinge_loss",
]
