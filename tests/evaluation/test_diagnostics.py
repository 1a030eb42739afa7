"""Pictures of the errors: the confusion matrix counts and PR curves of a hand-built case."""

from __future__ import annotations

import numpy as np
import pytest

from mrcnn.evaluation import coco_report
from mrcnn.evaluation.coco import encode_masks
from mrcnn.evaluation.diagnostics import confusion_json, error_counts, worst_images

BACKENDS = ("pycocotools", "faster_coco_eval")
CAT, DOG = 1, 2


def rectangle(x: int, y: int, w: int, h: int, size: int = 100) -> dict:
    mask = np.zeros((1, size, size), dtype=bool)
    mask[0, y : y + h, x : x + w] = True
    return encode_masks(mask)[0]


def annotation(ann_id: int, image_id: int, category_id: int, box: list[int]) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(v) for v in box],
        "area": float(box[2] * box[3]),
        "segmentation": rectangle(*box),
        "iscrowd": 0,
    }


def detection(image_id: int, category_id: int, box: list[int], score: float) -> dict:
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(v) for v in box],
        "segmentation": rectangle(*box),
        "score": score,
    }


def hand_built() -> tuple[dict, list[dict]]:
    """Image 1: 2 correct, 1 missed (cat), 1 wrong class (dog taken for a cat), 1 false positive
    (a dog on background), 1 detection under the score threshold. Image 2: one correct cat."""
    ground_truth = {
        "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 100, "width": 100}],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
        "annotations": [
            annotation(1, 1, CAT, [10, 10, 20, 20]),  # found
            annotation(2, 1, DOG, [50, 50, 20, 20]),  # found
            annotation(3, 1, CAT, [10, 60, 20, 20]),  # missed
            annotation(4, 1, DOG, [70, 10, 20, 20]),  # taken for a cat
            annotation(5, 2, CAT, [30, 30, 30, 30]),  # found
        ],
    }
    results = [
        detection(1, CAT, [11, 10, 20, 20], 0.9),
        detection(1, DOG, [50, 51, 20, 20], 0.8),
        detection(1, CAT, [70, 11, 20, 19], 0.7),
        detection(1, DOG, [35, 30, 10, 10], 0.6),
        detection(1, CAT, [10, 60, 20, 20], 0.3),  # would find the missed cat: under 0.5
        detection(2, CAT, [30, 30, 30, 30], 0.95),
    ]
    return ground_truth, results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_confusion_matrix_has_the_known_counts(backend, iou_type):
    ground_truth, results = hand_built()
    report = coco_report(ground_truth, results, iou_types=[iou_type], backend=backend)
    assert report.class_names == ["cat", "dog"]
    # rows: ground truth cat, dog, background; columns: predicted cat, dog, background
    expected = [[2, 0, 1], [1, 1, 0], [0, 1, 0]]
    assert report.confusion[iou_type].tolist() == expected
    written = confusion_json(report.confusion[iou_type], report.class_names, 0.5)
    assert written["totals"] == {"correct": 3, "missed": 1, "false positive": 1, "wrong class": 1}
    assert written["classes"] == ["cat", "dog", "background"]
    counts = error_counts(report.marked[iou_type][1])
    assert counts == {"correct": 2, "missed": 1, "false positive": 1, "wrong class": 1}
    wrong = next(m for m in report.marked[iou_type][1] if m.kind == "wrong class")
    assert (wrong.category_id, wrong.true_category_id) == (CAT, DOG)
    assert worst_images(report.marked[iou_type], 5) == [1]  # image 2 has no error


def test_score_threshold_is_configurable():
    ground_truth, results = hand_built()
    report = coco_report(ground_truth, results, iou_types=["segm"], score_threshold=0.2)
    # The 0.3 detection now finds the cat that was missed.
    assert report.confusion["segm"].tolist() == [[3, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_detections_on_crowd_regions_are_neither_errors_nor_missed():
    ground_truth, results = hand_built()
    crowd = annotation(6, 2, DOG, [70, 70, 20, 20]) | {"iscrowd": 1}
    ground_truth["annotations"].append(crowd)
    results.append(detection(2, DOG, [72, 72, 10, 10], 0.9))
    report = coco_report(ground_truth, results, iou_types=["bbox"])
    assert report.confusion["bbox"].tolist() == [[2, 0, 1], [1, 1, 0], [0, 1, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pr_curves_agree_with_cocoeval_per_class_ap(backend):
    ground_truth, results = hand_built()
    report = coco_report(ground_truth, results, backend=backend)
    for iou_type in ("bbox", "segm"):
        curves = {c.name: c for c in report.pr_curves(iou_type)}
        assert set(curves) == {"cat", "dog"}
        for name, curve in curves.items():
            per_class = report.per_class[iou_type][name]
            assert curve.ap50 == pytest.approx(per_class["AP50"], abs=1e-12)
            assert curve.ap == pytest.approx(per_class["AP"], abs=1e-12)
            assert len(curve.recall) == len(curve.precision50) == 101
            # The area under the curve is the AP up to the 101-point sampling.
            area = np.trapezoid(curve.precision50, curve.recall)
            assert area == pytest.approx(per_class["AP50"], abs=0.02)
            assert np.all(np.diff(curve.precision50) <= 1e-12)  # COCOeval's interpolation
