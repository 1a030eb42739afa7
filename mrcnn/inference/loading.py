"""The model a command runs, from its file: a checkpoint from ``mrcnn train`` or a model from
``mrcnn export``, given the same way to ``evaluate`` and ``predict`` (``model=FILE``, the config
key ``model_path``). The file's suffix decides how it runs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from mrcnn.data.categories import Categories
from mrcnn.deploy.sidecar import read_sidecar, write_sidecar
from mrcnn.errors import ConfigError
from mrcnn.evaluation.calibration import (
    CALIBRATED,
    CHECKPOINT_KEY,
    Calibration,
    check_threshold,
    resolve_score_threshold,
    store_in_checkpoint,
)
from mrcnn.inference.auto import AutoBackend
from mrcnn.inference.core import Backend, Inference, TorchBackend, lowest_threshold
from mrcnn.inference.exported import (
    OnnxBackend,
    OpenVinoBackend,
    TorchScriptBackend,
    check_images_in_parallel,
)
from mrcnn.inference.tta import TTABackend, parse_views
from mrcnn.model.checkpoint import load_module, read_checkpoint
from mrcnn.precision import resolve_device, resolve_precision

log = logging.getLogger(__name__)

# What `mrcnn export` writes: ONNX (ONNX Runtime or OpenVINO) and TorchScript.
EXPORTED_SUFFIXES = (".onnx", ".pt")
# `runtime=`: what runs an exported ONNX model (null: ONNX Runtime); auto: the fastest of them
# whose detections are ONNX Runtime's, measured on the first images (mrcnn.inference.auto).
# (`evaluation.backend` is another key: the COCO evaluator.)
ONNX_RUNTIMES = ("onnxruntime", "openvino")
RUNTIMES = (*ONNX_RUNTIMES, "auto")


def load_inference(
    model_path: str | Path,
    device: str,
    precision: str | int,
    batch_size: int,
    score_threshold: float | str = 0.0,
    mask_threshold: float = 0.5,
    runtime: str | None = None,
    images_in_parallel: int | None = None,
) -> tuple[Inference, Categories]:
    """The model in ``model_path`` on ``device`` behind :class:`~mrcnn.inference.Inference`,
    and its classes. Bad settings fail before the model loads.

    A checkpoint (any suffix but ``.onnx`` and ``.pt``) rebuilds its model alone; a model from
    ``mrcnn export`` runs in ONNX Runtime (``.onnx``) or TorchScript (``.pt``), its classes read
    from its sidecar ``<model>.json``. ``score_threshold="calibrated"``: the per-class
    thresholds stored with the model (:mod:`mrcnn.evaluation.calibration`). ``runtime``: what
    runs an ONNX model (:data:`RUNTIMES`; None: ONNX Runtime), ``images_in_parallel`` how many
    images it runs at once (None: :data:`~mrcnn.inference.exported.IMAGES_IN_PARALLEL`)."""
    if score_threshold != CALIBRATED:
        check_threshold(score_threshold)
    check_runtime(runtime, model_path)
    check_images_in_parallel(images_in_parallel)
    chosen_device = resolve_device(str(device))
    chosen_precision = resolve_precision(precision, chosen_device.type)
    suffix = Path(model_path).suffix.lower()
    if runtime == "auto" and suffix != ".onnx":
        log.info(
            "runtime=auto: %s runs in %s, its one runtime (an ONNX export runs in ONNX Runtime "
            "or OpenVINO).",
            model_path,
            "TorchScript" if suffix == ".pt" else "PyTorch",
        )
    if suffix in EXPORTED_SUFFIXES:
        runner, categories = exported_backend(
            model_path, chosen_device, chosen_precision, runtime, images_in_parallel
        )
    else:
        module = load_module(model_path, map_location=chosen_device)
        runner = TorchBackend(module.model, chosen_device, chosen_precision)
        categories = module.categories
    # Read again only when asked: a checkpoint's file may be large.
    stored = stored_calibration(model_path) if score_threshold == CALIBRATED else None
    threshold = resolve_score_threshold(score_threshold, stored, categories, str(model_path))
    if isinstance(runner, AutoBackend):  # compare the detections a user keeps
        runner.min_score = lowest_threshold(threshold)
    inference = Inference(
        runner,
        batch_size=int(batch_size),
        score_threshold=threshold,
        mask_threshold=float(mask_threshold),
    )
    return inference, categories


def stored_calibration(model_path: str | Path) -> dict | None:
    """The calibrated thresholds stored with a model (checkpoint key or sidecar), or None."""
    if Path(model_path).suffix.lower() in EXPORTED_SUFFIXES:
        return read_sidecar(model_path).get("calibration")
    return read_checkpoint(model_path).get(CHECKPOINT_KEY)


def store_calibration(model_path: str | Path, calibration: Calibration) -> Path:
    """Store fitted thresholds with a model: in a checkpoint (atomically) or, for a model from
    ``mrcnn export``, in its sidecar. Returns the file written."""
    if Path(model_path).suffix.lower() in EXPORTED_SUFFIXES:
        info = read_sidecar(model_path)
        info.pop("sidecar_version", None)
        info["calibration"] = calibration.to_dict()
        return write_sidecar(Path(model_path), info)
    store_in_checkpoint(model_path, calibration)
    return Path(model_path)


def check_runtime(runtime: str | None, model_path: str | Path) -> None:
    """``runtime=`` names a runtime, and one that can run ``model_path``."""
    if runtime is None:
        return
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime} is none of {', '.join(RUNTIMES)} (or null).")
    suffix = Path(model_path).suffix.lower()
    if runtime in ONNX_RUNTIMES and suffix != ".onnx":
        kind = "TorchScript" if suffix == ".pt" else "PyTorch"
        raise ConfigError(
            f"runtime={runtime} runs ONNX models; {model_path} runs in {kind}. Export it "
            f"(mrcnn export model=FILE.ckpt format=onnx output=model.onnx) and give "
            "model=model.onnx, or drop runtime=."
        )


def exported_backend(
    model_path: str | Path,
    device: torch.device,
    precision: str,
    runtime: str | None = None,
    images_in_parallel: int | None = None,
) -> tuple[Backend, Categories]:
    """A model from ``mrcnn export`` as a back end (``.onnx``: ONNX Runtime, OpenVINO or the
    faster of the two as ``runtime`` says, on the CPU, ``images_in_parallel`` images at once;
    ``.pt``: TorchScript on ``device``) and its classes from its sidecar."""
    info = read_sidecar(model_path)
    if precision != "32-true":
        raise ConfigError(
            f"precision={precision}: an exported model ({model_path}) runs in float32 as it was "
            "exported; drop precision= (or give the checkpoint, model=FILE.ckpt, to run it in "
            "that precision)."
        )
    categories = Categories.from_dict(info["categories"])
    if info["format"] != "onnx":
        return TorchScriptBackend(model_path, device), categories
    if device.type != "cpu":
        log.info("%s runs on the CPU (device=%s unused).", model_path, device)
    builders = {
        "onnxruntime": lambda: OnnxBackend(model_path, images_in_parallel=images_in_parallel),
        "openvino": lambda: openvino(model_path, images_in_parallel),
    }
    if runtime == "auto":
        return AutoBackend(builders), categories
    return builders[runtime or "onnxruntime"](), categories


def openvino(model_path: str | Path, images_in_parallel: int | None = None) -> OpenVinoBackend:
    """:class:`OpenVinoBackend`, or the install command when OpenVINO is missing."""
    try:
        return OpenVinoBackend(model_path, images_in_parallel=images_in_parallel)
    except ImportError:
        raise ConfigError(
            "runtime=openvino needs the openvino package: pip install 'mrcnn[deploy]'."
        ) from None


def configured_inference(
    cfg: DictConfig, score_threshold: float | str, mask_threshold: float
) -> tuple[Inference, Categories, str]:
    """The model of a command's ``model_path`` (``model=FILE`` on the command line), with its
    classes and the path it came from (:func:`load_inference`)."""
    source = cfg.get("model_path")
    if source is None:
        raise ConfigError(
            "Give the model: model=FILE.ckpt (a checkpoint from mrcnn train) or "
            "model=FILE.onnx|FILE.pt (a model from mrcnn export); the config key is model_path."
        )
    settings = (cfg.device, cfg.precision, cfg.batch_size, score_threshold, mask_threshold)
    views = parse_views(cfg.get("tta"))  # a bad view fails before the model loads
    inference, categories = load_inference(
        str(source),
        *settings,
        runtime=cfg.get("runtime"),
        images_in_parallel=cfg.get("images_in_parallel"),
    )
    if views:
        inference.backend = TTABackend(
            inference.backend,
            views,
            str(cfg.get("tta_merge", "mean")),
            float(cfg.get("tta_iou", 0.55)),
        )
        log.info("Test-time augmentation: views %s, merged by %s.", views, cfg.get("tta_merge"))
    if score_threshold == CALIBRATED:
        fitted_with = (stored_calibration(str(source)) or {}).get("tta")
        if fitted_with != ([str(v) for v in views] or None):
            log.warning(
                "The calibrated thresholds of %s were fitted with tta=%s, this run uses tta=%s: "
                "scores differ between the two (refit with mrcnn evaluate and the same tta).",
                source,
                fitted_with or "false",
                [str(v) for v in views] or "false",
            )
    return inference, categories, str(source)


def keep_detections(inference: Inference, count: int, source: str | Path) -> None:
    """Let a checkpoint's model keep at least ``count`` detections per image (what AP counts);
    an exported model's limit is fixed in its graph: a warning says when it is lower."""
    roi_heads = getattr(getattr(inference.backend, "model", None), "roi_heads", None)
    if roi_heads is not None and hasattr(roi_heads, "detections_per_img"):
        if roi_heads.detections_per_img < count:
            log.info("The model keeps %d detections per image (max_detections).", count)
            roi_heads.detections_per_img = count
        return
    kept = int(read_sidecar(source)["thresholds"]["box_detections_per_img"])
    if kept < count:
        log.warning(
            "evaluation.max_detections=%d, but %s keeps at most %d detections per image (fixed "
            "when it was exported, from the checkpoint's model.detector.box_detections_per_img): "
            "AP counts at most %d. Evaluate the checkpoint (model=FILE.ckpt) to count more.",
            count,
            source,
            kept,
            kept,
        )
