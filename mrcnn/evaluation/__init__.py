"""COCO box and mask AP: results conversion, ground truth, COCOeval, validation-time evaluator,
and where a model fails (PR curves, confusion matrix, per-image errors)."""

from mrcnn.evaluation.coco import (
    STAT_NAMES,
    CocoReport,
    ResultsError,
    check_results,
    coco_report,
    detections_to_coco_results,
    evaluate_coco,
    format_metrics_table,
    format_per_class_table,
    ground_truth_for,
    load_results,
    per_class_table,
)
from mrcnn.evaluation.diagnostics import Marked, PRCurve, confusion_matrix, worst_images
from mrcnn.evaluation.evaluator import CocoEvaluator

__all__ = [
    "STAT_NAMES",
    "CocoEvaluator",
    "CocoReport",
    "Marked",
    "PRCurve",
    "ResultsError",
    "check_results",
    "coco_report",
    "confusion_matrix",
    "detections_to_coco_results",
    "evaluate_coco",
    "format_metrics_table",
    "format_per_class_table",
    "ground_truth_for",
    "load_results",
    "per_class_table",
    "worst_images",
]
