"""Figure 8, deploy: ONNX Runtime (and OpenVINO) / PyTorch eager images/s on a CPU, same model.

The model is the synthetic-set R50-FPN of figure 5 (``model=fast``, 256 px, or 128 px with
``--quick``) with ``box_score_thresh=0`` so that every image gets ``box_detections_per_img``
detections, saved as an mrcnn checkpoint and exported with ``mrcnn.export`` (ONNX, opset 17,
``torch.onnx.export(dynamo=False)``). Both sides run behind the same
:class:`mrcnn.inference.Inference` (batches of ``--batch-size``, the same postprocessing) on the
synthetic validation images already in memory: PyTorch eager (:class:`TorchBackend`, float32)
against ONNX Runtime (:class:`OnnxBackend`, one session run per image, as many intra-op threads
as torch has, two images of a batch at once: ``images_in_parallel``) and, when the ``openvino``
package is installed, OpenVINO on the same ONNX file (:class:`OpenVinoBackend`, float32, two
streams), timed in alternating rounds in one process; both runtimes are also timed one image at
a time on all the threads (``images_in_parallel=1``). Both runtimes
keep PyTorch's detections (boxes within 1 px, scores within 1e-3, mask IoU >= 0.99 on a trained
model: ``tests/deploy/test_exporter.py``), so the "fastest back end keeping parity" row counts
the faster of the two. Also timed: ONNX Runtime on the same model with int8
convolutions (:mod:`mrcnn.deploy.quantize`, what ``mrcnn export quantize=int8`` writes, calibrated
here on the timed images): not parity-keeping by design; the AP it costs is measured where the
model is trained (``mrcnn export quantize=int8`` prints it).

Also reported, without targets: the export time (ONNX against TorchScript's ``torch.jit.script``)
and the ONNX file's size against the checkpoint's; with ``--profile``, ONNX Runtime's own profile
of one pass (each operator type's share of the kernel time) and OpenVINO's (each part of the
model's and each layer type's share of the layer time).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import batches_from, compose, mrcnn_module, synthetic_overrides
from mrcnn.deploy.exporter import DEFAULT_OPSET, export_model
from mrcnn.deploy.quantize import int8_path, quantize_convolutions
from mrcnn.inference import Inference, OnnxBackend, TorchBackend
from mrcnn.inference.exported import OpenVinoBackend


def write_checkpoint(path: Path, tmp: str, quick: bool, images: int) -> list[torch.Tensor]:
    """An mrcnn checkpoint (what ``mrcnn.train`` saves) of the figure's model, and ``images``
    synthetic validation images (float32 [0,1])."""
    overrides = [*synthetic_overrides(quick), "model.detector.box_score_thresh=0.0"]
    overrides += [f"data.val.num_images={images}"]
    cfg = compose(overrides, tmp)
    datamodule, _ = batches_from(cfg, 0)
    module = mrcnn_module(cfg, datamodule)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    datamodule.setup("validate")
    val_set = datamodule.val_set
    return [val_set[i][0] for i in range(min(images, len(val_set)))]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    count = 2 if args.quick else args.images
    rounds = 1 if args.quick else args.rounds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        images = write_checkpoint(ckpt, tmp, args.quick, count)
        with quiet():
            onnx = export_model(ckpt, "onnx", Path(tmp) / "model.onnx")
            script = export_model(ckpt, "torchscript", Path(tmp) / "model.pt")
            int8 = int8_path(onnx.output)
            quantize_convolutions(onnx.output, int8, images)
        from mrcnn.model.checkpoint import load_module

        def behind_inference(backend: Any) -> Inference:
            return Inference(backend, batch_size=args.batch_size)

        runners = {
            "pytorch": behind_inference(TorchBackend(load_module(ckpt).model)),
            "onnxruntime": behind_inference(OnnxBackend(onnx.output)),
            "onnxruntime_one_image": behind_inference(
                OnnxBackend(onnx.output, images_in_parallel=1)
            ),
            "onnxruntime_int8": behind_inference(OnnxBackend(int8)),
        }
        with contextlib.suppress(ImportError):  # not installed: the rows without it
            runners["openvino"] = behind_inference(OpenVinoBackend(onnx.output))
            runners["openvino_one_image"] = behind_inference(
                OpenVinoBackend(onnx.output, images_in_parallel=1)
            )
        detections = sum(len(d["scores"]) for d in runners["pytorch"](images))

        def timed(runner: Inference) -> Callable[[], None]:
            return lambda: runner(images) and None  # None: alternate() takes the wall time

        times = alternate({name: timed(runner) for name, runner in runners.items()}, rounds)
        size = images[0].shape[-1]
        passes = ", ".join(f"{name} {spread(times[name])}" for name in runners)
        notes = (
            f"{len(images)} synthetic images, {size} px, batch {args.batch_size}, "
            f"{detections / len(images):.0f} detections/image, opset {DEFAULT_OPSET}; s per "
            f"pass {passes}"
        )
        threads = torch.get_num_threads()
        eager = len(images) / median(times["pytorch"])
        speed = {name: len(images) / median(times[name]) for name in runners}
        for name, title, target in (
            ("onnxruntime", "ONNX Runtime / PyTorch eager inference, CPU", 1.4),
            ("onnxruntime_one_image", "ONNX Runtime, one image at a time / PyTorch eager", None),
            ("openvino", "OpenVINO / PyTorch eager inference, CPU (float32)", None),
            ("openvino_one_image", "OpenVINO, one image at a time / PyTorch eager", None),
            ("onnxruntime_int8", "ONNX Runtime, int8 convolutions / PyTorch eager, CPU", None),
        ):
            if name in runners:
                rows.append(
                    make_row(
                        8, title, speed[name], eager, "images/s", target,
                        higher_is_better=True, threads=threads, notes=notes,
                    )
                )  # fmt: skip
        fastest = max(("onnxruntime", "openvino"), key=lambda name: speed.get(name, 0.0))
        rows.append(
            make_row(
                8, f"fastest back end keeping parity ({fastest}) / PyTorch eager, CPU",
                speed[fastest], eager, "images/s", 2.5, higher_is_better=True,
                threads=threads, notes=notes,
            )
        )  # fmt: skip
        rows.append(
            make_row(
                8,
                "export time, ONNX / TorchScript",
                onnx.seconds,
                script.seconds,
                "s",
                None,
                threads=threads,
                notes="mrcnn.export: torch.onnx.export(dynamo=False) / torch.jit.script, one run",
            )
        )
        rows.append(
            make_row(
                8,
                "file size, ONNX / checkpoint",
                onnx.size_bytes / 1e6,
                ckpt.stat().st_size / 1e6,
                "MB",
                None,
                threads=threads,
                notes=f"TorchScript {script.size_bytes / 1e6:.1f} MB",
            )
        )
        if args.profile:
            print(onnx_profile(onnx.output, images))
            if "openvino" in runners:
                print(openvino_profile(onnx.output, images))
    return rows


def onnx_profile(model: Path, images: list[torch.Tensor]) -> str:
    """ONNX Runtime's profile of one pass over ``images``: kernel time per operator type."""
    import json

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(model.with_suffix(""))
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for image in images:
        session.run(None, {session.get_inputs()[0].name: image.numpy()})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_type: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_type[op] = by_type.get(op, 0.0) + event["dur"]
    total = sum(by_type.values())
    ranked = sorted(by_type.items(), key=lambda item: -item[1])
    lines = [f"ONNX Runtime profile, {len(images)} images: {total / 1e6:.3f} s of kernel time"]
    lines += [f"  {op:<24} {100 * dur / total:5.1f} %" for op, dur in ranked[:12]]
    return "\n".join(lines)


