"""One place that hands pictures and tables to whatever loggers a run has.

Scalars go through ``LightningModule.log``, which every Lightning logger takes. Images and tables
have no common Lightning API: each logger has its own call, so the callbacks that draw them
(image panels, PR curves, confusion matrices, the per-class table) call these functions and never
test a logger's type themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor


def log_image(loggers: Iterable[Logger], tag: str, image: Tensor, step: int) -> None:
    """Log ``image`` (uint8 ``[3, H, W]``) as ``tag`` at ``step`` to every logger that takes
    images; the others (csv) are skipped."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step)
