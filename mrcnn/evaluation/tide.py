"""Which errors cost the AP: TIDE's six error types and their dAP (Bolya et al., ECCV 2020).

TIDE matches each image's detections to the ground truth at IoU 0.5 as COCOeval does (within a
class, best score first), then gives every false positive one cause, in this order:

- ``Loc`` (localisation): the right class, a ground truth with 0.1 <= IoU <= 0.5;
- ``Cls`` (classification): another class's ground truth with IoU >= 0.5;
- ``Dupe`` (duplicate): the right class, IoU >= 0.5, but that ground truth was already taken by a
  higher-scored detection;
- ``Bkg`` (background): IoU <= 0.1 with every ground truth (or an image with none);
- ``Both``: none of the above (wrong class and poorly placed);

and a ground truth that no detection found and that no ``Loc``/``Cls`` error points at is
``Miss``. Each error type's **dAP** is how much AP50 would rise if exactly those errors were
fixed and nothing else: a ``Loc``/``Cls`` error becomes a true positive (the best-scored one per
ground truth; the others are removed), ``Dupe``/``Bkg``/``Both`` false positives are removed,
and a missed ground truth is removed from the count. Two "special" ones: ``FalsePos`` (every
false positive scored 0) and ``FalseNeg`` (every missed object removed).

This is the ``tidecv`` package's algorithm (1.0.1), written again here on numpy and pycocotools:
tidecv pulls OpenCV, pandas and seaborn for its plots, and is not maintained since 2020. The
numbers equal tidecv's on the same files, its quirks included (a class with detections but no
ground truth counts as AP 0; crowd regions ignore a detection only at IoU > 0.5), tested in
``tests/evaluation/test_tide.py``. AP and dAP are in percent, as TIDE prints them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
# What each error type means, for tables and the JSON.
ERROR_NAMES = {
    "Cls": "classification: right place, wrong class",
    "Loc": "localisation: right class, IoU 0.1-0.5",
    "Both": "wrong class and poorly placed",
    "Dupe": "duplicate of a found object",
    "Bkg": "background: no object there",
    "Miss": "missed object",
}
# The 101 recall points, computed as tidecv computes them (x / 100, not linspace: the same floats).
RECALL_STEPS = np.array([x / 100 for x in range(101)])
POS_IOU = 0.5
BACKGROUND_IOU = 0.1


@dataclass
class _Point:
    """One detection's (or fixed error's) data point in a class's precision-recall list."""

    score: float
    correct: bool


class _ClassAP:
    """The data points and ground-truth count of one class (tidecv's ``APDataObject``)."""

    def __init__(self) -> None:
        self.points: dict[int, _Point] = {}
        self.num_gt = 0

    def empty(self) -> bool:
        return not self.points and self.num_gt == 0

    def ap(self) -> float:
        """101-point interpolated AP in percent; 0 without ground truth (tidecv's rule)."""
        if self.num_gt == 0 or not self.points:
            return 0.0
        points = sorted(self.points.values(), key=lambda p: -p.score)
        correct = np.array([p.correct for p in points], dtype=bool)
        true_positives = np.cumsum(correct)
        precision = true_positives / np.arange(1, len(points) + 1)
        recall = true_positives / self.num_gt
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, RECALL_STEPS, side="left")
        values = np.where(at < len(points), precision[np.minimum(at, len(points) - 1)], 0.0)
        return sum(values.tolist()) / len(values) * 100  # summed in order, as tidecv does


class _ClassedAP:
    def __init__(self) -> None:
        self.classes: dict[int, _ClassAP] = defaultdict(_ClassAP)

    def mean_ap(self) -> float:
        aps = [c.ap() for c in self.classes.values() if not c.empty()]
        return sum(aps) / len(aps) if aps else 0.0


@dataclass
class _Error:
    """One error: its type, the detection it is (``pred``) or the ground truth (``Miss``), what
    it was (``original``: class and point, None for an ignored detection) and what fixing it
    makes it (``fixed``)."""

    kind: str
    id: int
    original: tuple[int, _Point] | None
    fix: Any  # callable: () -> (class, _Point | int) | None


@dataclass
class TideErrors:
    """TIDE's breakdown of one IoU type: ``ap`` (AP50, percent), ``main`` and ``special`` dAP
    per error type, ``counts`` per main type. ``points`` / ``num_gt``: per category id, every
    scored detection as ``(score, correct)`` and the ground-truth count (what threshold
    calibration fits on)."""

    iou_type: str
    ap: float
    main: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    points: dict[int, list[tuple[float, bool]]] = field(default_factory=dict, repr=False)
    num_gt: dict[int, int] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "AP50": self.ap,
            "dAP": self.main,
            "special_dAP": self.special,
            "counts": self.counts,
        }


