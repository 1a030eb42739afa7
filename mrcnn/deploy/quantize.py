"""int8 convolutions for ONNX Runtime (``mrcnn export quantize=int8``), and the AP they cost.

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``) in its QDQ form,
on ``Conv`` only: each convolution's weights become int8 (per output channel) and its input is
quantized to uint8 with a range read from calibration images (MinMax). Everything else (RoIAlign,
NMS, the box and mask heads' linear layers and transposed convolution, the mask pasting) stays
float32, so the model keeps its inputs and outputs. On x86 CPUs without VNNI, weights use 7 bits
(``reduce_range``), as ONNX Runtime advises there, so that 8-bit products cannot saturate.

int8 changes what the model computes: the AP it costs is measured on the validation split by
:func:`ap_of` for the float32 and the int8 model alike, printed and kept in the sidecar. It is
off by default. On the default synthetic model it moved AP by less than 0.005 and ran 1.22x as
fast as the float32 ONNX model, on figure 5's ResNet-50 FPN model 1.63x (docs/benchmarks.md,
figure 8).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import Dataset

from mrcnn.data.categories import Categories
from mrcnn.errors import ConfigError
from mrcnn.precision import this_cpu_flags, x86_cpu_flags

if TYPE_CHECKING:
    from mrcnn.data.datamodule import DetectionDataModule

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8",)
# CPU flags of an 8-bit dot product that accumulates without saturating (VNNI, AMX).
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
# The COCO numbers the export prints for both models.
AP_KEYS = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50")


def check_quantize(quantize: str | None, fmt: str, calibration_images: int = 32) -> None:
    """Fails, before anything is exported, on a quantization mrcnn does not build, one for a
    format it does not fit, or one without calibration images."""
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"quantize={quantize}: use int8, or null for float32 only.")
    if fmt != "onnx":
        raise ConfigError(
            f"quantize={quantize} needs format=onnx (ONNX Runtime's int8 convolutions), not "
            f"format={fmt}."
        )
    if int(calibration_images) < 1:
        raise ConfigError(
            f"calibration_images={calibration_images}: quantize=int8 reads the convolutions' "
            "input ranges from at least one training image (32 is plenty)."
        )


def int8_path(model_path: str | Path) -> Path:
    """Where the int8 model of ``model.onnx`` goes: ``model.int8.onnx``, beside it."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def needs_reduced_range(cpuinfo: str | None = None) -> bool:
    """Whether this CPU (``cpuinfo``: a ``/proc/cpuinfo`` text, default this machine's) is an x86
    one whose 8-bit products can saturate, without VNNI: ONNX Runtime advises 7-bit weights
    there (``reduce_range``), and full 8 bits on ARM and on VNNI CPUs."""
    flags = this_cpu_flags() if cpuinfo is None else x86_cpu_flags(cpuinfo)
    return flags is not None and not flags & _VNNI_FLAGS


def quantize_convolutions(
    model_path: str | Path, output: str | Path, images: Sequence[Tensor]
) -> dict[str, Any]:
    """Write ``output``: the ONNX model with int8 convolutions, their input ranges read from
    ``images`` (float [3,H,W] in [0,1], the data the model will see). Returns the settings, for
    the sidecar."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._images: Iterator[Tensor] = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            image = next(self._images, None)
            return None if image is None else {"image": image.float().numpy()}

    reduce_range = needs_reduced_range()
    with tempfile.TemporaryDirectory() as tmp, _root_log_level(logging.WARNING):
        # ONNX Runtime's advice: fold constants and infer shapes before quantizing.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output),
            Images(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "ops": ["Conv"],
        "format": "QDQ",
        "weights": "int8, per output channel" + (", 7 bits (no VNNI)" if reduce_range else ""),
        "activations": "uint8, MinMax ranges",
        "calibration_images": len(images),
    }


@contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """ONNX Runtime's quantizer logs a line per copied bias on the root logger: not for users."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(level, previous))
    try:
        yield
    finally:
        root.setLevel(previous)


@dataclass
class Scored:
    """COCO numbers of one model on the validation split, and the time the model took on it
    (reading the images and scoring left out: they are the same for both models)."""

    metrics: dict[str, float]
    seconds: float


