"""Fault injection for the reliability tests: a real crash, not a mocked one.

``KillOnce`` SIGKILLs its own training worker process when an epoch starts, once per
marker file, so a test can check that Ray restarts the worker group, the run resumes
from its last checkpoint, and the experiment still completes.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class KillOnce(pl.Callback):
    def __init__(self, epoch: int, marker: str | Path):
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and trainer.global_rank == 0 and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(f"killed worker pid {os.getpid()} at epoch {self.epoch}\n")
            log.warning("fault injection: killing this training worker (pid %d) at epoch %d", os.getpid(), self.epoch)
            os.kill(os.getpid(), signal.SIGKILL)
