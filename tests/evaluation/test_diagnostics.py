"""Pictures of the errors: the confusion matrix counts and PR curves of a hand-built case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mrcnn.builders import error_plot_types
from mrcnn.config import compose_config
from mrcnn.errors import ConfigError
from mrcnn.evaluation import coco_report
from mrcnn.evaluation.diagnostics import confusion_json, error_counts, worst_images
from mrcnn.evaluation.results import encode_masks
from mrcnn.train import train
from mrcnn.visualize import draw_marked
from tests.evaluation.coco_fakes import results_from_ground_truth
from tests.tiny import TINY, run_command
from tests.tiny import coco128_as_validation as coco_overrides

BACKENDS = ("pycocotools", "faster_coco_eval")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
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


def test_box_only_results_draw_boxes_only():
    ground_truth, results = hand_built()
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    report = coco_report(ground_truth, boxes_only, iou_types=["bbox"])
    marked = report.marked["bbox"][1]
    assert all(m.segmentation is None for m in marked)
    names = dict(zip(report.category_ids, report.class_names, strict=True))
    fp_only = [m for m in marked if m.kind == "false positive"]
    drawn = draw_marked(torch.zeros(3, 100, 100), fp_only, names)
    assert drawn.shape[0] == 3 and drawn.shape[2] == 400


def test_score_threshold_is_configurable():
    ground_truth, results = hand_built()
    report = coco_report(ground_truth, results, iou_types=["segm"], score_threshold=0.2)
    # The 0.3 detection now finds the cat that was missed.
    assert report.confusion["segm"].tolist() == [[3, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_score_threshold_outside_0_1_is_a_config_error():
    ground_truth, results = hand_built()
    with pytest.raises(ConfigError, match=r"evaluation.score_threshold=1\.5"):
        coco_report(ground_truth, results, score_threshold=1.5)


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


# --------------------------------------------------------------------------- the commands


def test_evaluate_writes_pictures_worst_images_and_confusion_counts(tmp_path, coco128_dir, coco_gt):
    results_path = tmp_path / "detections.json"
    results_path.write_text(json.dumps(results_from_ground_truth(coco_gt)))
    done = run_command(
        "mrcnn.evaluate",
        *coco_overrides(coco128_dir),
        f"results={results_path}",
        "worst=2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert "Pictures of the errors:" in done.stdout and str(run / "worst") in done.stdout
    for iou_type in ("bbox", "segm"):
        for name in (f"pr_curves_{iou_type}.png", f"confusion_matrix_{iou_type}.png"):
            with Image.open(run / name) as picture:
                assert picture.mode == "RGB" and 400 < min(picture.size) <= max(picture.size) < 2500
    written = json.loads((run / "metrics.json").read_text())
    confusion = written["confusion"]["segm"]
    matrix = np.array(confusion["matrix"])
    k = len(coco_gt["categories"])
    assert matrix.shape == (k + 1, k + 1) and confusion["classes"][-1] == "background"
    assert confusion["score_threshold"] == 0.5 and confusion["iou_threshold"] == 0.5
    totals = confusion["totals"]
    assert totals["correct"] > 0 and totals["missed"] > 0 and totals["false positive"] > 0
    assert totals["correct"] + totals["missed"] + totals["wrong class"] == matrix[:k].sum()

    worst = written["worst"]
    files = sorted((run / "worst").glob("*.png"))
    assert [Path(w["file"]).name for w in worst] == [f.name for f in files]
    assert len(files) == 2 and files[0].name.startswith("01_") and files[1].name.startswith("02_")
    errors = [w["missed"] + w["false positive"] + w["wrong class"] for w in worst]
    assert errors[0] >= errors[1] > 0
    file_names = {im["id"]: Path(im["file_name"]).stem for im in coco_gt["images"]}
    assert files[0].name == f"01_{file_names[worst[0]['image_id']]}.png"
    for file in files:
        with Image.open(file) as picture:
            assert picture.mode == "RGB" and min(picture.size) >= 384


def test_negative_worst_is_a_config_error(tmp_path):
    done = run_command("mrcnn.evaluate", "results=nowhere.json", "worst=-1", cwd=tmp_path)
    assert done.returncode == 1
    assert "worst=-1" in done.stderr and "0 or more" in done.stderr


def test_validation_logs_pr_curves_and_confusion_matrix(tmp_path):
    cfg = compose_config(
        [*TINY, "trainer.max_steps=2", "evaluation.error_plots=[bbox,segm]"],
        output_dir=tmp_path,
    )
    train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    tags = events.Reload().Tags()["images"]
    for iou_type in ("bbox", "segm"):
        for name in ("pr_curves", "confusion_matrix"):
            (image,) = events.Images(f"val/{name}_{iou_type}")
            assert image.step == 2 and image.width > 300 and image.height > 200, tags


def test_unknown_error_plot_type_is_a_config_error(tmp_path):
    cfg = compose_config([*TINY, "evaluation.error_plots=[mask]"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"evaluation.error_plots.*\[mask\]"):
        error_plot_types(cfg.evaluation)
