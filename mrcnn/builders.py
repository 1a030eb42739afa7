"""Data, model and trainer from a config: what ``train`` and ``evaluate`` run, and what the
benchmarks and notebooks build runs with."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from mrcnn.callbacks import (
    CocoMetrics,
    EmptyEpochCheck,
    ImagePanels,
    RunState,
    StopOnSignal,
    ValidatedStep,
    ValidationRandomStateGuard,
    stdout_is_terminal,
)
from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import DetectionDataModule
from mrcnn.errors import ConfigError
from mrcnn.evaluation.calibration import CALIBRATED, check_threshold, fitting
from mrcnn.evaluation.cocoeval import IOU_TYPES
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.loggers import build_loggers, quiet_lightning_tips
from mrcnn.model.module import MaskRCNNModule
from mrcnn.precision import resolve_precision, training_step_speedup

log = logging.getLogger(__name__)


def plain(node: Any) -> Any:
    """A resolved config node as plain dicts and lists (what checkpoints can store safely)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_datamodule(cfg: DictConfig) -> DetectionDataModule:
    """The configured data (``data``), categories read: a data problem raises here, named."""
    datamodule = instantiate(cfg.data)
    categories = datamodule.categories
    log.info(
        "Data: %d categories %s -> num_classes=%d.",
        len(categories.names),
        list(categories.names),
        categories.num_classes,
    )
    return datamodule


def build_module(cfg: DictConfig, categories: Categories) -> MaskRCNNModule:
    """The LightningModule from the ``model`` node (its ``_target_``); num_classes comes from
    the data's categories, and the model keeps at least the detections per image that
    validation counts (``evaluation.max_detections``)."""
    node = plain(cfg.model)
    kept = node["detector"].get("box_detections_per_img", 100)
    wanted = (cfg.get("evaluation") or {}).get("max_detections")
    if wanted and wanted > kept:
        log.info(
            "model.detector.box_detections_per_img=%d raised to evaluation.max_detections=%d.",
            kept,
            wanted,
        )
        node["detector"]["box_detections_per_img"] = wanted
    return instantiate(node, categories=categories.to_dict())


def build_trainer(
    cfg: DictConfig,
    datamodule: DetectionDataModule | None = None,
    overrides: Sequence[str] = (),
    module: MaskRCNNModule | None = None,
) -> L.Trainer:
    """The Lightning Trainer with the configured callbacks and loggers, and the callbacks a run
    is not correct without: the resume state (with ``overrides``, the command line), the stop on
    a signal, the validation random-state guard, the empty-epoch check, and (given the
    ``datamodule``) validation metrics and image panels as ``evaluation`` says. Given the
    ``module``, ``trainer.precision=auto`` times a step of its own model to decide on bf16."""
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += [RunState(overrides), StopOnSignal()]
    callbacks += [ValidationRandomStateGuard(), EmptyEpochCheck()]
    callbacks += [ValidatedStep()]
    if datamodule is not None and cfg.get("evaluation") and cfg.trainer.limit_val_batches:
        callbacks += validation_callbacks(cfg.evaluation, datamodule)
        check_monitored_metrics(callbacks, cfg.evaluation)
    loggers = build_loggers(cfg.get("logger"))
    quiet_lightning_tips()
    probe = None
    if module is not None and cfg.get("data") is not None:
        size, batch = int(cfg.data.image_size), int(cfg.data.batch_size)
        probe = functools.partial(training_step_speedup, module.model, size, batch)
    precision = resolve_precision(
        cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"), bf16_speedup=probe
    )
    # A progress bar written to a file or a pipe is a wall of carriage returns: there the
    # ProgressLog callback's lines take its place.
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and stdout_is_terminal()
    try:
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            precision=precision,
            enable_progress_bar=progress_bar,
        )
    except Exception as error:  # Hydra's instantiate wraps what the Trainer raised
        cause = error if error.__cause__ is None else error.__cause__
        if not isinstance(cause, MisconfigurationException):
            raise
        raise ConfigError(
            f"The trainer settings do not fit this machine: {cause} Check trainer.accelerator, "
            "trainer.devices, trainer.strategy and trainer.num_nodes (python -m mrcnn.train "
            "--cfg job shows them)."
        ) from None
    check_launched_processes(trainer)
    return trainer


