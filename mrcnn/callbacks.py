"""Lightning callbacks that mrcnn's configs use."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, plus a ``last.ckpt`` that is current when training ends.

    Lightning saves ``last`` at validation or epoch end; a run that stops at
    ``trainer.max_steps`` in the middle of an epoch would otherwise keep an older ``last.ckpt``.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # no checkpoints (Lightning 2.6's on_train_end forgets this)
            return
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
