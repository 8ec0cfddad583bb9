"""LightningModules for the experiments; ``configs/task/*.yaml`` name them by ``_target_``.

A new task is one file here with a :class:`Task` subclass (its ``step``, the metric it
monitors, ``save_task_hyperparameters`` with its options), one YAML in ``configs/task/``, and
a line below. ``Task.load_from_checkpoint(path)`` rebuilds any of them from a checkpoint.
"""

from experiments.tasks.base import Task
from experiments.tasks.classification import ClassificationTask
from experiments.tasks.gibbs_rating import GibbsRatingTask
from experiments.tasks.rating import RatingTask

__all__ = ["ClassificationTask", "GibbsRatingTask", "RatingTask", "Task"]
