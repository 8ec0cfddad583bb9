"""The run's CSV log, kept across resumes: ``csv/metrics.csv`` is appended to, never wiped.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a run
resumed into its own directory (``ckpt_path=<run dir>/checkpoints/last.ckpt``) would lose
the epochs before the checkpoint. :class:`CSVLogger` here reads the file's columns back and
appends; :class:`TrimLogOnResume` first drops the rows of the epochs that the resumed run
trains again (and any old test rows), so every epoch appears once.

Note [CSV logs across spawned processes]: with ``DDPStrategy(start_method="spawn")``
``fit`` and ``test`` each run in fresh processes that get a pickled copy of the logger,
whose writer never saw the columns that ``fit`` wrote; reading the header back when the
writer starts keeps every column there too.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import csv_logs


class _AppendingWriter(csv_logs.ExperimentWriter):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` and its columns."""

    def _check_log_dir_exists(self) -> None:
        self._merge_header()

    def _merge_header(self) -> None:
        """Add the columns of the ``metrics.csv`` on disk to the known ones. The file is the
        truth: a writer pickled into a spawned process before another process wrote new
        columns (Note [CSV logs across spawned processes]) must not drop them."""
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))

    def save(self) -> None:
        self._merge_header()
        super().save()


class CSVLogger(csv_logs.CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv``.

    Same arguments as Lightning's (``save_dir``, ``name``, ``version``, ...).
    """

    @property
    def experiment(self) -> csv_logs.ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def trim(self, first_epoch: int) -> None:
        """Drop the rows of epochs ``>= first_epoch`` and every test row from ``metrics.csv``."""
        path = Path(self.log_dir) / csv_logs.ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)

        def keep(row: dict[str, Any]) -> bool:
            if any(row.get(k) for k in header if k.startswith("test/")):
                return False
            epoch = row.get("epoch")
            return not epoch or int(float(epoch)) < first_epoch

        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(r for r in rows if keep(r))


class TrimLogOnResume(Callback):
    """Before a resumed fit trains, drop the CSV rows it is about to write again."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.trim(trainer.current_epoch)
