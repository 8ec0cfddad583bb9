"""What the experiment test files share: paths, tiny-run overrides and config composition."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import experiments  # noqa: F401  (registers the config schemas and resolvers)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
#: the local data copies beside the checkout (../shared/data); tests that need them skip without
SHARED_DATA = REPO.parent / "shared" / "data"
HAVE_MNIST = (SHARED_DATA / "MNIST" / "raw").is_dir()
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"no local MNIST copy at {SHARED_DATA / 'MNIST' / 'raw'} (no network)"
)

#: no progress bar or model summary in test output
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
#: a few batches, one epoch, quiet
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    *QUIET,
]


def make_cfg(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``configs/config.yaml`` with ``overrides`` (and the run directory)."""
    if output_dir is not None:
        overrides = [*overrides, f"paths.output_dir={output_dir}"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class SigtermAfter:
    """A Lightning callback that sends this process ``SIGTERM`` at the end of epoch ``epochs``
    (what a scheduler or ``kill`` does to a running job). Add it to a run with
    ``+callbacks.sigterm._target_=experiment_helpers.SigtermAfter +callbacks.sigterm.epochs=N``.
    """

    def __new__(cls, epochs: int):  # a Callback subclass, built lazily (Lightning on import)
        import os
        import signal

        from pytorch_lightning.callbacks import Callback

        class _Sigterm(Callback):
            def on_train_epoch_end(self, trainer, pl_module) -> None:
                if trainer.current_epoch + 1 == epochs:
                    os.kill(os.getpid(), signal.SIGTERM)

        return _Sigterm()