def check_launched_processes(trainer: L.Trainer) -> None:
    """Where torchrun or srun started the processes, ``trainer.devices`` x
    ``trainer.num_nodes`` must be what they started. Lightning checks it too, but only inside
    ``fit``, with a ``ValueError`` and a traceback on every process."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None or not environment.creates_processes_externally:
        return
    try:
        environment.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    except ValueError as error:
        raise ConfigError(
            f"The trainer settings do not fit the processes {type(environment).__name__} "
            f"describes: {error} Set trainer.devices to the processes per node (torchrun "
            "--nproc-per-node, srun --ntasks-per-node) and trainer.num_nodes to the nodes "
            "(torchrun --nnodes, srun --nodes)."
        ) from None


def check_accelerator(accelerator: str) -> None:
    """``trainer.accelerator=gpu`` (or ``cuda``) where no CUDA GPU is visible: one message with
    the way out, not Lightning's ``MisconfigurationException`` deep in a traceback."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but torch sees no CUDA GPU here (no GPU, no "
            f"driver, or a CPU-only torch build: torch {torch.__version__}). Train on the CPU "
            "with trainer.accelerator=cpu (or auto, which takes a GPU when there is one)."
        )


def check_monitored_metrics(callbacks: Sequence[Any], evaluation: DictConfig) -> None:
    """A callback that watches a COCO metric (``val/segm_AP``, the best checkpoint's default)
    needs ``evaluation.coco_metrics``; without it Lightning stops after the first validation."""
    if evaluation.coco_metrics:
        return
    for callback in callbacks:
        monitor = str(getattr(callback, "monitor", None) or "")
        if monitor.startswith("val/") and not monitor.startswith("val/loss"):
            raise ConfigError(
                f"evaluation.coco_metrics=false logs no {monitor}, which "
                f"{type(callback).__name__} watches (monitor={monitor}). Watch a validation "
                "loss instead: optimized_metric=val/loss callbacks.model_checkpoint.mode=min "
                "(and callbacks.early_stopping.mode=min with the early_stopping preset), or "
                "keep evaluation.coco_metrics=true."
            )


def error_plot_types(evaluation: DictConfig) -> list[str]:
    """``evaluation.error_plots``: the IoU types whose PR curves and confusion matrix are logged
    as images at each validation ([] or null: none)."""
    value = evaluation.get("error_plots") or []
    types = [value] if isinstance(value, str) else list(value)
    unknown = [t for t in types if t not in IOU_TYPES]
    if unknown:
        raise ConfigError(
            f"evaluation.error_plots=[{','.join(map(str, types))}]: "
            f"{', '.join(map(str, unknown))} is not an IoU type; give a list of "
            f"{', '.join(IOU_TYPES)} (e.g. evaluation.error_plots=[segm]), or [] for none."
        )
    return types


def validation_callbacks(evaluation: DictConfig, datamodule: DetectionDataModule) -> list:
    """COCO metrics (with the validation ground truth, built once) and image panels."""
    callbacks: list = []
    if evaluation.coco_metrics:
        tide, calibration = fitting(evaluation)
        datamodule.setup("fit")
        categories = datamodule.categories
        evaluator = CocoEvaluator(
            ground_truth_for(datamodule.val_set, categories),
            categories,
            mask_threshold=evaluation.mask_threshold,
            backend=evaluation.backend,
            max_detections=evaluation.get("max_detections") or 100,
            score_threshold=evaluation.score_threshold,
            boundary_dilation=evaluation.get("boundary_dilation"),
            calibration=calibration,
            tide=tide,
        )
        metrics = CocoMetrics(evaluator, error_plots=error_plot_types(evaluation))
        callbacks.append(metrics)
    elif evaluation.score_threshold == CALIBRATED:
        raise ConfigError(
            "evaluation.score_threshold=calibrated needs evaluation.coco_metrics=true: the "
            "thresholds are fitted at each validation from its COCO matching."
        )
    if evaluation.image_panels:
        score_threshold = evaluation.score_threshold
        if score_threshold == CALIBRATED:
            # The panels are drawn while validating: the last validation's thresholds.
            score_threshold = metrics.label_thresholds
        else:
            check_threshold(score_threshold)
        callbacks.append(
            ImagePanels(
                evaluation.image_panels,
                score_threshold=score_threshold,
                mask_threshold=evaluation.mask_threshold,
            )
        )
    return callbacks
