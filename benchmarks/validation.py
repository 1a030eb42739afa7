"""Figure 2, validation cost: one validation step (losses and detections) / inference alone.

mrcnn's validation step is ``mrcnn.model.forward.losses_and_detections``: the transform, the
backbone and the RPN head run once, and only proposal filtering and the RoI heads run for both
losses and detections. The baseline is torchvision's plain inference, ``model.eval()(images)``
under ``torch.no_grad()``, on the same validation batches of the default synthetic run.

The model is freshly initialised, so ``box_score_thresh=0`` is set on both sides: every image
then yields ``box_detections_per_img`` detections and the mask head runs on all of them, as it
does for a trained model (a random model would otherwise detect almost nothing and make
inference look cheaper than it is).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, spread
from benchmarks.setups import batches_from, compose, mrcnn_module, synthetic_overrides
from mrcnn.model.forward import losses_and_detections

TARGET = 1.35


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rounds = 2 if args.quick else args.rounds
    num_batches = 1 if args.quick else args.batches
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [*synthetic_overrides(args.quick), "model.detector.box_score_thresh=0.0"], tmp
        )
        datamodule, batches = batches_from(cfg, num_batches, split="val")
        model = mrcnn_module(cfg, datamodule).model.eval()
    detections = []

    def validation() -> None:
        for images, targets in batches:
            _, found = losses_and_detections(model, images, targets)
            detections.append(sum(len(d["scores"]) for d in found))

    def inference() -> None:
        with torch.no_grad():
            for images, _ in batches:
                model(images)

    times = alternate({"validation": validation, "inference": inference}, rounds)
    images = sum(len(b[0]) for b in batches)
    notes = (
        f"{cfg.data.image_size} px, {num_batches} batch(es) of {cfg.data.batch_size}, model=fast, "
        f"{sum(detections[-num_batches:]) / images:.0f} detections/image; s per pass: validation "
        f"{spread(times['validation'])}, inference {spread(times['inference'])}"
    )
    return [
        make_row(
            2,
            "validation step (losses + detections) / inference",
            median(times["validation"]) / num_batches,
            median(times["inference"]) / num_batches,
            "s/batch",
            TARGET,
            threads=torch.get_num_threads(),
            notes=notes,
        )
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", type=int, default=2, help="batches per pass (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="passes per side (default 5)")


main = main_for("validation", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
