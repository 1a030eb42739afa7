"""Callbacks for tests that run real training processes: each rank saves its weights and loss;
one rank's batch turns NaN; a run waits where a test kills it, signals it or breaks its data.

Added to a real ``python -m mrcnn.train`` run like any callback, through the config:
``+callbacks.rank_weights._target_=tests.rank_weights.SaveWeightsPerRank
+callbacks.rank_weights.dirpath=DIR`` (with the repository root on ``PYTHONPATH``, as
``tests.tiny.run_module`` puts it: ``tests`` is a package there).
"""

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class SaveWeightsPerRank(Callback):
    """Writes ``step<N>-rank<R>.pt`` after optimizer step N: ``parameters``, ``buffers`` and
    ``loss``, this process's own loss of the step's batch."""

    def __init__(self, dirpath: str, steps: tuple[int, ...] = (1, 2)) -> None:
        self.dirpath = Path(dirpath)
        self.steps = set(steps)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        if trainer.global_step in self.steps:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            name = f"step{trainer.global_step}-rank{trainer.global_rank}.pt"
            state = {
                "parameters": {k: v.detach() for k, v in pl_module.named_parameters()},
                "buffers": {k: v.detach() for k, v in pl_module.named_buffers()},
                "loss": outputs["loss"].detach(),
            }
            torch.save(state, self.dirpath / name)


class NanImageOnRank(Callback):
    """Turns the first image of one process's batch at optimizer step ``step`` into NaN, so that
    only that process's loss is non-finite (DDP keeps the weights identical, not the data)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank = rank
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any
    ) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch[0][0].fill_(float("nan"))


class PauseAfterStep(Callback):
    """Holds a fresh (not resumed) run still after optimizer step ``step``, its logs flushed,
    so that a test can kill it there: tiny steps are too quick to catch otherwise."""

    def __init__(self, step: int, seconds: float = 120.0) -> None:
        self.step = step
        self.seconds = seconds

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            for logger in trainer.loggers:
                logger.save()
            time.sleep(self.seconds)


class WaitAtStep(Callback):
    """Holds a fresh (not resumed) run after optimizer step ``step``, before the next batch's
    forward, until the test says go: it writes ``<dirpath>/waiting`` and waits for
    ``<dirpath>/go``. The test acts in between (sends a signal, breaks files) on a run that is
    known to be there, however slow the machine."""

    def __init__(self, step: int, dirpath: str, timeout: float = 600.0) -> None:
        self.step = step
        self.dirpath = Path(dirpath)
        self.timeout = timeout

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step != self.step or trainer.ckpt_path is not None:
            return
        for logger in trainer.loggers:
            logger.save()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "waiting").touch()
        deadline = time.monotonic() + self.timeout
        while not (self.dirpath / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
