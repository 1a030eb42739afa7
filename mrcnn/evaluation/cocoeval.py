"""COCO box and mask AP with COCOeval: the one evaluation path, and its report.

The numbers are COCOeval's own (pycocotools, or faster-coco-eval which gives identical results
faster), never a re-implementation: papers and other tools report exactly these. Traps handled
here, each covered by a test:

- ``loadRes`` takes its box branch whenever a result has a ``bbox`` key, so mask results would
  get box areas and move APs/APm/APl: ``bbox`` is dropped from results before ``segm`` (as
  detectron2 does), ``segmentation`` before ``bbox``.
- ``loadRes`` fails on an empty result list: an empty result set is built directly instead.
- ``loadRes`` and ``COCOeval`` write into the dicts they are given: both get copies.
- Only images that were actually predicted are evaluated (``image_ids``), so a partial
  validation run is not scored against ground truth it never saw.

Beside box and mask AP: **Boundary AP** (Cheng et al., CVPR 2021: mask IoU taken as the lesser
of the mask IoU and the IoU of the two masks' boundary bands, ``boundary_dilation`` of the image
diagonal wide), computed by faster-coco-eval's ``iouType="boundary"`` whatever the backend
(pycocotools has none); **TIDE's error breakdown** (:mod:`mrcnn.evaluation.tide`); and
**calibrated thresholds** fitted from the same matching (:mod:`mrcnn.evaluation.calibration`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from mrcnn.errors import ConfigError
from mrcnn.evaluation.calibration import CALIBRATED, Calibration, fit_thresholds
from mrcnn.evaluation.diagnostics import (
    Marked,
    PRCurve,
    confusion_matrix,
    match_image,
    pr_curves,
    threshold_text,
)
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.evaluation.results import ResultsError, bytes_rle, check_results
from mrcnn.evaluation.tide import TideErrors, tide_errors

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# Boundary AP: evaluated from the mask results, beside segm (faster-coco-eval only).
BOUNDARY = "boundary"
REPORTED_TYPES = (*IOU_TYPES, BOUNDARY)  # the rows of the metrics table
DEFAULT_DILATION = 0.02
# The 12 numbers COCOeval.summarize() computes for boxes and masks, in its order.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def resolve_backend(backend: str = "auto") -> str:
    """``faster_coco_eval`` where installed (identical numbers, 2-3x faster), else pycocotools."""
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown COCO backend {backend!r}; choose one of {list(BACKENDS)}.")
    if backend == "auto":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            return "pycocotools"
        return "faster_coco_eval"
    return backend


def _results_for(
    results: Iterable[dict], iou_type: str, sizes: dict[int, tuple[int, int]]
) -> list[dict]:
    """Copies of the results as ``loadRes`` must see them for one IoU type.

    Polygons become RLEs at their image's size (``sizes``: image id -> (height, width)):
    ``loadRes`` computes mask areas and boxes of RLEs only.
    """
    prepared = []
    for result in results:
        result = dict(result)
        segm = result.pop("segmentation", None)
        if isinstance(segm, list) and result["image_id"] not in sizes:
            raise ResultsError(
                f"Image {result['image_id']} has polygon results but no height and width in the "
                "ground truth: polygons are rasterised at the image's size."
            )
        if segm is not None:
            segm = bytes_rle(segm, sizes.get(result["image_id"]))
        if iou_type == "segm":
            # With a bbox key, loadRes would set area = box area for mask results.
            result.pop("bbox", None)
            result["segmentation"] = segm
        elif "bbox" not in result and segm is not None:
            result["bbox"] = mask_util.toBbox(segm).tolist()
        prepared.append(result)
    return prepared


def _coco_api(backend: str) -> tuple[Any, Any]:
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _ground_truth_api(coco_cls: Any, ground_truth: dict) -> Any:
    coco = coco_cls()
    coco.dataset = copy.deepcopy(ground_truth)  # COCOeval writes into ground-truth annotations
    coco.createIndex()
    return coco


def _load_results(coco_cls: Any, gt: Any, results: list[dict]) -> Any:
    if results:
        return gt.loadRes(results)
    # pycocotools' loadRes fails on an empty list; an empty result set scores 0 where there is GT.
    empty = coco_cls()
    empty.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": [],
    }
    empty.createIndex()
    return empty


@dataclass
class CocoReport:
    """What one COCO evaluation found.

    ``metrics``: COCOeval's 12 summary numbers per IoU type (``bbox_AP`` ... ``segm_ARl``).
    ``per_class``: per IoU type, per class name, ``AP`` and ``AP50`` (-1: no ground truth of
    that class among the images evaluated), read from COCOeval's own precision array as
    detectron2 does, so they average to ``metrics[...AP]`` over the classes with ground truth.

    What the pictures of the errors need (:mod:`mrcnn.evaluation.diagnostics`), per IoU type:
    ``precision``: COCOeval's precision ``[T, R, K]`` (all areas, last maxDets), with
    ``iou_thresholds`` and ``recall_thresholds``; ``marked``: per image id, every ground-truth
    instance and detection (score >= ``score_threshold``) marked correct, missed, false positive
    or wrong class; ``confusion``: their counts ``[K+1, K+1]`` (rows: ground truth, columns:
    prediction, background last). Classes are ``class_names`` / ``category_ids`` in COCOeval's
    order (sorted ids).

    ``errors``: TIDE's breakdown per IoU type (``bbox``, ``segm``); ``calibration``: per-class
    score thresholds fitted on these detections (masks when there are masks); both when asked.
    ``score_threshold`` is one number or, when calibrated, one per category id.
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    iou_thresholds: np.ndarray | None = None
    recall_thresholds: np.ndarray | None = None
    marked: dict[str, dict[int, list[Marked]]] = field(default_factory=dict)
    confusion: dict[str, np.ndarray] = field(default_factory=dict)
    score_threshold: float | dict[int, float] = 0.5
    errors: dict[str, TideErrors] = field(default_factory=dict)
    calibration: Calibration | None = None
    boundary_dilation: float | None = None

    @property
    def threshold_text(self) -> str:
        """The score threshold in titles: ``0.5``, or ``calibrated``."""
        return threshold_text(self.score_threshold)

    def pr_curves(self, iou_type: str) -> list[PRCurve]:
        """Per-class precision-recall curves at IoU 0.5 and over 0.50:0.95 (classes with
        ground truth)."""
        return pr_curves(
            self.precision[iou_type], self.recall_thresholds, self.iou_thresholds, self.class_names
        )

    def worst_classes(self, iou_type: str = "segm", count: int = 3) -> list[tuple[str, float]]:
        """The ``count`` classes with the lowest AP (classes without ground truth left out)."""
        scored = [(n, v["AP"]) for n, v in self.per_class.get(iou_type, {}).items() if v["AP"] >= 0]
        return sorted(scored, key=lambda item: item[1])[:count]


