"""The one way a command fails: a user error becomes one message, never a traceback.

A user error (:mod:`mrcnn.errors`) anywhere in a command, even wrapped by Hydra, Lightning or a
data loader worker, prints one message on stderr (``mrcnn train: error: ...``), goes to the log
file, and exits with status 1 (:data:`~mrcnn.errors.EXIT_USER_ERROR`). ``HYDRA_FULL_ERROR=1``
shows the traceback instead, as it does for Hydra's own errors. Anything else is a bug and keeps
its traceback.
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
            except Exception as error:
                cause = reportable_user_error(error)
                if cause is None:
                    raise
                report_user_error(name, user_message(cause))
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
    print(f"{name}: error: {message}", file=sys.stderr, flush=True)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
