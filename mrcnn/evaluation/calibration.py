"""Calibrated score thresholds: one per class, fitted on the validation split for a stated goal.

One global ``score_threshold`` drops a rare class's true detections (its scores run lower) or
floods a common class with false ones. :func:`fit_thresholds` picks, per class, the score
threshold that best meets ``goal`` on the validation split: ``f1`` (the default) maximises
F1 = 2PR / (P + R), ``precision`` takes the lowest threshold whose precision reaches ``target``
(so the most recall at that precision). A detection is correct when it matches a ground truth of
its class at IoU >= 0.5, COCOeval's matching (crowd regions ignored), taken from the TIDE pass of
the same evaluation (:mod:`mrcnn.evaluation.tide`), masks when there are masks.

The thresholds travel with the model: the end of training and ``mrcnn evaluate`` store them in
the checkpoint (key :data:`CHECKPOINT_KEY`), ``mrcnn export`` copies them to the sidecar, and
``evaluation.score_threshold=calibrated`` applies them (``predict``, ``evaluate``, validation
pictures). A class the fit could not serve (no ground truth in the split, or no correct
detection) keeps :data:`FALLBACK`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mrcnn.data.categories import Categories
from mrcnn.errors import ConfigError, UserError

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

CALIBRATED = "calibrated"
CHECKPOINT_KEY = "mrcnn_calibration"
GOALS = ("f1", "precision")
FALLBACK = 0.5  # a class without a fit: the default global threshold


class CalibrationError(UserError, ValueError):
    """``score_threshold=calibrated`` for a model that has no calibrated thresholds."""


@dataclass
class ClassThreshold:
    """One class's fitted threshold and what it gives on the split it was fitted on."""

    name: str
    category_id: int
    threshold: float
    precision: float
    recall: float
    f1: float
    num_gt: int
    fitted: bool = True