# Parts of the model, by the ONNX node names OpenVINO keeps (first match wins). OpenVINO
# renames the mask predictor's transposed convolution when it fuses it
# ("ConvolutionBackpropData_<n>"); the model has no other.
MODEL_PARTS = (
    ("/model/backbone/body/", "backbone (ResNet)"),
    ("/model/backbone/fpn/", "FPN"),
    ("/model/rpn/", "RPN"),
    ("/model/roi_heads/box_", "box head (RoIAlign, fully connected layers, predictor)"),
    ("/model/roi_heads/mask_", "mask head (RoIAlign, convolutions, predictor)"),
    ("ConvolutionBackpropData", "mask head (RoIAlign, convolutions, predictor)"),
)
ARITHMETIC = ("Convolution", "ConvolutionBackpropData", "FullyConnected", "MatMul")


def openvino_profile(model: Path, images: list[torch.Tensor]) -> str:
    """OpenVINO's own per-layer profile (``PERF_COUNT``) of one pass over ``images``, one
    stream on all the threads: time per part of the model and per layer type, and the share of
    convolutions and matrix products (what no runtime change can shrink in float32)."""
    backend = OpenVinoBackend(model, images_in_parallel=1, properties={"PERF_COUNT": True})
    backend(images[:1])  # the first run sets itself up: not counted
    by_part: dict[str, float] = {}
    by_type: dict[str, float] = {}
    for image in images:
        backend([image])
        for layer in backend.requests[0].profiling_info:
            seconds = layer.real_time.total_seconds()
            part = next((p for key, p in MODEL_PARTS if key in layer.node_name), "the rest")
            by_part[part] = by_part.get(part, 0.0) + seconds
            by_type[layer.node_type] = by_type.get(layer.node_type, 0.0) + seconds
    total = sum(by_type.values())
    arithmetic = sum(by_type.get(name, 0.0) for name in ARITHMETIC)
    lines = [f"OpenVINO profile, {len(images)} images: {total:.3f} s of layer time", "  by part:"]
    lines += [f"    {part:<56} {100 * t / total:5.1f} %" for part, t in _ranked(by_part)]
    lines.append("  by layer type:")
    lines += [f"    {kind:<56} {100 * t / total:5.1f} %" for kind, t in _ranked(by_type)[:8]]
    lines.append(f"  convolutions and matrix products: {100 * arithmetic / total:.1f} %")
    return "\n".join(lines)


def _ranked(times: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(times.items(), key=lambda item: -item[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=16, help="images per pass (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per side (default 3)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per call (default 4)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print ONNX Runtime's and OpenVINO's own profiles of one pass",
    )


main = main_for("export", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
