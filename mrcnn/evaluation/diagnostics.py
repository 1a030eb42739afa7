"""Where a model fails: per-class precision-recall curves, a confusion matrix with a background
row and column, and every image's errors (missed, false positive, wrong class).

All of it comes out of :func:`mrcnn.evaluation.cocoeval.coco_report`, the one evaluation path:

- **PR curves** are read from COCOeval's own ``eval["precision"]`` array ``[T, R, K, A, M]``
  (all areas, the last ``maxDets``), as detectron2 reads per-class AP from it: one curve per
  class at IoU 0.5 (what YOLO's ``PR_curve.png`` shows) and the mean over IoU 0.50:0.95 (COCO
  AP). The mean of a curve's 101 points is that class's AP50 / AP, exactly.
- **The confusion matrix** needs class-agnostic matching, which COCOeval does not do (it
  matches within a class only). faster-coco-eval's ``PreviewResults.compute_confusion_matrix``
  does, but only by running a second, class-agnostic COCOeval on deep copies of both data sets
  with one IoU threshold, no crowd handling and no per-image error list to draw. So a small
  matcher here does it from the same detections: per image, detections at or above
  ``score_threshold`` (default 0.5), best score first, take the unmatched ground truth of their
  own class with the highest IoU >= 0.5 (COCOeval's rule at IoU 0.5); the rest then take any
  unmatched ground truth with IoU >= 0.5, as a *wrong class*. Detections left are *false
  positives* (true background), unless they lie on a crowd region (IoU as COCOeval computes it
  for crowds), which is ignored; ground truth left is *missed* (predicted background). Box IoU
  for ``bbox``, mask IoU for ``segm`` (both by pycocotools).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

# IoU at which a detection and a ground-truth instance are the same object (confusion matrix).
CONFUSION_IOU = 0.5
ERROR_KINDS = ("missed", "false positive", "wrong class")
KINDS = ("correct", *ERROR_KINDS)


@dataclass
class Marked:
    """One instance of an image, marked by what the matcher made of it.

    ``category_id`` is the class shown: the ground truth's for ``missed``, the prediction's
    otherwise; ``true_category_id`` is the ground truth's for ``wrong class`` and ``correct``.
    ``bbox`` is COCO xywh; ``segmentation`` a pycocotools RLE (``segm`` only); ``score`` is None
    for ground truth.
    """

    kind: str
    category_id: int
    bbox: list[float]
    segmentation: dict | None = None
    score: float | None = None
    true_category_id: int | None = None


def error_counts(marked: Sequence[Marked]) -> dict[str, int]:
    """How many instances of each kind (``correct``, ``missed``, ...), every kind present."""
    counts = Counter(m.kind for m in marked)
    return {kind: counts.get(kind, 0) for kind in KINDS}


def num_errors(marked: Sequence[Marked]) -> int:
    """Missed + false positives + wrong class."""
    return sum(1 for m in marked if m.kind != "correct")


def match_image(
    ground_truth: Sequence[dict],
    detections: Sequence[dict],
    iou_type: str,
    score_threshold: float | Mapping[int, float] = 0.5,
    iou_threshold: float = CONFUSION_IOU,
) -> list[Marked]:
    """Mark one image's ground truth and detections (see the module docstring for the rule).

    ``ground_truth``: COCO annotations with ``bbox``, ``category_id``, ``iscrowd`` and, for
    ``segm``, ``segmentation`` as a pycocotools RLE; ``detections``: COCO results likewise, with
    ``score``. Crowd (or ``ignore``) ground truth is never missed. Returns the missed ground
    truth, then the detections at or above ``score_threshold`` (one number, or one per category
    id: calibrated thresholds), best score first.
    """
    key = "segmentation" if iou_type == "segm" else "bbox"
    dets = sorted(
        (d for d in detections if d["score"] >= threshold_of(score_threshold, d["category_id"])),
        key=lambda d: -d["score"],
    )
    crowd = [g for g in ground_truth if g.get("iscrowd", 0) or g.get("ignore", 0)]
    gts = [g for g in ground_truth if not (g.get("iscrowd", 0) or g.get("ignore", 0))]
    ious = np.zeros((len(dets), len(gts)))
    if dets and gts:
        ious = np.asarray(
            mask_util.iou([d[key] for d in dets], [g[key] for g in gts], [0] * len(gts))
        ).reshape(len(dets), len(gts))
    gt_of: dict[int, int] = {}  # detection index -> ground-truth index
    taken: set[int] = set()
    for same_class in (True, False):
        for d, det in enumerate(dets):
            if d in gt_of:
                continue
            best, best_iou = -1, iou_threshold
            for g, gt in enumerate(gts):
                if g in taken or (same_class and gt["category_id"] != det["category_id"]):
                    continue
                if ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best >= 0:
                gt_of[d] = best
                taken.add(best)
    on_crowd = np.zeros(len(dets), dtype=bool)
    if dets and crowd:
        crowd_ious = np.asarray(
            mask_util.iou([d[key] for d in dets], [c[key] for c in crowd], [1] * len(crowd))
        ).reshape(len(dets), len(crowd))
        on_crowd = (crowd_ious >= iou_threshold).any(axis=1)

    def geometry(ann: dict) -> dict:
        # Boxes only for bbox: loadRes gives box results a box-shaped polygon "segmentation".
        mask = ann.get("segmentation") if iou_type == "segm" else None
        return {"bbox": list(ann["bbox"]), "segmentation": mask}

    marked = [
        Marked("missed", int(gt["category_id"]), **geometry(gt))
        for g, gt in enumerate(gts)
        if g not in taken
    ]
    for d, det in enumerate(dets):
        if d in gt_of:
            truth = int(gts[gt_of[d]]["category_id"])
            kind = "correct" if truth == det["category_id"] else "wrong class"
        elif on_crowd[d]:
            continue  # COCOeval ignores detections on crowd regions; so does the matrix
        else:
            kind, truth = "false positive", None
        marked.append(
            Marked(
                kind,
                int(det["category_id"]),
                score=float(det["score"]),
                true_category_id=truth,
                **geometry(det),
            )
        )
    return marked


def threshold_of(score_threshold: float | Mapping[int, float], category_id: int) -> float:
    """The score threshold of a category: the one number, or its own (0.5 if it has none)."""
    if isinstance(score_threshold, Mapping):
        return float(score_threshold.get(int(category_id), 0.5))
    return float(score_threshold)


def threshold_text(score_threshold: float | Mapping[int, float]) -> str:
    """``0.5``, or ``calibrated`` for per-class thresholds (titles, the JSON)."""
    return "calibrated" if isinstance(score_threshold, Mapping) else f"{score_threshold:g}"


def confusion_matrix(
    marked_per_image: dict[int, list[Marked]], category_ids: Sequence[int]
) -> np.ndarray:
    """Counts ``[K+1, K+1]``: rows are the ground truth's class, columns the prediction's, in
    ``category_ids`` order, background last (missed ground truth: background column; false
    positives: background row)."""
    index = {int(c): i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    for marked in marked_per_image.values():
        for m in marked:
            if m.kind == "missed":
                matrix[index[m.category_id], background] += 1
            elif m.kind == "false positive":
                matrix[background, index[m.category_id]] += 1
            else:
                matrix[index[m.true_category_id], index[m.category_id]] += 1
    return matrix


@dataclass
class PRCurve:
    """One class's precision at COCOeval's recall points: at IoU 0.5 and the mean over IoU
    0.50:0.95. ``ap50`` / ``ap`` are the curves' means (COCO's 101-point AP), -1 without
    ground truth."""

    name: str
    recall: np.ndarray
    precision50: np.ndarray
    precision: np.ndarray
    ap50: float
    ap: float


def pr_curves(
    precision: np.ndarray,
    recall_thresholds: Sequence[float],
    iou_thresholds: Sequence[float],
    class_names: Sequence[str],
) -> list[PRCurve]:
    """Per-class PR curves from COCOeval's precision ``[T, R, K]`` (one area, one maxDets);
    classes without ground truth (precision -1) are left out."""
    iou50 = int(np.argmin(np.abs(np.asarray(iou_thresholds) - 0.5)))
    recall = np.asarray(recall_thresholds, dtype=np.float64)
    curves = []
    for k, name in enumerate(class_names):
        per_iou = precision[:, :, k]
        if not (per_iou > -1).any():
            continue
        per_iou = np.clip(per_iou, 0, None)
        mean = per_iou.mean(axis=0)
        curves.append(
            PRCurve(
                name, recall, per_iou[iou50], mean, float(per_iou[iou50].mean()), float(mean.mean())
            )
        )
    return curves


def confusion_json(
    matrix: np.ndarray, class_names: Sequence[str], score_threshold: float | Mapping[int, float]
) -> dict[str, Any]:
    """The confusion matrix as metrics.json holds it (with the totals of each kind)."""
    k = len(class_names)
    return {
        "classes": [*class_names, "background"],
        "rows": "ground truth",
        "columns": "prediction",
        "iou_threshold": CONFUSION_IOU,
        "score_threshold": (
            score_threshold if not isinstance(score_threshold, Mapping) else "calibrated"
        ),
        "matrix": matrix.tolist(),
        "totals": {
            "correct": int(np.trace(matrix[:k, :k])),
            "missed": int(matrix[:k, k].sum()),
            "false positive": int(matrix[k, :k].sum()),
            "wrong class": int(matrix[:k, :k].sum() - np.trace(matrix[:k, :k])),
        },
    }


def worst_images(marked_per_image: dict[int, list[Marked]], count: int) -> list[int]:
    """Ids of the ``count`` images with the most errors (ties: lower id first); images
    without errors are left out."""
    ranked = sorted(marked_per_image.items(), key=lambda item: (-num_errors(item[1]), item[0]))
    return [image_id for image_id, marked in ranked[:count] if num_errors(marked) > 0]
