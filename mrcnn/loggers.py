"""One place that builds a run's loggers and hands them what has no common Lightning API:
pictures, tables, and hyper-parameters with final metrics.

Scalars go through ``LightningModule.log``, which every Lightning logger takes. Images and tables
have no common Lightning API: each logger has its own call, so the callbacks that draw them
(image panels, PR curves, confusion matrices, the per-class table) call these functions and
never test a logger's type themselves. TensorBoard and CSV come with mrcnn; MLflow and W&B
with the ``tracking`` extra.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import Tensor

from mrcnn.errors import ConfigError
from mrcnn.tracking_store import prepare_mlflow_store

# The package each optional logger imports, by class name (Lightning imports it only when the
# logger is built, and then fails with a bare "Requirement 'mlflow>=1.0.0' not met").
TRACKING_PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}
TRACKING_INSTALL = 'pip install "mrcnn[tracking]"'

# Defaults for runs that need no account and no network, set before the package is first
# imported (a user's own variables win). Seen here, tracing connect() during a training run:
# - mlflow 3.18 looks up config.mlflow-telemetry.io (its usage telemetry) unless disabled;
# - wandb 0.31 offline (the config's `offline: true`) connects only to its local core process
#   (Unix sockets), and without WANDB_SILENT prints 35 "wandb:" lines for a 2-step run
#   (banner, sparklines of every metric, summary). With both set: no AF_INET connect at all.
TRACKING_ENVIRONMENT = {
    "mlflow": {"MLFLOW_DISABLE_TELEMETRY": "true"},
    "wandb": {"WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false"},
}


class _WithoutLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning_tips() -> None:
    """Lightning 2.6 logs "Tip: ... try installing litlogger" (its cloud logger) at every
    Trainer start, whatever the loggers: noise in every run's log. Dropped once per process."""
    # rank_zero_info logs through the logger of whichever of these was imported last.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WithoutLitLoggerTip) for f in logger.filters):
            logger.addFilter(_WithoutLitLoggerTip())


def build_loggers(nodes: Mapping[str, Any] | None) -> list[Logger]:
    """The configured loggers (the ``logger`` group: a dict of named ``_target_`` nodes), each
    checked first for the package it needs, so a missing one is one clear message; a local
    MLflow store is created first, once (:mod:`mrcnn.tracking_store`)."""
    loggers = []
    for name, node in (nodes or {}).items():
        target = str(node.get("_target_", ""))
        package = TRACKING_PACKAGES.get(target.rsplit(".", 1)[-1])
        if package is not None:
            for key, value in TRACKING_ENVIRONMENT[package].items():
                os.environ.setdefault(key, value)
            require_package(name, package)
        if package == "mlflow":  # runs that start together must not create the store together
            prepare_mlflow_store(
                node.get("tracking_uri"),
                node.get("experiment_name", "lightning_logs"),
                node.get("artifact_location"),
            )
        loggers.append(instantiate(node))
    return loggers


def require_package(logger: str, package: str) -> None:
    """Raise a :class:`~mrcnn.errors.ConfigError` naming the install command when ``package``
    does not import (not installed, or blocked)."""
    try:
        importlib.import_module(package)
    except ImportError as error:
        raise ConfigError(
            f"logger={logger} needs the {package} package, which does not import here "
            f"({error}). Install the tracking extra: {TRACKING_INSTALL}"
        ) from error


def log_image(loggers: Iterable[Logger], tag: str, image: Tensor, step: int) -> None:
    """Log ``image`` (uint8 ``[3, H, W]``) as ``tag`` at ``step`` to every logger that takes
    images; the others (csv) are skipped.

    MLflow keeps one PNG artifact per tag and step (``images/<tag with / as ~>+step+<step>...``,
    its own naming); W&B logs it in the history under ``tag`` beside ``trainer/global_step``.
    """
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, _hwc(image), key=tag, step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[_hwc(image)], step=step)


def log_table(
    loggers: Iterable[Logger],
    tag: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    step: int,
) -> None:
    """Log a table (``rows`` of values under ``columns``) as ``tag`` at ``step`` to every logger
    that takes tables: TensorBoard as Markdown text, MLflow as a JSON artifact
    ``tables/<tag>/step_<step>.json`` (``{"columns": ..., "data": ...}``, what its own
    ``log_table`` needs pandas for), W&B as a ``wandb.Table``."""
    rows = [list(row) for row in rows]
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, markdown_table(columns, rows), step)
        elif isinstance(logger, MLFlowLogger):
            table = {"columns": list(columns), "data": rows}
            path = f"tables/{tag}/step_{step}.json"
            logger.experiment.log_dict(logger.run_id, table, path)
        elif isinstance(logger, WandbLogger):
            logger.log_table(key=tag, columns=list(columns), data=rows, step=step)


def log_hyperparams(
    loggers: Iterable[Logger], params: Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    """The run's settings (``params``) to every logger, and its final ``metrics`` beside them
    where a logger pairs the two (TensorBoard's HPARAMS tab). The others' ``log_hyperparams``
    has no ``metrics`` argument (CSVLogger's raised TypeError when it was passed); MLflow and
    W&B show each metric's last value anyway."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(params), metrics=dict(metrics))
        else:
            logger.log_hyperparams(dict(params))


@contextmanager
def finishing_runs(loggers: Sequence[Logger]) -> Iterator[None]:
    """End the W&B run when the block ends, failed (exit code 1) on an exception.

    Lightning's ``WandbLogger`` leaves its run open until the process exits, and a later
    ``WandbLogger`` in the same process (the next job of a Hydra multirun, a notebook's next
    ``train``) reuses an open run: every job would log into the first one.
    """
    failed = True
    try:
        yield
        failed = False
    finally:
        for logger in loggers:
            run = getattr(logger, "_experiment", None)  # None: the run never started
            if isinstance(logger, WandbLogger) and run is not None:
                run.finish(exit_code=int(failed))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as a Markdown table (TensorBoard's TEXT tab renders it); floats to 3 decimals,
    None as ``-``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [columns, ["---"] * len(columns), *rows]
    return "\n".join("| " + " | ".join(cell(v) for v in line) + " |" for line in lines)


def _hwc(image: Tensor) -> np.ndarray:
    """A uint8 ``[3, H, W]`` tensor as the ``[H, W, 3]`` array MLflow and W&B read as RGB."""
    return image.detach().cpu().permute(1, 2, 0).numpy()
