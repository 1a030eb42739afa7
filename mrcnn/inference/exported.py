"""Back ends for the models ``mrcnn export`` writes: ONNX Runtime and OpenVINO (``.onnx``) and
TorchScript (``.pt``).

Each takes one float32 [3,H,W] image per run (what the exported graph takes) and returns
torchvision-style detections, so :class:`~mrcnn.inference.core.Inference` runs them as it runs a
checkpoint's model. The two ONNX back ends run ``images_in_parallel`` images of a batch at once,
each on its share of the threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrcnn.deploy.export_transform import eager_resized_size
from mrcnn.deploy.sidecar import read_sidecar
from mrcnn.errors import ConfigError
from mrcnn.inference.core import Detections

EXPORTED_OUTPUTS = ("boxes", "labels", "scores", "masks")
# Why two images at once, each on half the threads, rather than one on all of them: much of a
# Mask R-CNN pass (RoIAlign, NMS, the heads' small matrices, mask pasting) does not divide over
# threads. Figure 8's R50-FPN model on 2 cores, 16 images of about 225 px: OpenVINO 1.10-1.14x
# and ONNX Runtime 1.0-1.1x as many images/s as with one image on both threads, the same
# detections (docs/benchmarks.md, figure 8). PyTorch eager gained nothing from it (0.95x), so
# TorchBackend runs a batch as one.
IMAGES_IN_PARALLEL = 2


def check_images_in_parallel(images_in_parallel: int | None) -> int:
    """``images_in_parallel`` (None: :data:`IMAGES_IN_PARALLEL`), refused below 1."""
    wanted = IMAGES_IN_PARALLEL if images_in_parallel is None else int(images_in_parallel)
    if wanted < 1:
        raise ConfigError(
            f"images_in_parallel={wanted}: give how many images an exported model runs at "
            "once, 1 or more."
        )
    return wanted


def parallel_streams(images_in_parallel: int | None, threads: int | None) -> tuple[int, int]:
    """How many images run at once and the threads each gets: ``images_in_parallel`` (None:
    :data:`IMAGES_IN_PARALLEL`), at most ``threads`` (None: torch's ``get_num_threads()``)."""
    total = max(1, int(threads or torch.get_num_threads()))
    streams = min(check_images_in_parallel(images_in_parallel), total)
    return streams, total // streams


class OnnxBackend:
    """A model from ``python -m mrcnn.export format=onnx`` in ONNX Runtime, one session run per
    image (the model takes one float32 [3,H,W] image).

    ``threads``: the threads in all (None: torch's ``get_num_threads()``, so both run on the
    same cores). ``images_in_parallel``: images of a batch run at once, each on
    ``threads // images_in_parallel`` intra-op threads (None: :data:`IMAGES_IN_PARALLEL`); one
    session serves them all (ONNX Runtime's ``run`` may be called from several threads and
    releases the GIL). ``providers``: ONNX Runtime execution providers (None: the CPU).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        images_in_parallel: int | None = None,
    ) -> None:
        import onnxruntime

        streams, threads_each = parallel_streams(images_in_parallel, threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads_each
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")
        self.streams = streams
        self.pool = ThreadPoolExecutor(streams) if streams > 1 else None

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        if self.pool is None or len(images) < 2:
            return [self.run(image) for image in images]
        return list(self.pool.map(self.run, images))

    def run(self, image: Tensor) -> Detections:
        feed = {self.input_name: image.detach().cpu().float().contiguous().numpy()}
        outputs = self.session.run(list(EXPORTED_OUTPUTS), feed)
        return {k: torch.from_numpy(v) for k, v in zip(EXPORTED_OUTPUTS, outputs, strict=True)}


class OpenVinoBackend:
    """A model from ``python -m mrcnn.export format=onnx`` in OpenVINO on the CPU, which reads
    the ONNX file itself (no conversion step), one inference per image, fed the size eager
    PyTorch resizes it to (:func:`feed_resized_size`).

    ``threads``: the threads in all (None: torch's ``get_num_threads()``).
    ``images_in_parallel``: images of a batch run at once, OpenVINO's streams, which share the
    threads and the weights (None: :data:`IMAGES_IN_PARALLEL`). ``precision``: OpenVINO's
    ``INFERENCE_PRECISION_HINT``; ``f32`` (default) keeps the parity with PyTorch that the
    export guarantees, ``bf16`` lets a CPU with bf16 hardware (AMX, AVX512-BF16) run the
    convolutions in bf16 (OpenVINO's own default there). ``properties``: further OpenVINO
    properties for compiling, e.g. ``{"PERF_COUNT": True}`` for per-layer times.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        precision: str = "f32",
        images_in_parallel: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        import openvino

        streams, threads_each = parallel_streams(images_in_parallel, threads)
        core = openvino.Core()
        model = core.read_model(str(path))
        self.input_size = read_sidecar(path)["input"]
        self.size_fed = feed_resized_size(model)
        config = {
            "INFERENCE_NUM_THREADS": streams * threads_each,
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
            "NUM_STREAMS": streams,
            **(properties or {}),
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.outputs = [self.compiled.output(name) for name in EXPORTED_OUTPUTS]
        self.requests = openvino.AsyncInferQueue(self.compiled, streams)
        self.requests.set_callback(self.keep_result)
        self.results: dict[int, Detections] = {}
        self.device = torch.device("cpu")
        self.streams = streams

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        self.results = {}
        for index, image in enumerate(images):
            self.requests.start_async(self.inputs(image), index)
        self.requests.wait_all()
        return [self.results.pop(index) for index in range(len(images))]

    def inputs(self, image: Tensor) -> dict[int, np.ndarray]:
        """The image and, where :func:`feed_resized_size` made it an input, the size eager
        PyTorch resizes it to, ``[1, 3, height, width]``."""
        feed = {0: image.detach().cpu().float().contiguous().numpy()}
        if self.size_fed:
            min_size, max_size = self.input_size["min_size"][-1], self.input_size["max_size"]
            size = eager_resized_size(image.shape[-2], image.shape[-1], min_size, max_size)
            feed[1] = np.array([1, image.shape[0], *size], dtype=np.int64)
        return feed

    def keep_result(self, request, index: int) -> None:
        """AsyncInferQueue's callback: one image's outputs, copied out of the request, which
        the next image reuses."""
        self.results[index] = {
            name: torch.from_numpy(request.get_tensor(output).data.copy())
            for name, output in zip(EXPORTED_OUTPUTS, self.outputs, strict=True)
        }


def feed_resized_size(model: Any) -> bool:
    """Make the size an OpenVINO ``model`` (from ``mrcnn export``) resizes its image to an input
    of the model, the second, instead of a value the graph computes; False where the graph has
    no such size (no resize, one to a fixed size, or one by scales).

    Why: the graph computes the size in float64, as eager PyTorch does, and OpenVINO's CPU runs
    float64 arithmetic in float32, which puts one side a pixel off for some image sizes; those
    images' detections moved (18 of the default model's 64 validation images, scores by up to
    0.28). Computed in Python, the size is eager PyTorch's.
    """
    import openvino

    ops = model.get_ordered_ops()
    resize = next((op for op in ops if op.get_type_name() == "Interpolate"), None)
    if resize is None or resize.get_attributes()["shape_calculation_mode"] != "sizes":
        return False
    if resize.input(1).get_source_output().get_node().get_type_name() == "Constant":
        return False
    size = openvino.opset13.parameter([4], openvino.Type.i64, name="resized_size")
    resize.input(1).replace_source_output(size.output(0))
    model.add_parameters([size])
    model.validate_nodes_and_infer_types()
    return True


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
