"""Figure 8, deploy: ONNX Runtime / PyTorch eager images/s on a CPU, same model, same images.

The model is the synthetic-set R50-FPN of figure 5 (``model=fast``, 256 px, or 128 px with
``--quick``) with ``box_score_thresh=0`` so that every image gets ``box_detections_per_img``
detections, saved as an mrcnn checkpoint and exported with ``mrcnn.export`` (ONNX, opset 17,
``torch.onnx.export(dynamo=False)``). Both sides run behind the same
:class:`mrcnn.inference.Inference` (batches of ``--batch-size``, the same postprocessing) on the
synthetic validation images already in memory: PyTorch eager (:class:`TorchBackend`, float32)
against ONNX Runtime (:class:`OnnxBackend`, one session run per image, as many intra-op threads
as torch has), timed in alternating rounds in one process.

Also reported, without targets: the export time (ONNX against TorchScript's ``torch.jit.script``)
and the ONNX file's size against the checkpoint's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import batches_from, compose, mrcnn_module, synthetic_overrides
from mrcnn.deploy.exporter import DEFAULT_OPSET, export_model
from mrcnn.inference import Inference, OnnxBackend, TorchBackend


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
        from mrcnn.model.checkpoint import load_module

        pytorch = Inference(TorchBackend(load_module(ckpt).model), batch_size=args.batch_size)
        runtime = Inference(OnnxBackend(onnx.output), batch_size=args.batch_size)
        detections = sum(len(d["scores"]) for d in pytorch(images))

        def ours() -> None:  # None: alternate() takes the wall time (a list would be timings)
            runtime(images)

        def theirs() -> None:
            pytorch(images)

        times = alternate({"onnxruntime": ours, "pytorch": theirs}, rounds)
        size = images[0].shape[-1]
        notes = (
            f"{len(images)} synthetic images, {size} px, batch {args.batch_size}, "
            f"{detections / len(images):.0f} detections/image, opset {DEFAULT_OPSET}; s per pass "
            f"onnxruntime {spread(times['onnxruntime'])}, pytorch {spread(times['pytorch'])}"
        )
        threads = torch.get_num_threads()
        rows.append(
            make_row(
                8,
                "ONNX Runtime / PyTorch eager inference, CPU",
                len(images) / median(times["onnxruntime"]),
                len(images) / median(times["pytorch"]),
                "images/s",
                1.3,  # the Deploy issue's target
                higher_is_better=True,
                threads=threads,
                notes=notes,
            )
        )
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
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=16, help="images per pass (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per side (default 3)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per call (default 4)")


main = main_for("export", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