@dataclass
class Calibration:
    """Per-class thresholds, the goal they were fitted for and the IoU type they were matched on."""

    goal: str
    iou_type: str
    classes: list[ClassThreshold] = field(default_factory=list)
    target: float | None = None
    tta: list[str] | None = None  # the test-time views the detections came from (None: none)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (checkpoints load with ``weights_only=True``, sidecars are json)."""
        return {
            "goal": self.goal,
            "target": self.target,
            "iou_type": self.iou_type,
            "tta": self.tta,
            "classes": [asdict(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            goal=str(data["goal"]),
            iou_type=str(data["iou_type"]),
            classes=[ClassThreshold(**c) for c in data["classes"]],
            target=data.get("target"),
            tta=data.get("tta"),
        )

    def by_category_id(self) -> dict[int, float]:
        return {c.category_id: c.threshold for c in self.classes}

    def by_label(self, categories: Categories) -> dict[int, float]:
        """Thresholds keyed by the model's labels 1..K (what inference sees); a class of the
        model the calibration does not name keeps :data:`FALLBACK`."""
        by_id = self.by_category_id()
        return {
            label: by_id.get(categories.dataset_id(label), FALLBACK)
            for label in range(1, categories.num_classes)
        }


def calibration_goal(evaluation: Mapping[str, Any]) -> tuple[str, float | None]:
    """``(goal, precision target)`` from the ``evaluation`` config (``calibration.goal``,
    ``calibration.precision``), checked."""
    node = evaluation.get("calibration") or {}
    goal, target = str(node.get("goal", "f1")), node.get("precision", 0.9)
    check_goal(goal, target)
    return goal, (float(target) if target is not None else None)


def fitting(evaluation: Mapping[str, Any]) -> tuple[bool, tuple[str, float | None] | None]:
    """``(tide, calibration goal)`` of an evaluation: both from ``evaluation.tide`` (true by
    default; the thresholds are fitted from TIDE's matching, so false turns off both)."""
    if evaluation.get("tide", True):
        return True, calibration_goal(evaluation)
    if evaluation.get("score_threshold") == CALIBRATED:
        raise ConfigError(
            "evaluation.score_threshold=calibrated needs evaluation.tide=true: the thresholds "
            "are fitted from its matching. Drop evaluation.tide=false, or give a number."
        )
    return False, None


def check_goal(goal: str, target: float | None) -> None:
    """Raise :class:`~mrcnn.errors.ConfigError` naming the calibration key that is wrong."""
    if goal not in GOALS:
        raise ConfigError(
            f"evaluation.calibration.goal={goal!r}: choose one of {list(GOALS)} (f1: the "
            "threshold with the best F1 per class; precision: the lowest threshold reaching "
            "evaluation.calibration.precision)."
        )
    if goal == "precision" and not (isinstance(target, int | float) and 0 < target <= 1):
        raise ConfigError(
            f"evaluation.calibration.precision={target!r}: give the precision to reach, above 0 "
            "and at most 1 (e.g. 0.9)."
        )


def fit_class(
    points: Sequence[tuple[float, bool]], num_gt: int, goal: str = "f1", target: float = 0.9
) -> tuple[float, float, float, float, bool]:
    """``(threshold, precision, recall, f1, fitted)`` of one class from its detections
    ``(score, correct)`` and its ground-truth count (see the module doc)."""
    if num_gt == 0 or not any(correct for _, correct in points):
        return FALLBACK, 0.0, 0.0, 0.0, False
    ordered = sorted(points, key=lambda p: -p[0])
    scores = np.array([s for s, _ in ordered])
    true_positives = np.cumsum([c for _, c in ordered])
    kept = np.arange(1, len(ordered) + 1)
    # A threshold keeps every detection scored at least as high: only the last of equal scores.
    ends = np.append(scores[1:] != scores[:-1], True)
    precision = (true_positives / kept)[ends]
    recall = (true_positives / num_gt)[ends]
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    thresholds = scores[ends]
    if goal == "f1":
        best = int(np.argmax(f1))  # the first maximum: the highest such threshold
    else:
        reaching = np.flatnonzero(precision >= target)
        best = int(reaching[-1]) if len(reaching) else int(np.argmax(precision))
    return (
        float(thresholds[best]),
        float(precision[best]),
        float(recall[best]),
        float(f1[best]),
        True,
    )


def fit_thresholds(
    points: Mapping[int, Sequence[tuple[float, bool]]],
    num_gt: Mapping[int, int],
    class_names: Mapping[int, str],
    iou_type: str,
    goal: str = "f1",
    target: float | None = 0.9,
) -> Calibration:
    """A :class:`Calibration` for every class of ``class_names`` (category id -> name)."""
    check_goal(goal, target)
    calibration = Calibration(goal, iou_type, target=float(target) if goal == "precision" else None)
    for category_id, name in class_names.items():
        threshold, precision, recall, f1, fitted = fit_class(
            points.get(category_id, []), num_gt.get(category_id, 0), goal, target or 0.9
        )
        calibration.classes.append(
            ClassThreshold(
                name,
                int(category_id),
                threshold,
                precision,
                recall,
                f1,
                int(num_gt.get(category_id, 0)),
                fitted,
            )
        )
    return calibration


def format_calibration(calibration: Calibration) -> str:
    """The thresholds as a table, with each class's precision and recall at its threshold."""
    goal = (
        "best F1"
        if calibration.goal == "f1"
        else f"lowest threshold with precision >= {calibration.target:g}"
    )
    width = max([len(c.name) for c in calibration.classes] + [5])
    lines = [
        f"Calibrated score thresholds ({goal}; {calibration.iou_type}, IoU 0.5):",
        f"{'class':<{width}}  threshold  precision  recall     F1  objects",
    ]
    for c in calibration.classes:
        note = "" if c.fitted else f"  (no fit: {FALLBACK:g})"
        lines.append(
            f"{c.name:<{width}}  {c.threshold:9.3f}  {c.precision:9.3f}  {c.recall:6.3f}  "
            f"{c.f1:5.3f}  {c.num_gt:7d}{note}"
        )
    return "\n".join(lines)


def store_in_checkpoint(path: str | Path, calibration: Calibration) -> None:
    """Write the thresholds into a checkpoint file (atomically: a temporary file, then rename)."""
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    data[CHECKPOINT_KEY] = calibration.to_dict()
    temporary = path.with_name(f".{path.name}.calibrating")
    torch.save(data, temporary)
    temporary.replace(path)


def resolve_score_threshold(
    value: Any, stored: Mapping[str, Any] | None, categories: Categories, source: str
) -> float | dict[int, float]:
    """``evaluation.score_threshold`` as inference applies it: a number, or for ``calibrated``
    the model's per-label thresholds (``stored``: the calibration saved with it)."""
    if value == CALIBRATED:
        if not stored:
            raise CalibrationError(
                f"evaluation.score_threshold=calibrated, but {source} has no calibrated "
                "thresholds. Fit them on the validation split with `mrcnn evaluate "
                f"model={source}` (it stores them in the model file), or give a number."
            )
        return Calibration.from_dict(stored).by_label(categories)
    return check_threshold(value)


def label_thresholds(score_threshold: float | dict[int, float], labels: Tensor) -> Tensor:
    """The score threshold of each detection: the one number, or its label's own."""
    if not isinstance(score_threshold, dict):
        return torch.full(labels.shape, float(score_threshold))
    table = torch.full(
        (max([*score_threshold, int(labels.max()) if labels.numel() else 0]) + 1,), FALLBACK
    )
    for label, value in score_threshold.items():
        table[int(label)] = float(value)
    return table[labels.cpu().long()]


def check_threshold(value: Any) -> float:
    """A global score threshold from 0 to 1, or a :class:`ConfigError` naming the key."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(
            f"evaluation.score_threshold={value!r}: give a score from 0 to 1, or calibrated "
            "(each class's threshold fitted on the validation split: mrcnn evaluate stores them)."
        )
    return float(value)
