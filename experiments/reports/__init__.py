"""Reports: analysis after training, beyond the task's metrics (plots, tables).

A report is a callable configured with ``_partial_: true`` under the config key ``report``
(``configs/report/*.yaml``, added by an experiment with ``- /report: NAME`` in its defaults).
:func:`experiments.train.train` calls it on rank zero once the model is trained and tested,
with the task holding the best checkpoint's weights::

    report(cfg=cfg, datamodule=datamodule, task=task, output_dir=output_dir, metrics=metrics)

and merges the metrics it returns into ``metrics.json``. It writes its plots under
``<output_dir>/plots/`` (when ``cfg.plots``). A report builds no Trainer of its own: the
other settings it compares train through :func:`experiments.sweep.train_variant`, and a
fine-tune through :func:`experiments.train.make_trainer`. A new report is one file here and
one YAML. Experiments with nothing to train are studies (:mod:`experiments.studies`).
"""

from experiments.reports.kernel import kernel_report
from experiments.reports.lowrank import lowrank_report
from experiments.reports.pca import pca_report
from experiments.reports.randproj import randproj_report
from experiments.reports.tensor import tensor_report

__all__ = ["kernel_report", "lowrank_report", "pca_report", "randproj_report",
           "tensor_report"]
