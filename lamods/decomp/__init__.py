"""Differentiable decompositions and fit-style modules built on them.

Functional (gradients flow to the input; stable where ``torch.linalg`` is not):

- :func:`eigh`, :func:`svd`: decompositions with Lorentzian-broadened backward.
- :func:`randomized_svd`, :func:`topk_eigh`: rank-k methods, backward through the
  final small problem.
- :func:`inv_sqrtm`: :math:`(A + \\epsilon I)^{-1/2}` with an exact backward for any spectrum.
- :func:`pca`: top-k principal components through the stable eigh.
- :func:`cp_als`, :func:`hosvd`, :func:`hooi`: CP and Tucker decompositions of N-way tensors
  (:mod:`lamods.decomp.tensor`, which also has ``unfold``, ``fold``, ``mode_product``).

Modules: :class:`PCA` (fit / partial_fit / transform / inverse_transform),
:class:`ZCAWhitening`, :class:`PCAWhitening`.
"""

from lamods.decomp.eigh import EighResult, eigh
from lamods.decomp.matfun import inv_sqrtm
from lamods.decomp.pca import PCA, PCAResult, pca
from lamods.decomp.randomized import randomized_range_finder, randomized_svd, topk_eigh
from lamods.decomp.svd import SVDResult, svd
from lamods.decomp.tensor import (
    CPResult,
    TuckerResult,
    cp_als,
    cp_reconstruct,
    hooi,
    hosvd,
    mode_product,
    tucker_reconstruct,
)
from lamods.decomp.whitening import PCAWhitening, ZCAWhitening

__all__ = [
    "PCA",
    "CPResult",
    "EighResult",
    "PCAResult",
    "PCAWhitening",
    "SVDResult",
    "TuckerResult",
    "ZCAWhitening",
    "cp_als",
    "cp_reconstruct",
    "eigh",
    "hooi",
    "hosvd",
    "inv_sqrtm",
    "mode_product",
    "pca",
    "randomized_range_finder",
    "randomized_svd",
    "svd",
    "topk_eigh",
    "tucker_reconstruct",
]