def tide_errors(
    ground_truth: dict,
    results: Sequence[dict],
    iou_type: str,
    image_ids: Iterable[int] | None = None,
    max_detections: int = 100,
) -> TideErrors:
    """TIDE's error breakdown (see the module doc) of ``results`` against ``ground_truth``.

    ``iou_type``: ``bbox`` (boxes, COCO xywh) or ``segm`` (masks: RLEs in both, as
    :func:`~mrcnn.evaluation.cocoeval.coco_report` prepares them). Only ``image_ids`` count
    (default: every ground-truth image).
    """
    key = "bbox" if iou_type == "bbox" else "segmentation"
    wanted = [im["id"] for im in ground_truth["images"]]
    if image_ids is not None:
        chosen = set(image_ids)
        wanted = [i for i in wanted if i in chosen]
    gts: dict[int, list[dict]] = {i: [] for i in wanted}
    for ann in ground_truth["annotations"]:
        if ann["image_id"] in gts:
            gts[ann["image_id"]].append(ann)
    dts: dict[int, list[dict]] = {i: [] for i in wanted}
    for result in results:
        if result["image_id"] in dts:
            dts[result["image_id"]].append(result)
    run = _Run(key, max_detections)
    next_id = 0
    for image_id in wanted:
        truths = [
            {
                "_id": n,
                "class": a["category_id"],
                "geometry": a[key],
                "ignore": bool(a.get("iscrowd", 0)),
            }
            for n, a in enumerate(gts[image_id], start=next_id)
        ]
        next_id += len(truths)
        preds = [
            {"_id": n, "class": d["category_id"], "geometry": d[key], "score": float(d["score"])}
            for n, d in enumerate(dts[image_id], start=next_id)
        ]
        next_id += len(preds)
        run.image(preds, truths)
    return run.summary(iou_type)


