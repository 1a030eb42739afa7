"""`mrcnn evaluate`: COCO box and mask AP of a model or a results file on the validation split.

- ``model=FILE``: a checkpoint from ``mrcnn train`` (it alone rebuilds the model and its
  classes) or a model from ``mrcnn export`` (``.onnx``, ``.pt``: its classes from its sidecar);
  the classes must match the data's; the validation split is predicted through
  :mod:`mrcnn.inference` (as ``predict`` predicts) and scored.
- ``results=FILE.json``: a COCO results file from ``predict`` or any other tool is scored
  against the same validation split.

Prints a table of the 12 COCOeval numbers for bbox and segm and writes them as json. The json
is written only when evaluation finished: a failure leaves no file that looks complete.

Pictures of the errors go to the run folder (:mod:`mrcnn.evaluation.pictures`): per-class
precision-recall curves (``pr_curves_<bbox|segm>.png``) and the confusion matrix at IoU 0.5 with a
background row and column (``confusion_matrix_<bbox|segm>.png``, its counts in the json); with
``worst=N``, the N validation images with the most errors, each error marked
(``worst/01_<image>.png``, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mrcnn.argv import prepare_command_line
from mrcnn.builders import build_datamodule
from mrcnn.config import CONFIG_DIR
from mrcnn.data.preflight import check_image_files
from mrcnn.errors import ConfigError
from mrcnn.evaluation.calibration import fitting, format_calibration
from mrcnn.evaluation.cocoeval import IOU_TYPES, CocoReport, coco_report
from mrcnn.evaluation.diagnostics import confusion_json
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.evaluation.pictures import check_worst, write_error_plots, write_worst_images
from mrcnn.evaluation.predictions import predict_results
from mrcnn.evaluation.results import check_results, load_results
from mrcnn.evaluation.tables import (
    format_error_table,
    format_metrics_table,
    format_per_class_table,
)
from mrcnn.inference.loading import configured_inference, keep_detections, store_calibration
from mrcnn.inference.tta import parse_views
from mrcnn.io import write_json_atomically
from mrcnn.model.checkpoint import ensure_classes_match
from mrcnn.task import command

log = logging.getLogger(__name__)

COMMAND = "mrcnn evaluate"


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate as configured, print the table, write the metrics json; return the metrics."""
    if (cfg.get("model_path") is None) == (cfg.get("results") is None):
        raise ConfigError(
            "Give exactly one of model=FILE (a checkpoint from mrcnn train, or a model from "
            "mrcnn export: .onnx, .pt) or results=FILE.json (score a COCO results file)."
        )
    evaluation = cfg.evaluation
    worst = check_worst(cfg.get("worst", 0))
    tide, calibration = fitting(evaluation)  # checked before the model loads
    # Read the model first: a bad file fails fast, before any data is touched.
    inference = model_categories = None
    if cfg.get("results") is None:
        inference, model_categories, source = configured_inference(
            cfg, 0.0, evaluation.mask_threshold
        )
    else:
        parse_views(cfg.get("tta"))  # checked, though a results file is scored as it is

    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    val_set = datamodule.val_set
    check_image_files(val_set, "validation")
    categories = datamodule.categories
    if inference is not None:  # before the ground truth: that reads every validation mask
        ensure_classes_match(model_categories, categories)
    ground_truth = ground_truth_for(val_set, categories)
    info: dict[str, Any] = {"num_images": len(val_set)}

    max_detections = int(evaluation.get("max_detections") or 100)  # null: COCO's 100
    if inference is not None:
        if evaluation.get("max_detections"):
            keep_detections(inference, max_detections, source)
        results, image_ids = predict_results(
            inference, val_set, categories, num_workers=int(cfg.num_workers)
        )
        iou_types: tuple[str, ...] = IOU_TYPES
        info["model_path"] = str(Path(source).resolve())
    else:
        source = Path(cfg.results)
        results = load_results(source)
        supported = check_results(results, ground_truth, source=str(source))
        iou_types = tuple(t for t in IOU_TYPES if t in supported) if results else IOU_TYPES
        image_ids = None  # every validation image counts, predicted or not
        info["results"] = str(source.resolve())
        if "segm" not in iou_types:
            log.info("%s has boxes only: evaluating bbox.", source)

    report = coco_report(
        ground_truth,
        results,
        iou_types=iou_types,
        backend=evaluation.backend,
        image_ids=image_ids,
        max_detections=max_detections,
        score_threshold=evaluation.score_threshold,
        boundary_dilation=evaluation.get("boundary_dilation"),
        tide=tide,
        calibration=calibration,
    )
    info["num_detections"] = len(results)
    print_report(report, info, max_detections)
    if report.calibration is not None:
        report.calibration.tta = [str(v) for v in parse_views(cfg.get("tta"))] or None
        print(f"\n{format_calibration(report.calibration)}")
        if inference is not None and cfg.get("store_calibration", True):
            try:
                stored = store_calibration(source, report.calibration)
            except OSError as error:  # a read-only model file: the metrics json still has them
                log.warning(
                    "Could not store the thresholds in %s (%s); they are in the metrics json. "
                    "Copy the model somewhere writable, or give store_calibration=false.",
                    source,
                    error,
                )
            else:
                print(
                    f"Stored in {stored}: predict applies them with "
                    "evaluation.score_threshold=calibrated."
                )
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "metrics.json"
    run_dir = output.parent  # the pictures go beside the metrics
    pictures = write_error_plots(report, run_dir)
    worst_written = write_worst_images(report, val_set, ground_truth, worst, run_dir / "worst")
    print(f"\nPictures of the errors: {', '.join(str(p) for p in pictures)}")
    if not worst:
        print("worst=N draws the N validation images with the most errors, each error marked.")
    else:
        print(
            f"The {len(worst_written)} images with the most errors: {run_dir / 'worst'}"
            + (f" (only {len(worst_written)} have errors)" if len(worst_written) < worst else "")
        )
    write_json_atomically(
        {
            "metrics": report.metrics,
            "per_class": report.per_class,
            "confusion": {
                t: confusion_json(m, report.class_names, report.score_threshold)
                for t, m in report.confusion.items()
            },
            "errors": {t: e.to_json() for t, e in report.errors.items()},
            "calibration": report.calibration.to_dict() if report.calibration else None,
            "boundary_dilation": report.boundary_dilation,
            "pictures": [str(p) for p in pictures],
            "worst": worst_written,
            **info,
            "mask_threshold": evaluation.mask_threshold,
            "max_detections": max_detections,
        },
        output,
        indent=2,
    )
    log.info("Metrics written to %s", output)
    return report.metrics