class _TimedBackend:
    """A back end that adds up the time its calls take, so that a pass's reading, pasting and
    scoring stay out of the speed the int8 table compares."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seconds = 0.0

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        start = time.perf_counter()
        try:
            return self.backend(images)
        finally:
            self.seconds += time.perf_counter() - start


def ap_of(
    model_path: str | Path, val_set: Dataset, categories: Categories, ground_truth: dict
) -> Scored:
    """COCO AP of an exported model on ``val_set`` (its ``ground_truth``), scored as
    ``mrcnn evaluate`` scores it: every detection, mask threshold 0.5, 100 per image."""
    from mrcnn.evaluation.cocoeval import coco_report
    from mrcnn.evaluation.predictions import predict_results
    from mrcnn.inference.loading import load_inference

    inference, _ = load_inference(model_path, "cpu", 32, 1, score_threshold=0.0)
    inference([val_set[0][0]])  # the session's first run sets itself up: not timed
    timed = inference.backend = _TimedBackend(inference.backend)
    results, image_ids = predict_results(inference, val_set, categories)
    report = coco_report(ground_truth, results, image_ids=image_ids)
    return Scored({key: report.metrics[key] for key in AP_KEYS}, timed.seconds)


def format_cost(float32: Scored, int8: Scored, images: int) -> str:
    """The table ``mrcnn export quantize=int8`` prints: both models' AP and time per image."""
    lines = [f"{'':10s}{'float32':>9s}{'int8':>9s}{'change':>9s}"]
    for key in AP_KEYS:
        a, b = float32.metrics[key], int8.metrics[key]
        lines.append(f"{key:10s}{a:9.3f}{b:9.3f}{b - a:+9.3f}")
    lines.append(
        f"{'s/image':10s}{float32.seconds / images:9.4f}{int8.seconds / images:9.4f}"
        f"{float32.seconds / max(int8.seconds, 1e-9):8.2f}x"
    )
    return "\n".join(lines)


def export_int8(
    model_path: str | Path, datamodule: DetectionDataModule, calibration_images: int
) -> Path:
    """Write ``model.int8.onnx`` and its sidecar beside the float32 ``model_path``: the
    convolutions calibrated on the first ``calibration_images`` training images of
    ``datamodule`` (set up), both models scored on its validation split; print the table."""
    from mrcnn.deploy.sidecar import read_sidecar, write_sidecar
    from mrcnn.evaluation.ground_truth import ground_truth_for
    from mrcnn.model.checkpoint import ensure_classes_match

    info = read_sidecar(model_path)
    categories = datamodule.categories
    ensure_classes_match(Categories.from_dict(info["categories"]), categories)
    train_set, val_set = datamodule.train_set, datamodule.val_set
    count = min(int(calibration_images), len(train_set))
    if count < 1:
        raise ConfigError("quantize=int8 calibrates on training images: the data has none.")
    target = int8_path(model_path)
    start = time.perf_counter()
    settings = quantize_convolutions(model_path, target, [train_set[i][0] for i in range(count)])
    log.info(
        "Quantized the convolutions to int8 in %.1f s: %s.", time.perf_counter() - start, target
    )
    write_sidecar(target, {**info, "quantization": settings})  # load_inference reads it
    ground_truth = ground_truth_for(val_set, categories)
    float32 = ap_of(model_path, val_set, categories, ground_truth)
    int8 = ap_of(target, val_set, categories, ground_truth)
    settings["ap"] = {
        "validation_images": len(val_set),
        "float32": float32.metrics,
        "int8": int8.metrics,
        "seconds_per_image": {
            "float32": float32.seconds / len(val_set),
            "int8": int8.seconds / len(val_set),
        },
    }
    write_sidecar(target, {**info, "quantization": settings})
    print(
        f"int8 model: {target} ({target.stat().st_size / 1e6:.1f} MB; float32 "
        f"{Path(model_path).stat().st_size / 1e6:.1f} MB). COCO numbers on the {len(val_set)} "
        "validation images, as mrcnn evaluate scores them, and the model's time per image "
        "here:\n"
        f"{format_cost(float32, int8, len(val_set))}"
    )
    return target
