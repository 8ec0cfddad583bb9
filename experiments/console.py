"""What the console shows: warnings and log lines nobody can act on are filtered at the source.

:func:`quiet_console` runs when :mod:`experiments` is imported, so every process that runs an
experiment gets it, DDP workers included (a spawned worker imports :mod:`experiments` when it
unpickles the task). What stays: Lightning's device line, one model summary per run, the
progress (bars on a terminal, one line per epoch otherwise), each run's summary line, and
every warning that is not in :data:`QUIET_WARNINGS`.
"""

from __future__ import annotations

import logging
import warnings

#: warnings a user cannot act on (message regexes)
QUIET_WARNINGS = (
    # small in-memory data sets need no loader workers; smoke runs have few batches
    r".*does not have many workers.*",
    r".*number of training batches.*log_every_n_steps.*",
    # Lightning 2.6 calls an API that torch 2.14 deprecates
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # resuming a run: Lightning notes that it restores the loops mid-way
    r".*is not resumable.*",
)
#: Lightning's INFO lines that advertise rather than inform
ADVERTS = ("litlogger", "LitLogger", "💡 Tip", "Tip:")


class _NoAdverts(logging.Filter):
    """Drop log records that advertise products (Lightning's ``💡 Tip: ... litlogger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(word in message for word in ADVERTS)


def quiet_console() -> None:
    """Install the warning filters and the advert filter (idempotent)."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # alembic (imported by Optuna) logs every plugin it sets up at INFO
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero",
                 "lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in logger.filters):
            logger.addFilter(_NoAdverts())
