"""Matrix-factorization recommender and MovieLens data.

- :class:`Ratings`, :class:`MovieLens`: rating data with contiguous user/item indices.
- :func:`random_split`, :func:`kfold`, :func:`kfold_indices`, :func:`leave_last_out`: splits.
- :func:`synthetic_ratings`, :func:`planted_ratings`, :func:`synthetic_interactions`:
  low-rank ratings plus noise (dense-mask or sparse-pair sampling, up to ML-25M's shape) and
  implicit feedback with a planted taste (no data file).
- :func:`fit_wals`, :func:`fit_bpr`: implicit-feedback factorization (weighted ALS of Hu,
  Koren & Volinsky; BPR), evaluated by :func:`ranking_metrics` on :func:`leave_last_out`.
- :class:`EASE`: closed-form item-item model for implicit feedback (Steck 2019).
- :func:`topk_scores`: blocked top-k retrieval behind ``recommend`` / ``similar_items``.
- :class:`MatrixFactorization`: biased MF / SVD++ model with ``recommend`` and
  ``similar_items``.
- :func:`fit_sgd`, :func:`fit_als`, :func:`fit_gibbs`: mini-batch gradient, alternating
  least squares, Bayesian (Gibbs; BPMF, optionally with the implicit feedback as side
  features) fitting; :func:`fit_als_sharded`: ALS with the rows split over processes
  (``torch.distributed``); :func:`ridge_rows`: one ALS half-step;
  :func:`mf_backward`: the hand-written gradient ``fit_sgd`` uses for biased MF.
- :func:`select_by_validation`, :func:`parameter_grid`: hyperparameters chosen on a held-out
  part of the training data.
- :func:`rmse`, :func:`mae`, :func:`evaluate`, :func:`precision_at_k`, :func:`recall_at_k`,
  :func:`ndcg_at_k`, :func:`ranking_metrics`: metrics.
"""

from lamods.recsys.als import fit_als, ridge_rows
from lamods.recsys.bayes import GibbsSampler, fit_gibbs
from lamods.recsys.distributed import fit_als_sharded, shard_range
from lamods.recsys.ease import EASE
from lamods.recsys.implicit import bpr_loss, fit_bpr, fit_wals, wals_loss
from lamods.recsys.items import read_item_titles as read_item_titles
from lamods.recsys.metrics import (
    evaluate,
    mae,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
)
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import VARIANTS, MovieLens, Ratings
from lamods.recsys.splits import kfold, kfold_indices, leave_last_out, random_split
from lamods.recsys.synthetic import (
    SyntheticRatings,
    planted_ratings,
    synthetic_interactions,
    synthetic_ratings,
)
from lamods.recsys.topk import topk_scores
from lamods.recsys.train import FitHistory, fit_sgd, mf_backward
from lamods.recsys.tuning import Selection, parameter_grid, select_by_validation

__all__ = [
    "EASE",
    "VARIANTS",
    "FitHistory",
    "GibbsSampler",
    "MatrixFactorization",
    "MovieLens",
    "Ratings",
    "Selection",
    "SyntheticRatings",
    "bpr_loss",
    "evaluate",
    "fit_als",
    "fit_als_sharded",
    "fit_bpr",
    "fit_gibbs",
    "fit_sgd",
    "fit_wals",
    "kfold",
    "kfold_indices",
    "leave_last_out",
    "mae",
    "mf_backward",
    "ndcg_at_k",
    "parameter_grid",
    "planted_ratings",
    "precision_at_k",
    "random_split",
    "ranking_metrics",
    "recall_at_k",
    "ridge_rows",
    "rmse",
    "select_by_validation",
    "shard_range",
    "synthetic_interactions",
    "synthetic_ratings",
    "topk_scores",
    "wals_loss",
]
