"""LightningModules for the experiments; ``configs/task/*.yaml`` name them by ``_target_``.

A new task is one file here with a :class:`Task` subclass (its ``step`` and the metric
it monitors), one YAML in ``configs/task/``, and a line below.
"""

from experiments.tasks.base import Task
from experiments.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask", "Task"]