class _Run:
    """tidecv's ``TIDERun`` for one IoU threshold (0.5), fed image by image."""

    def __init__(self, key: str, max_detections: int) -> None:
        self.key = key
        self.max_detections = max_detections
        self.ap_data = _ClassedAP()
        self.errors: list[_Error] = []
        self.false_negatives: dict[int, int] = defaultdict(int)

    def image(self, preds: list[dict], truths: list[dict]) -> None:
        for truth in truths:
            if not truth["ignore"]:
                self.ap_data.classes[truth["class"]].num_gt += 1
        gt = [t for t in truths if not t["ignore"]]
        ignore = [t for t in truths if t["ignore"]]
        for truth in gt:
            truth.update(used=False, usable=False, best_score=-1.0, best_id=None)
        if not preds:
            for truth in gt:
                self._missed(truth)
            return
        preds = sorted(preds, key=lambda p: -p["score"])[: self.max_detections]
        geometry = [p["geometry"] for p in preds]
        iou = np.zeros((len(preds), len(gt)))
        if gt:
            iou = np.asarray(
                mask_util.iou(geometry, [t["geometry"] for t in gt], [0] * len(gt))
            ).reshape(len(preds), len(gt))
        same_class = np.array([[p["class"] == t["class"] for t in gt] for p in preds], dtype=bool)
        same_class = same_class.reshape(len(preds), len(gt))
        class_iou = iou * same_class
        for pred in preds:
            pred["used"] = False
        if gt:
            buffer = class_iou.copy()
            for p, pred in enumerate(preds):
                g = int(np.argmax(buffer[p]))
                if buffer[p, g] >= POS_IOU:
                    pred["used"], gt[g]["used"] = True, True
                    gt[g]["matched_with"] = pred["_id"]
                    buffer[:, g] = 0
        for region in ignore:
            crowd = np.asarray(mask_util.iou(geometry, [region["geometry"]], [1])).reshape(-1)
            for p, pred in enumerate(preds):
                if (
                    pred["used"] is False
                    and crowd[p] > POS_IOU
                    and region["class"] == pred["class"]
                ):
                    pred["used"] = None  # on a crowd region: neither right nor wrong
        for pred in preds:
            if pred["used"] is not None:
                self.ap_data.classes[pred["class"]].points[pred["_id"]] = _Point(
                    pred["score"], bool(pred["used"])
                )
        if gt:
            used = np.array([t["used"] for t in gt], dtype=bool)[None, :]
            other_class_iou = iou * ~same_class
            used_class_iou = iou * used * same_class
        for p, pred in enumerate(preds):
            if pred["used"] is True:
                continue
            if not gt:
                self._add("Bkg", pred)
                continue
            g = int(class_iou[p].argmax())
            if BACKGROUND_IOU <= class_iou[p, g] <= POS_IOU:
                self._add_fixable("Loc", pred, gt[g], pred["class"])
                continue
            g = int(other_class_iou[p].argmax())
            if other_class_iou[p, g] >= POS_IOU:
                self._add_fixable("Cls", pred, gt[g], gt[g]["class"])
                continue
            g = int(used_class_iou[p].argmax())
            if used_class_iou[p, g] >= POS_IOU:
                self._add("Dupe", pred)
                continue
            g = int(iou[p].argmax())
            self._add("Bkg" if iou[p, g] <= BACKGROUND_IOU else "Both", pred)
        for truth in gt:
            if not truth["used"]:
                self._missed(truth, error=not truth["usable"])

    def _original(self, pred: dict) -> tuple[int, _Point] | None:
        if pred["used"] is None:
            return None
        return pred["class"], _Point(pred["score"], False)

    def _add(self, kind: str, pred: dict) -> None:
        self.errors.append(_Error(kind, pred["_id"], self._original(pred), lambda: None))

    def _add_fixable(self, kind: str, pred: dict, truth: dict, fixed_class: int) -> None:
        """A Loc or Cls error: fixed, it is a true positive of ``fixed_class`` if it is the
        best-scored such error of a ground truth no detection found (tidecv's BestGTMatch)."""
        if not truth["used"]:
            truth["usable"] = True
            if truth["best_score"] < pred["score"]:
                truth["best_score"], truth["best_id"] = pred["score"], pred["_id"]

        def fix() -> tuple[int, _Point] | None:
            if truth["used"] or truth["best_id"] != pred["_id"]:
                return None
            return fixed_class, _Point(pred["score"], True)

        self.errors.append(_Error(kind, pred["_id"], self._original(pred), fix))

    def _missed(self, truth: dict, error: bool = True) -> None:
        self.false_negatives[truth["class"]] += 1
        if error:
            fixed = (truth["class"], -1)
            self.errors.append(_Error("Miss", truth["_id"], None, lambda: fixed))

    def _fixed(self, kinds: set[str], rescore: bool = False, drop_misses: bool = False) -> float:
        """mAP with the errors of ``kinds`` fixed (tidecv's ``fix_errors``)."""
        num_gt = {c: data.num_gt for c, data in self.ap_data.classes.items()}
        fixed = _ClassedAP()
        for error in self.errors:
            original = error.original
            if error.kind in kinds:
                original = error.fixed
                if original is not None and isinstance(original[1], int):
                    num_gt[original[0]] += original[1]
                    original = None
            if original is not None:
                cls, point = original
                if rescore:
                    point = _Point(1.0 if point.correct else 0.0, point.correct)
                fixed.classes[cls].points[error.id] = point
        for cls in num_gt:
            for point_id, point in self.ap_data.classes[cls].points.items():
                if point.correct:
                    score = 1.0 if rescore else point.score
                    fixed.classes[cls].points[point_id] = _Point(score, True)
        for cls, count in num_gt.items():
            if drop_misses:
                count -= self.false_negatives.get(cls, 0)
            fixed.classes[cls].num_gt += count
        return fixed.mean_ap()

    def summary(self, iou_type: str) -> TideErrors:
        for error in self.errors:
            error.fixed = error.fix()
        ap = self.ap_data.mean_ap() if self.ap_data.classes else 0.0
        main = {kind: max(self._fixed({kind}) - ap, 0.0) for kind in MAIN_ERRORS}
        special = {
            "FalsePos": self._fixed(set(), rescore=True) - ap,
            "FalseNeg": self._fixed(set(), drop_misses=True) - ap,
        }
        counts = {kind: sum(e.kind == kind for e in self.errors) for kind in MAIN_ERRORS}
        points = {
            cls: [(p.score, p.correct) for p in data.points.values()]
            for cls, data in self.ap_data.classes.items()
        }
        num_gt = {cls: data.num_gt for cls, data in self.ap_data.classes.items()}
        return TideErrors(iou_type, ap, main, special, counts, points, num_gt)
