"""Checkpoints written atomically, and what a checkpoint needs to resume exactly."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

log = logging.getLogger(__name__)


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, written atomically, plus a ``last.ckpt`` current at the end.

    Every file is written to ``<name>.tmp`` in the same folder and then renamed over the old one
    (``os.replace``), so a run killed while saving (SIGKILL, out of memory, a pre-empted node)
    leaves the previous complete checkpoint, never a truncated one.

    The loggers are flushed once the saved step's own metrics are logged (at the next batch):
    TensorBoard otherwise holds events up to two minutes, and a killed run would leave a gap
    in its curves before the step it resumes from.

    Lightning saves ``last`` at validation or epoch end; a run that stops at
    ``trainer.max_steps`` in the middle of an epoch would otherwise keep an older ``last.ckpt``.
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = f"{filepath}.tmp"
        # Every rank takes part (the state is gathered); only rank zero writes the file.
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath
        self._flush_pending = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if getattr(self, "_flush_pending", False):
            for logger in trainer.loggers:
                logger.save()
            self._flush_pending = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # no checkpoints (Lightning 2.6's on_train_end forgets this)
            return
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def _rng_state() -> dict[str, Any]:
    """This process's random generators, as plain data and tensors (``weights_only`` loads it)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RunState(Callback):
    """Saves in every checkpoint what Lightning does not, so a resumed run repeats exactly.

    - ``overrides``: the command-line overrides the run was configured with, so
      ``python -m mrcnn.train ckpt_path=...`` rebuilds the same config
      (:func:`saved_overrides`).
    - ``rng_states``: every process's random generators (the RPN and RoI heads sample their
      training boxes at random), one entry per rank, restored on resume.

    Data order and augmentation need no state here: they are functions of (seed, epoch, index);
    the data module saves how far into its epoch the run got.
    """

    def __init__(self, overrides: Sequence[str] = ()) -> None:
        self.overrides = list(overrides)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = [_rng_state()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Called on every rank while a checkpoint is saved: gather, rank zero writes.
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, _rng_state())
        checkpoint["overrides"] = self.overrides
        checkpoint["rng_states"] = states

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        if len(states) != trainer.world_size:
            log.warning(
                "The checkpoint holds random generator states of %d processes, this run has %d: "
                "every process takes rank zero's; training goes on but will not repeat the "
                "interrupted run exactly.",
                len(states),
                trainer.world_size,
            )
        _set_rng_state(states[trainer.global_rank if len(states) == trainer.world_size else 0])


def saved_overrides(ckpt_path: str | Path) -> list[str]:
    """The command-line overrides of the run that wrote ``ckpt_path`` ([] for older files)."""
    from mrcnn.model.checkpoint import read_checkpoint  # the one reader: clear errors

    return list(read_checkpoint(ckpt_path).get("overrides", []))
