"""Checks on what training sees."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mrcnn.data.errors import DataError


class EmptyEpochCheck(Callback):
    """Stops a run when a whole epoch had no usable instance.

    Checked here rather than by reading every mask up front: a whole epoch of images, none with
    a usable instance, means the model can learn nothing but background.
    """

    def __init__(self) -> None:
        self._batches = self._instances = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = self._instances = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if outputs is None:  # a skipped batch (on_nonfinite_loss=skip)
            return
        self._batches += 1
        self._instances += sum(len(target["labels"]) for target in batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        complete = self._batches == trainer.num_training_batches
        if complete and self._batches and not self._instances:
            raise DataError(
                f"No usable instance in a whole epoch ({self._batches} batches): every training "
                "image is a negative or its instances were dropped as empty. Run "
                "`python -m mrcnn.data.check` with the same data overrides to see why."
            )