def evaluate_coco(ground_truth: dict | str | Path, results: list[dict], **options: Any) -> dict:
    """COCOeval's 12 summary numbers per IoU type, e.g. ``bbox_AP`` ... ``segm_ARl``: the
    ``metrics`` of :func:`coco_report`, which takes the same arguments (``iou_types``,
    ``backend``, ``image_ids``, ``max_detections``)."""
    return coco_report(ground_truth, results, **options).metrics


def coco_report(
    ground_truth: dict | str | Path,
    results: list[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    backend: str = "auto",
    image_ids: Iterable[int] | None = None,
    max_detections: int = 100,
    score_threshold: float | str | dict[int, float] = 0.5,
    boundary_dilation: float | None = None,
    tide: bool = False,
    calibration: tuple[str, float | None] | None = None,
) -> CocoReport:
    """COCOeval's summary numbers, per-class AP, PR curves and the confusion matrix for each
    IoU type; Boundary AP, TIDE's errors and calibrated thresholds when asked.

    Args:
        ground_truth: a COCO ground-truth dict or json file (crowd regions are kept: COCOeval
            ignores detections on them, as the official numbers do).
        results: COCO results; not modified.
        iou_types: ``bbox`` and/or ``segm``.
        backend: ``auto`` (faster-coco-eval where installed), ``faster_coco_eval`` or
            ``pycocotools``; both give identical numbers.
        image_ids: evaluate only these images (those predicted); default: every image.
        max_detections: detections per image that count (COCOeval's last ``maxDets``, 100 by
            default): dense scenes (a hundred nuclei) need more. AP and the ``AR100`` entry use it.
        score_threshold: detections below this score are left out of the confusion matrix and
            the per-image errors (AP and the PR curves count every detection): a number, one per
            category id, or ``"calibrated"``: the thresholds fitted here (``calibration``).
        boundary_dilation: with masks, Boundary AP too (``boundary_AP`` ...), the boundary band
            this fraction of the image diagonal wide (Cheng et al. use 0.02); None: none.
        tide: TIDE's error breakdown per IoU type (``errors``).
        calibration: ``(goal, precision target)`` to fit per-class score thresholds
            (:func:`~mrcnn.evaluation.calibration.fit_thresholds`); implies ``tide``.

    COCOeval's printed summary is captured (no spam in training logs) and logged at DEBUG.
    Values are -1 where COCOeval has nothing to measure (e.g. no ground truth of that size).
    """
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"Unknown iou type {iou_type!r}; choose from {list(IOU_TYPES)}.")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be at least 1, got {max_detections}.")
    check_score_threshold(score_threshold, calibration)
    if boundary_dilation is not None and not 0 < boundary_dilation < 1:
        raise ConfigError(
            f"evaluation.boundary_dilation={boundary_dilation!r}: give the boundary band's width "
            "as a fraction of the image diagonal, above 0 and below 1 (Boundary IoU uses 0.02), "
            "or null for no Boundary AP."
        )
    ground_truth = ground_truth_for(ground_truth)
    supported = check_results(results, ground_truth)
    missing = [t for t in iou_types if t not in supported and results]
    if missing:
        raise ResultsError(
            f"Cannot evaluate {missing}: not every detection has a "
            f"{'segmentation' if 'segm' in missing else 'bbox'}."
        )
    backend = resolve_backend(backend)
    report = CocoReport(metrics={}, boundary_dilation=boundary_dilation)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        gt_by_backend = {}
        sizes = {i["id"]: (i["height"], i["width"]) for i in ground_truth["images"] if "width" in i}
        prepared_by_type: dict[str, list[dict]] = {}
        evaluated = list(iou_types)
        if boundary_dilation is not None and "segm" in iou_types:
            evaluated.append(BOUNDARY)
        selected: list[int] = []
        for iou_type in evaluated:
            # Boundary IoU exists in faster-coco-eval only (a dependency): it runs there always.
            chosen = "faster_coco_eval" if iou_type == BOUNDARY else backend
            coco_cls, eval_cls = _coco_api(chosen)
            if chosen not in gt_by_backend:
                gt_by_backend[chosen] = _ground_truth_api(coco_cls, ground_truth)
            gt = gt_by_backend[chosen]
            selected = sorted(gt.getImgIds() if image_ids is None else set(image_ids))
            source_type = "segm" if iou_type == BOUNDARY else iou_type
            if source_type not in prepared_by_type:
                prepared_by_type[source_type] = _results_for(results, source_type, sizes)
            prepared = prepared_by_type[source_type]
            # loadRes adds ids, areas and boxes to the dicts it is given: copies, so that the
            # next IoU type, TIDE and the matcher see the results as prepared.
            dt = _load_results(coco_cls, gt, [dict(r) for r in prepared])
            options: dict[str, Any] = {}
            if chosen == "faster_coco_eval":
                options["print_function"] = print
            if iou_type == BOUNDARY:
                options["boundary_dilation_ratio"] = float(boundary_dilation)
            evaluator = eval_cls(gt, dt, iouType=iou_type, **options)
            evaluator.params.imgIds = selected
            evaluator.params.maxDets = [1, 10, int(max_detections)]
            evaluator.evaluate()
            evaluator.accumulate()
            print(f"{iou_type} ({chosen}, {len(selected)} images):")
            evaluator.summarize()
            stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(STAT_NAMES)]
            # pycocotools' summarize takes AP at maxDets=100 whatever maxDets is (it finds no
            # such column and reports -1): read it from the precision array like the others.
            stats[0] = _mean_precision(evaluator.eval["precision"][:, :, :, 0, -1])
            report.metrics.update(
                {f"{iou_type}_{name}": float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}
            )
            report.per_class[iou_type] = _per_class_ap(evaluator, gt)
            report.category_ids = [int(c) for c in evaluator.params.catIds]
            report.class_names = [str(gt.cats[c]["name"]) for c in report.category_ids]
            if iou_type == BOUNDARY:
                continue  # pictures and matching: boxes and masks only
            report.iou_thresholds = np.asarray(evaluator.params.iouThrs, dtype=np.float64)
            report.recall_thresholds = np.asarray(evaluator.params.recThrs, dtype=np.float64)
            report.precision[iou_type] = np.array(evaluator.eval["precision"][:, :, :, 0, -1])
        if tide or calibration is not None:
            for iou_type in iou_types:
                report.errors[iou_type] = tide_errors(
                    _rle_ground_truth(ground_truth, sizes) if iou_type == "segm" else ground_truth,
                    prepared_by_type[iou_type],
                    iou_type,
                    selected,
                    max_detections,
                )
        if calibration is not None and report.errors:
            fitted_on = "segm" if "segm" in report.errors else "bbox"
            errors = report.errors[fitted_on]
            names = dict(zip(report.category_ids, report.class_names, strict=True))
            goal, target = calibration
            report.calibration = fit_thresholds(
                errors.points, errors.num_gt, names, fitted_on, goal, target
            )
        if score_threshold == CALIBRATED:
            score_threshold = report.calibration.by_category_id() if report.calibration else 0.5
        report.score_threshold = (
            dict(score_threshold) if isinstance(score_threshold, dict) else float(score_threshold)
        )
        for iou_type in iou_types:
            marked = _mark_images(
                ground_truth,
                prepared_by_type[iou_type],
                iou_type,
                selected,
                sizes,
                report.score_threshold,
                max_detections,
            )
            report.marked[iou_type] = marked
            report.confusion[iou_type] = confusion_matrix(marked, report.category_ids)
    log.debug("COCOeval output:\n%s", output.getvalue())
    return report


