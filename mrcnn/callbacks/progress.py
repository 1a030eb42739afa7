"""Progress in a log file: the line that replaces the progress bar outside a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mrcnn.model.module import LOSS_NAMES

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLog(Callback):
    """A progress line in the log every ``every_n_steps`` optimizer steps or ``every_n_seconds``.

    The progress bar only helps in a terminal; under ``> file``, ``nohup`` or a SLURM job a
    run would otherwise say nothing until it ends. Each line has the step and total, the loss
    and its five terms, the learning rate, seconds per step and the time left, e.g.
    ``step 150/600 (25%) | loss 1.234 | loss_classifier 0.2 ... | lr 0.02 | 0.31 s/step | ETA
    2m19s``. It always goes to ``train.log``; to the terminal only when there is no progress
    bar (stdout is not a terminal, or ``trainer.enable_progress_bar=false``).
    """

    def __init__(self, every_n_steps: int = 50, every_n_seconds: float = 30.0) -> None:
        self.every_n_steps = every_n_steps
        self.every_n_seconds = every_n_seconds
        self._last_step = 0
        self._last_time = self._start_time = 0.0
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = self._start_time = time.monotonic()
        self._last_step = self._start_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        step, now = trainer.global_step, time.monotonic()
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        due = step - self._last_step >= self.every_n_steps
        due = due or now - self._last_time >= self.every_n_seconds or step == total
        if not trainer.is_global_zero or step == self._last_step or not due:
            return
        per_step = (now - self._start_time) / max(step - self._start_step, 1)
        metrics = trainer.callback_metrics
        values = [
            f"{name} {float(metrics[f'train/{name}_step']):.4f}"
            for name in ("loss", *LOSS_NAMES)
            if f"train/{name}_step" in metrics
        ]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        line = " | ".join(
            [
                f"step {step}/{int(total)} ({100 * step / total:.0f}%)",
                *values,
                f"lr {lr:.4g}",
                f"{per_step:.2f} s/step",
                f"ETA {_duration(per_step * (total - step))}",
            ]
        )
        self._last_step, self._last_time = step, now
        self._write(trainer, line)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = [
            f"{name} {float(metrics[f'val/{name}']):.3f}"
            for name in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AP50", "loss")
            if f"val/{name}" in metrics
        ]
        if trainer.is_global_zero and not trainer.sanity_checking and shown:
            self._write(trainer, f"validation at step {trainer.global_step}: " + " | ".join(shown))

    @staticmethod
    def _write(trainer: L.Trainer, line: str) -> None:
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None)
        if trainer.progress_bar_callback is not None:  # the terminal has the bar: the file only
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
        else:
            log.handle(record)


def stdout_is_terminal() -> bool:
    """Whether a progress bar can draw (stdout is a terminal, not a file or a pipe)."""
    return sys.stdout.isatty()
