"""What a run does when it is told to stop: SLURM sends SIGUSR1 (``--signal=USR1@90``) or
SIGTERM before its time limit or when it pre-empts the job, submitit's launcher its own signal
(SIGUSR2). The run finishes the step it is in, saves ``checkpoints/last.ckpt``
(:class:`mrcnn.callbacks.StopOnSignal`, :class:`mrcnn.callbacks.ModelCheckpoint`), and then
this module hands over: to the handler that was there before (submitit's requeues the job),
or, for SIGUSR1 in a SLURM batch job, to ``scontrol requeue`` as Lightning's own SLURM support
does; then the process exits with 128 + the signal's number, as a process ended by it would.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any] | int | None

# The signals that stop a run at the end of its step: SLURM's --signal of choice (USR1, the
# one Lightning requeues on) and the SIGTERM that SLURM, Kubernetes and `kill` send before
# killing. Windows has no SIGUSR1.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGUSR1", "SIGTERM") if hasattr(signal, name)
)


def submitit_signal() -> int | None:
    """The signal hydra-submitit-launcher's jobs are sent before their time limit (sbatch
    ``--signal=USR2@<signal_delay_s>``; ``SUBMITIT_PREEMPT_SIGNAL`` names another), when this
    process is such a job; None otherwise."""
    if "SUBMITIT_FOLDER" not in os.environ and "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", None)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def slurm_batch_job() -> bool:
    """Whether this process is a SLURM batch job Lightning would requeue (not an interactive
    ``srun --pty bash``): Lightning's own test."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def slurm_restart_count() -> int:
    """How many times SLURM has requeued this job (``SLURM_RESTART_COUNT``; 0 when none)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


class RunStopped(Exception):
    """A run stopped by ``signum`` after ``step``; raised at a step's end so that the Trainer
    saves the step and ends (see the module doc)."""

    def __init__(
        self, signum: int, step: int, previous: Handler = None, received: bool = True
    ) -> None:
        self.signum = signum
        self.step = step
        self.previous = previous
        # False in a DDP process that stops because another process was signalled.
        self.received = received
        how = "by " + signal_name(signum) if received else "with the other processes"
        super().__init__(f"Stopped {how} after step {step}.")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def hand_over(self) -> int:
        """Run what this signal would have run without mrcnn (submitit's handler requeues its
        job and exits), or requeue a SLURM batch job on SIGUSR1; return the exit status."""
        usr1 = self.signum == getattr(signal, "SIGUSR1", None)
        if callable(self.previous) and self.received:
            self.previous(self.signum, None)
        elif usr1 and self.received and slurm_batch_job():
            requeue_slurm_job()
        return self.exit_status


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this SLURM job (one task of an array: ``<array id>_<task id>``), from
    its global rank zero only; as Lightning's SLURM signal handler does."""
    if int(os.environ.get("SLURM_PROCID") or 0) != 0:
        return False
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    else:
        job = os.environ["SLURM_JOB_ID"]
    if not re.fullmatch(r"[0-9_]+", job):
        log.warning("Not requeueing: %r is not a SLURM job id.", job)
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False).returncode
    except FileNotFoundError:
        log.warning("Not requeued: there is no scontrol here. Resume with ckpt_path=last.")
        return False
    if result == 0:
        log.info("Requeued SLURM job %s: it resumes from its last.ckpt when it starts again.", job)
        return True
    log.warning("scontrol requeue %s failed (exit status %d).", job, result)
    return False
