"""Differentiable decompositions and fit-style modules built on them.

Functional (gradients flow to the input; stable where ``torch.linalg`` is not):

- :func:`eigh`, :func:`svd`: decompositions with Lorentzian-broadened backward.
- :func:`randomized_svd`, :func:`topk_eigh`: rank-k methods, backward through the
  final small problem.
- :func:`inv_sqrtm`: :math:`(A + \\epsilon I)^{-1/2}` with an exact backward for any spectrum.
- :func:`pca`: top-k principal components through the stable eigh.

Modules: :class:`PCA` (fit / partial_fit / transform / inverse_transform),
:class:`ZCAWhitening`, :class:`PCAWhitening`.
"""

from lamods.decomp.eigh import EighResult, eigh
from lamods.decomp.matfun import inv_sqrtm
from lamods.decomp.pca import PCA, PCAResult, pca
from lamods.decomp.randomized import randomized_range_finder, randomized_svd, topk_eigh
from lamods.decomp.svd import SVDResult, svd
from lamods.decomp.whitening import PCAWhitening, ZCAWhitening

__all__ = [
    "PCA",
    "EighResult",
    "PCAResult",
    "PCAWhitening",
    "SVDResult",
    "ZCAWhitening",
    "eigh",
    "inv_sqrtm",
    "pca",
    "randomized_range_finder",
    "randomized_svd",
    "svd",
    "topk_eigh",
]