def check_score_threshold(
    score_threshold: Any, calibration: tuple[str, float | None] | None = None
) -> None:
    """A number from 0 to 1, per-category numbers, or ``calibrated`` (with ``calibration``
    asked for); else a :class:`~mrcnn.errors.ConfigError` naming the key."""
    if isinstance(score_threshold, dict):
        return
    if score_threshold == CALIBRATED and calibration is not None:
        return
    if (
        isinstance(score_threshold, bool)
        or not isinstance(score_threshold, int | float)
        or not 0 <= score_threshold <= 1
    ):
        raise ConfigError(
            f"evaluation.score_threshold={score_threshold!r}: give a score from 0 to 1, or "
            "calibrated (the confusion matrix and the worst images count detections scored at "
            "least this)."
        )


def _rle_ground_truth(ground_truth: dict, sizes: dict[int, tuple[int, int]]) -> dict:
    """The ground truth with every segmentation as an RLE (polygons rasterised)."""
    annotations = [
        {**a, "segmentation": bytes_rle(a["segmentation"], sizes.get(a["image_id"]))}
        for a in ground_truth["annotations"]
    ]
    return {**ground_truth, "annotations": annotations}


def _mark_images(
    ground_truth: dict,
    prepared: list[dict],
    iou_type: str,
    image_ids: Sequence[int],
    sizes: dict[int, tuple[int, int]],
    score_threshold: float | dict[int, float],
    max_detections: int,
) -> dict[int, list[Marked]]:
    """Every evaluated image's instances marked by :func:`~mrcnn.evaluation.diagnostics.
    match_image`, from the results ``loadRes`` was given (RLE masks) and the ground truth."""
    wanted = set(image_ids)
    gts: dict[int, list[dict]] = {i: [] for i in image_ids}
    for ann in ground_truth["annotations"]:
        if ann["image_id"] not in wanted:
            continue
        ann = dict(ann)
        if iou_type == "segm":
            ann["segmentation"] = bytes_rle(ann["segmentation"], sizes.get(ann["image_id"]))
        else:
            ann.pop("segmentation", None)
        gts[ann["image_id"]].append(ann)
    dts: dict[int, list[dict]] = {i: [] for i in image_ids}
    for result in prepared:
        if result["image_id"] in wanted:
            if "bbox" not in result:
                result = {**result, "bbox": mask_util.toBbox(result["segmentation"]).tolist()}
            dts[result["image_id"]].append(result)
    marked = {}
    for image_id in image_ids:
        # COCOeval counts only the best max_detections of an image; so does the matrix.
        kept = sorted(dts[image_id], key=lambda d: -d["score"])[:max_detections]
        marked[image_id] = match_image(gts[image_id], kept, iou_type, score_threshold)
    return marked


def _mean_precision(precision: np.ndarray) -> float:
    """COCOeval's average of a slice of its precision array (-1 entries: nothing to measure)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0


def _per_class_ap(evaluator: Any, gt: Any) -> dict[str, dict[str, float]]:
    """AP and AP50 of every category, all areas, at the last maxDets (detectron2's recipe)."""
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall, class, area, maxDets]
    iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
    per_class = {}
    for index, category_id in enumerate(evaluator.params.catIds):
        name = str(gt.cats[category_id]["name"])
        per_class[name] = {
            "AP": _mean_precision(precision[:, :, index, 0, -1]),
            "AP50": _mean_precision(precision[iou50, :, index, 0, -1]),
        }
    return per_class