def print_report(report: CocoReport, info: dict[str, Any], max_detections: int) -> None:
    """The metrics table, what its columns mean, and the per-class table."""
    print(
        f"COCO metrics (%), {info['num_images']} validation images, "
        f"{info['num_detections']} detections:\n{format_metrics_table(report.metrics)}\n"
        "AP: mean over IoU 0.50:0.95; s/m/l: objects under 32², 32²-96², over 96² pixels; "
        f"AR1/10/{max_detections}: recall with at most 1/10/{max_detections} detections per "
        "image; -: nothing to measure.\n"
        f"\nPer class (%), weakest first:\n{format_per_class_table(report)}"
    )
    if report.boundary_dilation is not None and "boundary_AP" in report.metrics:
        print(
            "boundary: mask AP with Boundary IoU (Cheng et al. 2021; band "
            f"{report.boundary_dilation:g} of the image diagonal): it sees mask edges."
        )
    if report.errors:
        print(f"\nWhich errors cost the AP (TIDE, IoU 0.5):\n{format_error_table(report)}")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
@command(COMMAND)
def main(cfg: DictConfig) -> None:
    """``mrcnn evaluate`` (see module doc)."""
    evaluate(cfg)


def cli() -> None:
    """``mrcnn evaluate``, ``mrcnn-evaluate`` and ``python -m mrcnn.evaluate``."""
    prepare_command_line("evaluate")
    main()


if __name__ == "__main__":
    cli()
