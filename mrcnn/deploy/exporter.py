"""A checkpoint as a deployable model file (``mrcnn export``), and its sidecar ``<output>.json``
saying how to use it (:mod:`mrcnn.deploy.sidecar`).

The exported model takes ONE float32 image [3,H,W] in [0,1] (any H, W) and returns ``boxes``
[N,4] (XYXY, the image's pixels), ``labels`` [N] (1..K), ``scores`` [N] and ``masks``
[N,1,H,W] (probabilities at the image's size): torchvision's eval-mode outputs, resizing to
``min_size``/``max_size`` and the thresholds baked in.
:class:`~mrcnn.inference.exported.OnnxBackend` and
:class:`~mrcnn.inference.exported.TorchScriptBackend` run it behind
:class:`~mrcnn.inference.Inference`, so ``predict`` and ``evaluate`` take ``model=model.onnx`` as
they take a checkpoint (:func:`mrcnn.inference.loading.load_inference`).

Formats:

- ``onnx``: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter that
  torchvision's own ONNX tests use for Mask R-CNN, with ``dynamic_axes`` for the image size and
  the detection count, opset :data:`DEFAULT_OPSET` (Mask R-CNN needs 11 or later). The dynamo
  exporter (``dynamo=True``) starts from ``torch.export``, which does not take Mask R-CNN's
  data-dependent shapes: with torch 2.14.1 / torchvision 0.29.1, ``torch.export.export`` of
  this model raises ``GuardOnDataDependentSymNode: Could not guard on data-dependent
  expression Eq(4*u1, 0)`` at ``torchvision/ops/boxes.py:103`` (``if boxes.numel() == 0`` in
  ``_batched_nms_coordinate_trick``: the boxes left after the score threshold).
- ``torchscript``: ``torch.jit.script`` (TorchScript is in maintenance mode in PyTorch, but
  loads with libtorch alone, no Python).

Parity: torchvision computes the resize scale in float64 in eager mode but in float32 when
scripted or traced, so exported models used to resize some image sizes one pixel smaller than
PyTorch (113x106 -> 127x120, not 128x120) and their detections moved. The exported model's input
transform is :class:`mrcnn.deploy.export_transform.EagerSizeTransform`, which computes the size
in float64 on every path: ONNX Runtime and TorchScript give PyTorch's detections and COCO AP on
any image size (``tests/deploy/test_exporter.py``).

Speed: the ONNX graph pastes masks and merges the FPN levels with the exportable equivalents of
:mod:`mrcnn.deploy.export_ops`, not torchvision's export-only loop and scatter.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mrcnn.deploy.export_ops import exportable_nms, exportable_poolers
from mrcnn.deploy.export_transform import with_eager_size_transform
from mrcnn.deploy.sidecar import FORMATS, ExportError, write_sidecar
from mrcnn.errors import ConfigError
from mrcnn.model.roi_align import torchvision_poolers

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "labels", "scores", "masks"]


class SingleImageDetector(nn.Module):
    """A torchvision Mask R-CNN (eval mode) as ``image [3,H,W] -> boxes, labels, scores, masks``:
    plain tensors in and out, what ONNX and TorchScript can carry. Images are resized to the
    size eager PyTorch gives them (:class:`EagerSizeTransform`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # TorchScript compiles torchvision's RoIAlign (ONNX's RoiAlign), not mrcnn's CPU one.
        self.model = with_eager_size_transform(torchvision_poolers(model))

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if torch.jit.is_scripting():
            # A scripted MaskRCNN returns (losses, detections) whatever its mode.
            detections = self.model([image])[1][0]
        else:
            detections = self.model([image])[0]
        return detections["boxes"], detections["labels"], detections["scores"], detections["masks"]


def model_settings(model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input size and the thresholds a torchvision Mask R-CNN runs with (read from the
    model itself, so torchvision's defaults for keys the config left out are included)."""
    transform, rpn, heads = model.transform, model.rpn, model.roi_heads
    size = {"min_size": [int(s) for s in transform.min_size], "max_size": int(transform.max_size)}
    thresholds = {
        "box_score_thresh": float(heads.score_thresh),
        "box_nms_thresh": float(heads.nms_thresh),
        "box_detections_per_img": int(heads.detections_per_img),
        "rpn_score_thresh": float(rpn.score_thresh),
        "rpn_nms_thresh": float(rpn.nms_thresh),
        "rpn_pre_nms_top_n_test": int(rpn._pre_nms_top_n["testing"]),
        "rpn_post_nms_top_n_test": int(rpn._post_nms_top_n["testing"]),
    }
    return size, thresholds


def versions(fmt: str) -> dict[str, str]:
    """The versions of what made an exported file."""
    import torchvision

    import mrcnn

    found = {"mrcnn": mrcnn.__version__, "torch": torch.__version__}
    found["torchvision"] = torchvision.__version__
    if fmt == "onnx":
        for name in ("onnx", "onnxruntime"):
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                found[name] = "not installed"
    return found


@dataclass
class ExportSummary:
    """What an export wrote and what it cost."""

    output: Path
    sidecar: Path
    format: str
    opset: int | None
    seconds: float
    size_bytes: int


def output_path(ckpt_path: str | Path, fmt: str, output: str | Path | None) -> Path:
    """``output``, or the checkpoint's path with the format's suffix (``last.onnx``)."""
    check_format(fmt)
    return Path(output) if output else Path(ckpt_path).with_suffix(FORMATS[fmt])


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not an export format; use one of {', '.join(FORMATS)}.")


def example_image(size: int, path: str | Path | None = None) -> Tensor:
    """The image the ONNX exporter traces with: ``path`` read as training reads images, or a
    mid-grey ``size`` x ``size`` image. The exported graph runs on other sizes and detection
    counts (zero included) too: the sizes are dynamic axes, and torchvision scripts its
    data-dependent steps (NMS per class, mask pasting) while tracing."""
    if path is None:
        return torch.full((3, size, size), 0.5)
    from mrcnn.data.images import read_image
    from mrcnn.inference.core import as_float_image

    array = read_image(Path(path), "export example")
    return as_float_image(torch.from_numpy(array).permute(2, 0, 1).contiguous())


def export_model(
    ckpt_path: str | Path,
    fmt: str = "onnx",
    output: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    example: str | Path | None = None,
) -> ExportSummary:
    """Export the checkpoint's model to ``output`` (see module doc) and write its sidecar."""
    from mrcnn.evaluation.calibration import CHECKPOINT_KEY
    from mrcnn.model.checkpoint import load_module, read_checkpoint

    check_format(fmt)
    if fmt == "onnx" and int(opset) < 11:
        raise ConfigError(f"opset={opset}: Mask R-CNN needs opset 11 or later (default 17).")
    target = output_path(ckpt_path, fmt, output)
    module = load_module(ckpt_path, map_location="cpu")
    detector = SingleImageDetector(module.model.float())
    size, thresholds = model_settings(module.model)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if fmt == "onnx":
        exportable_poolers(detector)  # the FPN levels merged by a gather, not a scatter
        export_onnx(detector, target, example_image(size["min_size"][-1], example), int(opset))
    else:
        torch.jit.save(torch.jit.script(detector), str(target))
    seconds = time.perf_counter() - start
    sidecar = write_sidecar(
        target,
        {
            "format": fmt,
            "exporter": "torch.onnx.export(dynamo=False)" if fmt == "onnx" else "torch.jit.script",
            "opset": int(opset) if fmt == "onnx" else None,
            "checkpoint": str(ckpt_path),
            "categories": module.categories.to_dict(),
            "input": {
                "name": INPUT_NAMES[0],
                "image": "float32 [3,H,W], RGB in [0,1], one image per run",
                **size,
            },
            "outputs": OUTPUT_NAMES,
            "thresholds": thresholds,
            # Per-class score thresholds fitted on the validation split (None: never fitted);
            # predict applies them with evaluation.score_threshold=calibrated.
            "calibration": read_checkpoint(ckpt_path).get(CHECKPOINT_KEY),
            "versions": versions(fmt),
        },
    )
    summary = ExportSummary(
        target, sidecar, fmt, int(opset) if fmt == "onnx" else None, seconds, target.stat().st_size
    )
    log.info(
        "Exported %s to %s (%s, %.1f MB) in %.1f s; sidecar %s.",
        ckpt_path,
        target,
        fmt if fmt != "onnx" else f"onnx opset {opset}",
        summary.size_bytes / 1e6,
        seconds,
        sidecar,
    )
    return summary


def export_onnx(detector: nn.Module, target: Path, example: Tensor, opset: int) -> None:
    """The TorchScript-based ONNX exporter (``dynamo=False``; see the module doc for why)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as error:
        raise ExportError(
            "format=onnx needs the onnx package: pip install 'mrcnn[deploy]'."
        ) from error
    with torch.no_grad(), exportable_nms():
        torch.onnx.export(
            detector,
            (example,),
            str(target),
            dynamo=False,
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "detections"},
                "labels": {0: "detections"},
                "scores": {0: "detections"},
                "masks": {0: "detections", 2: "height", 3: "width"},
            },
        )
