"""LightningDataModules for the experiments, one file per data source; ``configs/data/*.yaml``
name them by ``_target_``.

- ``base.py``: the contract (:class:`SplitDataModule`: ``load_splits`` once, a Dataset per
  split, the same DataLoaders), :class:`ArrayDataModule` for in-memory arrays,
  :func:`stratified_split`.
- ``digits.py``: scikit-learn's bundled 8x8 digits (offline).
- ``synthetic.py``: Gaussian clusters (generated, offline).
- ``mnist.py``: MNIST and Fashion-MNIST through torchvision's IDX files.
- ``movielens.py``: MovieLens ratings through :mod:`lamods.recsys`.
- ``diabetes.py``: scikit-learn's bundled diabetes regression data (offline).

A new data set: one file here with a :class:`SplitDataModule` subclass, a line below, one
YAML in ``configs/data/`` and its schema in :mod:`experiments.schema`.
"""

from experiments.data.base import ArrayDataModule, SplitDataModule, SplitLoaders, stratified_split
from experiments.data.diabetes import DiabetesDataModule
from experiments.data.digits import DigitsDataModule
from experiments.data.mnist import FashionMNISTDataModule, MNISTDataModule, TorchvisionDataModule
from experiments.data.movielens import MovieLensDataModule
from experiments.data.synthetic import SyntheticDataModule, gaussian_clusters

__all__ = [
    "ArrayDataModule", "DiabetesDataModule", "DigitsDataModule", "FashionMNISTDataModule",
    "MNISTDataModule", "MovieLensDataModule", "SplitDataModule", "SplitLoaders",
    "SyntheticDataModule", "TorchvisionDataModule", "gaussian_clusters", "stratified_split",
]
