"""The one way a command fails: a user error becomes one message, never a traceback.

A user error (:mod:`mrcnn.errors`) anywhere in a command, even wrapped by Hydra, Lightning or a
data loader worker, prints one message on stderr (``mrcnn train: error: ...``), goes to the log
file, and exits with status 1 (:data:`~mrcnn.errors.EXIT_USER_ERROR`). ``HYDRA_FULL_ERROR=1``
shows the traceback instead, as it does for Hydra's own errors. Anything else is a bug and keeps
its traceback.

A run stopped by a signal (:class:`~mrcnn.preemption.RunStopped`) is no error: one message says
which step is saved and how to continue, the signal's previous handler or SLURM's requeue takes
over, and the exit status is 128 + the signal's number.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from mrcnn.errors import EXIT_USER_ERROR, find_user_error, user_message
from mrcnn.preemption import RunStopped

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def command(
    name: str,
) -> Callable[[Callable[[DictConfig], Result]], Callable[[DictConfig], Result]]:
    """Wraps the Hydra task function of command ``name`` (``mrcnn train``, ...) so that a user
    error ends it the documented way (see module doc)."""

    def wrap(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Result]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> Result:
            try:
                return task(cfg)
            except RunStopped as stopped:
                report(name, user_message(stopped), logging.WARNING)
                sys.exit(stopped.hand_over())
            except Exception as error:
                cause = reportable_user_error(error)
                if cause is None:
                    raise
                # Notes on the exception Lightning re-raised (the step a failed run saved).
                notes = [] if cause is error else getattr(error, "__notes__", [])
                report_user_error(name, " ".join([user_message(cause), *notes]))
                sys.exit(EXIT_USER_ERROR)

        return run

    return wrap


def reportable_user_error(error: BaseException) -> BaseException | None:
    """The user error behind ``error`` to report in one message; None when it is a bug, or when
    ``HYDRA_FULL_ERROR=1`` asks for the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    return find_user_error(error)


def report_user_error(name: str, message: str) -> None:
    """``<name>: error: <message>`` on stderr, and in the log file (not twice on screen)."""
    report(name, f"error: {message}", logging.ERROR)


def report(name: str, message: str, level: int) -> None:
    """``<name>: <message>`` on stderr, and in the log file at ``level``."""
    print(f"{name}: {message}", file=sys.stderr, flush=True)
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
