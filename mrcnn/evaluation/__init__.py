"""COCO box and mask AP: results conversion (``results``), ground truth (``ground_truth``),
COCOeval and its report (``cocoeval``), text tables (``tables``), the validation-time evaluator
(``evaluator``), where a model fails (``diagnostics``: PR curves, confusion matrix, per-image
errors) and the pictures of it (``pictures``)."""

from mrcnn.evaluation.cocoeval import STAT_NAMES, CocoReport, coco_report, evaluate_coco
from mrcnn.evaluation.diagnostics import Marked, PRCurve, confusion_matrix, worst_images
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.evaluation.results import (
    ResultsError,
    check_results,
    detections_to_coco_results,
    load_results,
)
from mrcnn.evaluation.tables import format_metrics_table, format_per_class_table, per_class_table

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
