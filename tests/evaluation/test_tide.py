"""TIDE's error breakdown: hand-built errors land in the expected type with the expected dAP, and
the numbers equal the ``tidecv`` package's on the same files (coco128, crowd regions included)."""

import json
from pathlib import Path

import pytest

from mrcnn.evaluation.cocoeval import coco_report
from mrcnn.evaluation.tide import MAIN_ERRORS, tide_errors
from tests.evaluation.coco_fakes import results_from_ground_truth

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def ground_truth(*boxes_and_classes) -> dict:
    """One 100x100 image with these (box xywh, category id) objects."""
    annotations = [
        {
            "id": n,
            "image_id": 1,
            "category_id": c,
            "bbox": list(b),
            "area": b[2] * b[3],
            "iscrowd": 0,
        }
        for n, (b, c) in enumerate(boxes_and_classes, start=1)
    ]
    images = [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def det(box, category_id, score):
    return {"image_id": 1, "category_id": category_id, "bbox": list(box), "score": score}


def test_hand_built_errors_land_in_their_type():
    gt = ground_truth(
        ([0, 0, 20, 20], 1),  # A: found, then found again (a duplicate)
        ([50, 0, 20, 20], 2),  # B: detected as class 1 (classification)
        ([0, 50, 20, 20], 1),  # C: a box overlapping it by a third (localisation)
        ([60, 60, 10, 10], 2),  # D: never detected (missed)
    )
    results = [
        det([0, 0, 20, 20], 1, 0.9),  # A, correct
        det([1, 1, 20, 20], 1, 0.8),  # A again: duplicate
        det([50, 0, 20, 20], 1, 0.7),  # B with the wrong class
        det([10, 50, 20, 20], 1, 0.6),  # C: IoU 1/3
        det([85, 30, 10, 10], 2, 0.5),  # nothing there: background
        det([55, 55, 15, 15], 1, 0.4),  # on D (IoU 0.44): class and place both wrong
    ]
    errors = tide_errors(gt, results, "bbox")
    assert errors.counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 1, "Miss": 1}


def test_fixing_a_missed_object_gives_the_expected_dap():
    # Two objects of one class, one found with a perfect box: recall 0.5 at precision 1, so
    # COCO's 101-point AP50 is 51/101; fixing the miss (dropping it) gives AP 100.
    gt = ground_truth(([0, 0, 20, 20], 1), ([50, 50, 20, 20], 1))
    errors = tide_errors(gt, [det([0, 0, 20, 20], 1, 0.9)], "bbox")
    assert errors.ap == pytest.approx(100 * 51 / 101)
    assert errors.main["Miss"] == pytest.approx(100 - 100 * 51 / 101)
    assert errors.counts["Miss"] == 1
    assert all(errors.main[k] == 0 for k in MAIN_ERRORS if k != "Miss")
    assert errors.special["FalseNeg"] == pytest.approx(errors.main["Miss"])


def test_fixing_a_background_error_gives_the_expected_dap():
    # One object, found second: a background detection scored above it halves the precision
    # at recall 1 (AP50 = 0.5); removing it gives 100.
    gt = ground_truth(([0, 0, 20, 20], 1))
    results = [det([70, 70, 20, 20], 1, 0.9), det([0, 0, 20, 20], 1, 0.5)]
    errors = tide_errors(gt, results, "bbox")
    assert errors.ap == pytest.approx(50)
    assert errors.main["Bkg"] == pytest.approx(50)
    assert errors.special["FalsePos"] == pytest.approx(50)
    # Localisation: the same detection 1/3 overlapping instead is fixed into a true positive.
    errors = tide_errors(gt, [det([10, 0, 20, 20], 1, 0.9)], "bbox")
    assert errors.counts["Loc"] == 1 and errors.counts["Miss"] == 0
    assert errors.ap == 0 and errors.main["Loc"] == pytest.approx(100)


@pytest.fixture(scope="module")
def coco128_files(coco_gt_path, tmp_path_factory) -> tuple[Path, Path, dict, list]:
    gt = json.loads(coco_gt_path.read_text())
    results = results_from_ground_truth(gt)
    path = tmp_path_factory.mktemp("tide") / "results.json"
    path.write_text(json.dumps(results))
    return coco_gt_path, path, gt, results


@pytest.mark.parametrize(("iou_type", "mode"), [("bbox", "bbox"), ("segm", "mask")])
def test_the_breakdown_equals_tidecv_on_the_same_files(coco128_files, iou_type, mode):
    tidecv = pytest.importorskip("tidecv")  # the dev extra installs it
    gt_path, results_path, gt, results = coco128_files
    tide = tidecv.TIDE(mode=mode)
    tide.evaluate(
        tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(results_path)), name="r"
    )
    theirs_main, theirs_special = tide.get_main_errors()["r"], tide.get_special_errors()["r"]
    run = tide.runs["r"]
    # Through the one evaluation path, as evaluate computes it.
    report = coco_report(gt, results, iou_types=[iou_type], tide=True)
    mine = report.errors[iou_type]
    assert mine.ap == pytest.approx(run.ap, abs=1e-9)
    assert mine.main == pytest.approx(theirs_main, abs=1e-9)
    assert mine.special == pytest.approx(theirs_special, abs=1e-9)
    assert mine.counts == {e.short_name: n for e, n in run.count_errors().items()}
    assert sum(mine.counts.values()) > 300  # every kind of error is there to compare
    assert all(mine.counts[k] > 10 for k in MAIN_ERRORS)
