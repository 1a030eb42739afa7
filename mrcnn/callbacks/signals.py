"""A run that is told to stop (SIGUSR1, SIGTERM, submitit's signal) stops at the end of its
current step, so that its checkpoint holds a whole step (:mod:`mrcnn.preemption`)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mrcnn.preemption import STOP_SIGNALS, Handler, RunStopped, signal_name, submitit_signal

log = logging.getLogger(__name__)


class StopOnSignal(Callback):
    """Turns a stop signal into :class:`~mrcnn.preemption.RunStopped`, raised once the optimizer
    step the signal arrived in is done and logged (before the next batch, or between validation
    batches); the Trainer then calls ``on_exception``, where
    :class:`~mrcnn.callbacks.ModelCheckpoint` saves that step.

    The handler only records the signal: saving from inside it, as Lightning's SLURM handler
    does, would write whatever half of a step the process was in. Under DDP the processes agree
    before every batch (one all-reduce of a flag), so they stop at the same step and save it
    together, whichever of them was signalled.

    The handlers are installed when training starts, after Lightning's own (so they replace
    Lightning's mid-step SLURM save and its SIGTERM flag), and Lightning puts back the ones from
    before the run when the Trainer ends, on every path.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Handler] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received = None
        self._previous = {}
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        signals = [*STOP_SIGNALS, submitit_signal()]
        for signum in dict.fromkeys(s for s in signals if s is not None):
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:  # ignored on purpose by whoever started us
                self._previous[signum] = previous

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum in self._previous:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            log.info("Received %s: stopping at the end of this step.", signal_name(signum))
        self.received = signum

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Here, not at the previous batch's end: Lightning logs a step's losses after its
        # on_train_batch_end, and a stop raised there would leave that step out of the curves.
        self._stop_if_told(trainer)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # A long validation (COCO: minutes) must not outlast SLURM's grace time.
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._stop_if_told(trainer)

    def _stop_if_told(self, trainer: L.Trainer) -> None:
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            raise self.stopped(trainer)

    def stopped(self, trainer: L.Trainer, signum: int | None = None) -> RunStopped:
        """The :class:`RunStopped` of this run (``signum``: the signal if another path saw it,
        e.g. Lightning's SIGTERMException before training started)."""
        signum = signum or self.received
        received = signum is not None
        signum = signum or signal.SIGTERM
        return RunStopped(signum, trainer.global_step, self._previous.get(signum), received)


@contextmanager
def stops_reported(trainer: L.Trainer) -> Iterator[None]:
    """Lightning's own SIGTERMException (a SIGTERM before :class:`StopOnSignal` took over, or
    during the final validation) ends the block as the :class:`RunStopped` mrcnn reports, with
    its notes: as a bare ``SystemExit`` it would end the process with status 0."""
    try:
        yield
    except SIGTERMException as stop:
        stopper = next((c for c in trainer.callbacks if isinstance(c, StopOnSignal)), None)
        stopped = (stopper or StopOnSignal()).stopped(trainer, signal.SIGTERM)
        stopped.__notes__ = list(getattr(stop, "__notes__", []))
        raise stopped from None


def is_stop(exception: BaseException) -> bool:
    """Whether ``exception`` ends a run that was told to stop (ours, or Lightning's own on a
    SIGTERM that came before this callback took over)."""
    return isinstance(exception, RunStopped | SIGTERMException)
