"""Checkpoints written atomically, what a checkpoint needs to resume exactly, and the
checkpoint of the last completed step that a run leaves when it stops early."""

from __future__ import annotations

import copy
import logging
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from mrcnn.callbacks.signals import is_stop
from mrcnn.preemption import RunStopped

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

    ``save_on_exception=True`` (the ``last_checkpoint`` of ``conf/callbacks/default.yaml``): a
    run that stops early (a stop signal, an error, Ctrl-C) writes ``last.ckpt`` as it was at the
    end of its last completed optimizer step (:meth:`RunState.rewound`), and the exception gets a
    note that says so and how to continue. Lightning's own ``save_on_exception`` writes the state
    of the moment instead, half a step in (BatchNorm statistics and random state already moved
    by the failed forward pass), under the top-k file name.
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

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not (self.save_on_exception and self.save_last) or trainer.fast_dev_run:
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        run_state = next((c for c in trainer.callbacks if isinstance(c, RunState)), None)
        step = None if run_state is None else run_state.completed_step
        reason = _why_not_saved(trainer, run_state, exception)
        if reason is None and self._last_global_step_saved != step:
            with run_state.rewound(pl_module):
                if trainer.validating:  # stopped by a signal between validation batches
                    for callback in trainer.callbacks:
                        if isinstance(callback, WeightAveraging):  # EMA: raw weights back
                            callback.on_validation_epoch_end(trainer, pl_module)
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if not trainer.is_global_zero:
            return
        if reason is None:
            note = f"Step {step} is saved in {_shown(self.last_model_path)}. " + _resume_hint(
                trainer, Path(self.last_model_path)
            )
        elif self.last_model_path and Path(self.last_model_path).is_file():
            note = f"{reason} {_shown(self.last_model_path)} holds an earlier step. " + (
                _resume_hint(trainer, Path(self.last_model_path))
            )
        else:
            note = f"{reason} There is no checkpoint of this run."
        log.info(note)
        _add_note(exception, note)


def _why_not_saved(
    trainer: L.Trainer, run_state: RunState | None, exception: BaseException
) -> str | None:
    """Why ``last.ckpt`` cannot hold the last completed step after ``exception`` (None: it can)."""
    if run_state is None or run_state.completed_step is None:
        return "No step was completed since the run started."
    if run_state.updating:
        return "It stopped while the weights were being updated, so no step is whole."
    if trainer.world_size > 1 and not isinstance(exception, RunStopped):
        # Saving gathers from every process; the others are not here to take part.
        return "One of its processes failed alone, so they cannot save together."
    averaging = any(isinstance(c, WeightAveraging) for c in trainer.callbacks)
    if trainer.validating and averaging and not is_stop(exception):
        return "It failed during validation, while EMA had the averaged weights in place."
    return None


def _resume_hint(trainer: L.Trainer, checkpoint: Path) -> str:
    """The command that continues this run from ``checkpoint``."""
    run_dir = Path(trainer.default_root_dir)
    if checkpoint == run_dir / "checkpoints" / "last.ckpt":
        return f"Continue with: mrcnn train ckpt_path=last hydra.run.dir={_shown(run_dir)}"
    return f"Continue with: mrcnn train ckpt_path={_shown(checkpoint)}"


def _shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter to read)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _add_note(exception: BaseException, note: str) -> None:
    """``exception.add_note(note)``, also on Python 3.10 (which shows no notes itself; mrcnn's
    one-line error messages do)."""
    notes = list(getattr(exception, "__notes__", []))
    exception.__notes__ = [*notes, note]


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


@dataclass
class _StepEnd:
    """What moves within a step besides the weights and the optimizer, as it was at a step's
    end: enough to write a checkpoint of that step after the next one failed half-way."""

    step: int
    rng: dict[str, Any]
    loops: dict[str, Any]  # Lightning's fit loop progress
    data: dict[str, Any] | None  # the data module's position in its epoch
    buffers: dict[str, Tensor]  # BatchNorm statistics move in every training forward


class RunState(Callback):
    """Saves in every checkpoint what Lightning does not, so a resumed run repeats exactly.

    - ``overrides``: the command-line overrides the run was configured with, so
      ``python -m mrcnn.train ckpt_path=...`` rebuilds the same config
      (:func:`saved_overrides`).
    - ``rng_states``: every process's random generators (the RPN and RoI heads sample their
      training boxes at random), one entry per rank, restored on resume.

    Data order and augmentation need no state here: they are functions of (seed, epoch, index);
    the data module saves how far into its epoch the run got.

    It also keeps the state of the last completed optimizer step (:class:`_StepEnd`, a few
    kilobytes and the module's buffers) so that a run stopped by an error or a signal can still
    write a checkpoint of that step (:meth:`rewound`): one identical to a checkpoint written at
    that step's end, which resumes to the same losses as a run never stopped.
    """

    def __init__(self, overrides: Sequence[str] = ()) -> None:
        self.overrides = list(overrides)
        self._step_end: _StepEnd | None = None
        self._rewound = False
        self.updating = False

    @property
    def completed_step(self) -> int | None:
        """The last optimizer step this run completed (None: none since it started)."""
        return None if self._step_end is None else self._step_end.step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_end, self.updating = None, False

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        self.updating = True  # until the step's end: weights, optimizer and schedule move

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self._step_end is not None and trainer.global_step == self._step_end.step:
            return  # a micro-batch of gradient accumulation: no step ended
        datamodule = trainer.datamodule
        self._step_end = _StepEnd(
            step=trainer.global_step,
            rng=_rng_state(),
            loops=copy.deepcopy(trainer.fit_loop.state_dict()),
            data=None if datamodule is None else copy.deepcopy(datamodule.state_dict()),
            buffers={name: b.detach().clone() for name, b in pl_module.named_buffers()},
        )
        self.updating = False

    @contextmanager
    def rewound(self, pl_module: L.LightningModule) -> Iterator[None]:
        """Checkpoints saved inside this block hold the last completed step: this process's
        random state and the module's buffers are set back to that step's end (the run is
        ending: they are not put forward again), and the loop progress and data position are
        that step's. Call it in every process: each sets back its own state."""
        state = self._step_end
        assert state is not None and not self.updating
        _set_rng_state(state.rng)
        for name, buffer in pl_module.named_buffers():
            buffer.copy_(state.buffers[name])
        self._rewound = True
        try:
            yield
        finally:
            self._rewound = False

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
        if self._rewound and self._step_end is not None:
            checkpoint["loops"]["fit_loop"] = self._step_end.loops
            if self._step_end.data is not None:
                checkpoint[type(trainer.datamodule).__qualname__] = self._step_end.data

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
