"""What every command shares: building data, model and trainer from a config, finding
checkpoints, and the one way a command fails.

The commands (``mrcnn.train``, ``mrcnn.evaluate``, ``mrcnn.predict``, ``mrcnn.data.check``) are
thin: they compose a config and call the package through this module; the benchmarks and
notebooks build runs with the same functions.

One way to fail (:func:`command`): a user error (:mod:`mrcnn.errors`) anywhere in a command, even
wrapped by Hydra or Lightning, prints one message on stderr (``mrcnn.train: error: ...``), goes
to the log file, and exits with status 1 (:data:`~mrcnn.errors.EXIT_USER_ERROR`), without a
traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback instead, as it does for Hydra's own errors.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, OmegaConf

from mrcnn.callbacks import (
    CocoMetrics,
    EmptyEpochCheck,
    ImagePanels,
    RunState,
    ValidatedStep,
    ValidationRandomStateGuard,
    saved_overrides,
    stdout_is_terminal,
)
from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import DetectionDataModule
from mrcnn.errors import EXIT_USER_ERROR, ConfigError, find_user_error, user_message
from mrcnn.evaluation.coco import IOU_TYPES, ground_truth_for
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.inference import Inference, OnnxBackend, TorchBackend, TorchScriptBackend
from mrcnn.loggers import build_loggers
from mrcnn.model.checkpoint import load_module
from mrcnn.model.module import MaskRCNNModule
from mrcnn.precision import resolve_device, resolve_precision

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def command(
    name: str,
) -> Callable[[Callable[[DictConfig], Result]], Callable[[DictConfig], Result]]:
    """Wraps the Hydra task function of command ``name`` (``mrcnn.train``, ...) so that a user
    error ends it the documented way: ``<name>: error: <message>`` on stderr and in the log file,
    exit status 1, no traceback (see module doc)."""

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
) -> L.Trainer:
    """The Lightning Trainer with the configured callbacks and loggers, and the callbacks a run
    is not correct without: the resume state (with ``overrides``, the command line), the
    validation random-state guard, the empty-epoch check, and (given the ``datamodule``)
    validation metrics and image panels as ``evaluation`` says."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += [RunState(overrides), ValidationRandomStateGuard(), EmptyEpochCheck()]
    callbacks += [ValidatedStep()]
    if datamodule is not None and cfg.get("evaluation") and cfg.trainer.limit_val_batches:
        callbacks += validation_callbacks(cfg.evaluation, datamodule)
        check_monitored_metrics(callbacks, cfg.evaluation)
    loggers = build_loggers(cfg.get("logger"))
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    # A progress bar written to a file or a pipe is a wall of carriage returns: there the
    # ProgressLog callback's lines take its place.
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and stdout_is_terminal()
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        enable_progress_bar=progress_bar,
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
        datamodule.setup("fit")
        categories = datamodule.categories
        evaluator = CocoEvaluator(
            ground_truth_for(datamodule.val_set, categories),
            categories,
            mask_threshold=evaluation.mask_threshold,
            backend=evaluation.backend,
            max_detections=evaluation.get("max_detections") or 100,
            score_threshold=evaluation.get("confusion_score_threshold", 0.5),
        )
        callbacks.append(CocoMetrics(evaluator, error_plots=error_plot_types(evaluation)))
    if evaluation.image_panels:
        callbacks.append(
            ImagePanels(
                evaluation.image_panels,
                score_threshold=evaluation.panel_score_threshold,
                mask_threshold=evaluation.mask_threshold,
            )
        )
    return callbacks


