"""Back ends for the models ``mrcnn export`` writes: ONNX Runtime and OpenVINO (``.onnx``) and
TorchScript (``.pt``).

Each takes one float32 [3,H,W] image per run (what the exported graph takes) and returns
torchvision-style detections, so :class:`~mrcnn.inference.core.Inference` runs them as it runs a
checkpoint's model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mrcnn.inference.core import Detections

EXPORTED_OUTPUTS = ("boxes", "labels", "scores", "masks")


class OnnxBackend:
    """A model from ``python -m mrcnn.export format=onnx`` in ONNX Runtime, one session run per
    image (the model takes one float32 [3,H,W] image).

    ``threads``: ONNX Runtime's intra-op threads (None: torch's ``get_num_threads()``, so both
    run on the same cores). ``providers``: ONNX Runtime execution providers (None: the CPU).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        return [self.run(image) for image in images]

    def run(self, image: Tensor) -> Detections:
        feed = {self.input_name: image.detach().cpu().float().contiguous().numpy()}
        outputs = self.session.run(list(EXPORTED_OUTPUTS), feed)
        return {k: torch.from_numpy(v) for k, v in zip(EXPORTED_OUTPUTS, outputs, strict=True)}


class OpenVinoBackend:
    """A model from ``python -m mrcnn.export format=onnx`` in OpenVINO on the CPU, which reads
    the ONNX file itself (no conversion step), one inference per image.

    ``threads``: OpenVINO's inference threads (None: torch's ``get_num_threads()``).
    ``precision``: OpenVINO's ``INFERENCE_PRECISION_HINT``; ``f32`` (default) keeps the parity
    with PyTorch that the export guarantees, ``bf16`` lets a CPU with bf16 hardware (AMX,
    AVX512-BF16) run the convolutions in bf16 (OpenVINO's own default there).
    """

    def __init__(
        self, path: str | Path, threads: int | None = None, precision: str = "f32"
    ) -> None:
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in EXPORTED_OUTPUTS]
        self.device = torch.device("cpu")

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        return [self.run(image) for image in images]

    def run(self, image: Tensor) -> Detections:
        feed = image.detach().cpu().float().contiguous().numpy()
        result = self.request.infer({0: feed})
        return {
            name: torch.from_numpy(result[output].copy())
            for name, output in zip(EXPORTED_OUTPUTS, self.outputs, strict=True)
        }


class TorchScriptBackend:
    """A model from ``python -m mrcnn.export format=torchscript`` (``torch.jit.load``), one
    call per image, on ``device``, without gradients."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = torch.jit.load(str(path), map_location=self.device).eval()

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        with torch.inference_mode():
            return [
                dict(zip(EXPORTED_OUTPUTS, self.model(image.to(self.device)), strict=True))
                for image in images
            ]
