"""COCO box and mask AP: results conversion, ground truth, COCOeval, validation-time evaluator."""

from mrcnn.evaluation.coco import (
    STAT_NAMES,
    ResultsError,
    check_results,
    detections_to_coco_results,
    evaluate_coco,
    format_metrics_table,
    ground_truth_for,
    load_results,
)
from mrcnn.evaluation.evaluator import CocoEvaluator

__all__ = [
    "STAT_NAMES",
    "CocoEvaluator",
    "ResultsError",
    "check_results",
    "detections_to_coco_results",
    "evaluate_coco",
    "format_metrics_table",
    "ground_truth_for",
    "load_results",
]