def validated_step(trainer: L.Trainer) -> int:
    """The step of the trainer's last validation (-1: none)."""
    return next(c.step for c in trainer.callbacks if isinstance(c, ValidatedStep))


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume: a file, or ``last`` for ``<output_dir>/checkpoints/last.ckpt``."""
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: there is no {path}. Name the run to resume with "
                "hydra.run.dir=<its folder> (the one holding checkpoints/last.ckpt), or give "
                "ckpt_path=/path/to/file.ckpt."
            )
        return path
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint file. Runs write theirs to "
            "<run dir>/checkpoints/ (last.ckpt, best-*.ckpt)."
        )
    return path


def resume_overrides(ckpt_path: Path, overrides: list[str]) -> list[str]:
    """The checkpoint's run overrides, then this command's (which win for the same key)."""
    parser = OverridesParser.create()
    given = {o.key_or_group for o in parser.parse_overrides(overrides)}
    earlier = saved_overrides(ckpt_path)
    kept = [
        o
        for o, p in zip(earlier, parser.parse_overrides(earlier), strict=True)
        if p.key_or_group not in given
    ]
    return [*kept, *overrides]


def is_launched_rank_zero() -> bool:
    """False in a process a DDP launcher started for a rank above zero (from the variables
    Lightning's launcher, torchrun and SLURM set), known before the Trainer exists."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name) or 0) == 0 for name in names)


def lightning_starts_the_ranks() -> bool:
    """Whether Lightning would start the other DDP processes itself, by running this command
    again (a plain machine). Under SLURM (srun, e.g. Hydra's submitit launcher) or torchrun the
    cluster starts every rank, and a Hydra multirun job is one rank among them."""
    return not (SLURMEnvironment.detect() or TorchElasticEnvironment.detect())


def checkpoint_inference(
    ckpt_path: str | Path,
    device: str,
    precision: str | int,
    batch_size: int,
    score_threshold: float = 0.0,
    mask_threshold: float = 0.5,
    exported: bool | None = None,
) -> tuple[Inference, Categories]:
    """A checkpoint's model on ``device`` behind :class:`~mrcnn.inference.Inference`, and its
    classes: what ``evaluate`` and ``predict`` run. Bad settings fail before the model loads.

    A model from ``python -m mrcnn.export`` (``.onnx``, ``.pt``) runs the same way
    (:func:`exported_backend`), its classes read from its sidecar ``<model>.json``. ``exported``:
    whether the file is such a model (None: by its suffix, ``.onnx`` or ``.pt``)."""
    chosen_device = resolve_device(str(device))
    chosen_precision = resolve_precision(precision, chosen_device.type)
    if exported is None:
        exported = Path(ckpt_path).suffix.lower() in EXPORTED_SUFFIXES
    if exported:
        backend, categories = exported_backend(ckpt_path, chosen_device, chosen_precision)
    else:
        module = load_module(ckpt_path, map_location=chosen_device)
        backend = TorchBackend(module.model, chosen_device, chosen_precision)
        categories = module.categories
    inference = Inference(
        backend,
        batch_size=int(batch_size),
        score_threshold=float(score_threshold),
        mask_threshold=float(mask_threshold),
    )
    return inference, categories


# What python -m mrcnn.export writes: ONNX (ONNX Runtime) and TorchScript.
EXPORTED_SUFFIXES = (".onnx", ".pt")


def exported_model_alias(argv: Sequence[str]) -> list[str]:
    """The command line of ``predict`` and ``evaluate`` with ``model=FILE`` read as
    ``model_path=FILE``: ``model=model.onnx`` is what users type, but Hydra reads ``model=`` as
    a pick from the ``conf/model`` group, which these commands do not compose, and fails with
    "Could not find 'model/model.onnx'"."""
    return [
        "model_path=" + arg.removeprefix("model=") if arg.startswith("model=") else arg
        for arg in argv
    ]


def exported_backend(
    model_path: str | Path, device: torch.device, precision: str
) -> tuple[OnnxBackend | TorchScriptBackend, Categories]:
    """A model from ``python -m mrcnn.export`` as a back end (``.onnx``: ONNX Runtime on the
    CPU; ``.pt``: TorchScript on ``device``) and its classes from its sidecar."""
    from mrcnn.export import read_sidecar

    info = read_sidecar(model_path)
    if precision != "32-true":
        raise ConfigError(
            f"precision={precision}: an exported model ({model_path}) runs in float32 as it was "
            "exported; drop precision= (or give ckpt_path= to run the checkpoint in it)."
        )
    if info["format"] != "onnx":
        return TorchScriptBackend(model_path, device), Categories.from_dict(info["categories"])
    if device.type != "cpu":
        log.info("%s runs in ONNX Runtime on the CPU (device=%s unused).", model_path, device)
    return OnnxBackend(model_path), Categories.from_dict(info["categories"])


def configured_inference(
    cfg: DictConfig, score_threshold: float, mask_threshold: float
) -> tuple[Inference, Categories, str]:
    """The model a command's ``ckpt_path=`` (a checkpoint) or ``model_path=`` (a model from
    ``mrcnn.export``) names, exactly one of them, with its classes and the path it came from;
    the file's suffix decides how it runs (:func:`checkpoint_inference`). On the command line
    ``model=FILE`` says ``model_path=FILE`` (:func:`exported_model_alias`)."""
    ckpt_path, model = cfg.get("ckpt_path"), cfg.get("model_path")
    if (ckpt_path is None) == (model is None):
        raise ConfigError(
            "Give exactly one of ckpt_path=FILE.ckpt (a checkpoint from mrcnn.train) or "
            "model=FILE.onnx|FILE.pt (a model from mrcnn.export; the key model_path)"
            + (", not both." if ckpt_path is not None else ".")
        )
    source = str(ckpt_path if ckpt_path is not None else model)
    settings = (cfg.device, cfg.precision, cfg.batch_size, score_threshold, mask_threshold)
    return (*checkpoint_inference(source, *settings, exported=model is not None), source)
