"""Reports: what an experiment computes and plots after training, beyond the task's metrics.

A report is a callable configured with ``_partial_: true`` under the config key ``report``
(``configs/report/*.yaml``, added by an experiment with ``- /report: NAME`` in its defaults).
:func:`experiments.train.train` calls it on rank zero once the model is trained and tested::

    report(cfg=cfg, datamodule=datamodule, task=task, output_dir=output_dir, metrics=metrics)

and merges the metrics it returns into ``metrics.json``. It writes its plots under
``<output_dir>/plots/`` (when ``cfg.plots``). A new report is one file here and one YAML.
An experiment whose work is all in its report (fitting estimators, no network to train) sets
``train: false``: then no task or trainer is built and the report gets ``task=None``.
"""

from experiments.reports.clustering import clustering_report
from experiments.reports.kernel import kernel_report
from experiments.reports.linreg import linreg_report
from experiments.reports.lowrank import lowrank_report
from experiments.reports.pca import pca_report
from experiments.reports.randproj import randproj_report

__all__ = [
    "clustering_report", "kernel_report", "linreg_report", "lowrank_report", "pca_report",
    "randproj_report",
]
