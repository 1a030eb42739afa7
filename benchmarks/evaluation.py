"""Figure 4, evaluation: mrcnn's COCO evaluation (bbox + segm) / pycocotools ``COCOeval``.

Both sides get the same ground-truth dict and the same detections (generated near the ground
truth, RLE masks) and compute the 12 COCOeval numbers for boxes and for masks. mrcnn's side is
``mrcnn.evaluation.evaluate_coco`` as validation and ``mrcnn.evaluate`` call it (checks, its
backend ``auto``); the baseline is the plain pycocotools recipe: ``COCO()`` from the dict,
``loadRes`` (``bbox`` dropped for segm), ``evaluate``, ``accumulate``, ``summarize``. The stats
must be identical (to 1e-12: summation order moves the last bit): a row whose stats differ
is marked as missing its target.

Data: coco128 (its json and generated detections) and a generated 5,000-image set.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.coco_gen import generate_detections, generate_ground_truth
from benchmarks.common import alternate, main_for, make_row, median, spread
from mrcnn.config import compose_config
from mrcnn.evaluation.cocoeval import STAT_NAMES, evaluate_coco
from mrcnn.evaluation.ground_truth import ground_truth_for

TARGET = 0.5


def pycocotools_eval(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """The reference: what a careful pycocotools user writes."""
    metrics = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        for iou_type in ("bbox", "segm"):
            prepared = [
                {k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")}
                for r in results
            ]
            if iou_type == "bbox":
                for r in prepared:
                    r.pop("segmentation", None)
            dt = gt.loadRes(prepared)
            evaluator = COCOeval(gt, dt, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            for name, value in zip(STAT_NAMES, evaluator.stats, strict=True):
                metrics[f"{iou_type}_{name}"] = float(value)
    return metrics


def coco128_ground_truth() -> dict[str, Any]:
    return ground_truth_for(compose_config(["data=coco128"]).data.train.annotations)


def _measure(label: str, ground_truth: dict, rounds: int) -> dict[str, Any]:
    results = generate_detections(ground_truth)
    outputs: dict[str, dict] = {}

    def mrcnn() -> None:
        outputs["mrcnn"] = evaluate_coco(ground_truth, results)

    def reference() -> None:
        outputs["pycocotools"] = pycocotools_eval(ground_truth, results)

    times = alternate({"mrcnn": mrcnn, "pycocotools": reference}, rounds, warmup=0)
    ours, theirs = outputs["mrcnn"], outputs["pycocotools"]
    diff = max(abs(ours[k] - theirs[k]) for k in theirs)
    # faster-coco-eval sums in another order: last-bit float differences (1e-17) are equal.
    identical = set(ours) == set(theirs) and diff <= 1e-12
    row = make_row(
        4,
        f"COCO eval bbox+segm ({label}) / pycocotools",
        median(times["mrcnn"]),
        median(times["pycocotools"]),
        "s",
        TARGET,
        threads=torch.get_num_threads(),
        notes=(
            f"{len(ground_truth['images'])} images, {len(ground_truth['annotations'])} GT, "
            f"{len(results)} detections; stats identical: {identical} (max diff {diff:.2g}, "
            f"segm AP {ours['segm_AP']:.4f}); s mrcnn {spread(times['mrcnn'])}, "
            f"pycocotools {spread(times['pycocotools'])}"
        ),
    )
    row["met"] = bool(row["met"] and identical)
    row["identical_stats"] = identical
    return row


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = [_measure("coco128", coco128_ground_truth(), 2 if args.quick else args.rounds)]
    size = 200 if args.quick else args.images
    generated = generate_ground_truth(size, seed=np.random.default_rng(0).integers(1000))
    rows.append(_measure(f"generated {size} images", generated, 1 if args.quick else 2))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=5000, help="generated set size (5000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side on coco128 (3)")


main = main_for("evaluation", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
