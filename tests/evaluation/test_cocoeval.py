"""COCO metrics equal pycocotools' COCOeval, with every known trap covered."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn.data.categories import Categories
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.evaluation import (
    STAT_NAMES,
    CocoEvaluator,
    ResultsError,
    coco_report,
    detections_to_coco_results,
    evaluate_coco,
    format_metrics_table,
    ground_truth_for,
)
from tests.evaluation.coco_fakes import detections_from_ground_truth

BACKENDS = ["pycocotools", "faster_coco_eval"]
# pycocotools' own decode() warns under NumPy 2 (used by the detection generator only).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco_categories(ground_truth: dict, category_ids: list[int]) -> Categories:
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    return Categories(names=tuple(names[c] for c in category_ids), dataset_ids=tuple(category_ids))


@pytest.fixture(scope="module")
def generated(coco_gt):
    detections, image_ids, category_ids = detections_from_ground_truth(coco_gt, seed=0)
    categories = coco_categories(coco_gt, category_ids)
    results = detections_to_coco_results(detections, image_ids, categories)
    return detections, image_ids, categories, results


def reference_stats(
    gt_path, results: list[dict], iou_type: str, keep_bbox: bool = False, img_ids=None
) -> np.ndarray:
    """Plain pycocotools, the way detectron2 calls it (no bbox on mask results)."""
    results = copy.deepcopy(results)
    for result in results:
        if iou_type == "bbox":
            result.pop("segmentation", None)
        elif not keep_bbox:
            result.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = sorted(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.fixture(scope="module")
def reference(coco_gt_path, generated):
    results = generated[3]
    return {t: reference_stats(coco_gt_path, results, t) for t in ("bbox", "segm")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_24_stats_equal_pycocotools(coco_gt_path, generated, reference, backend):
    results = generated[3]
    metrics = evaluate_coco(coco_gt_path, results, backend=backend)
    assert len(metrics) == 24
    for iou_type in ("bbox", "segm"):
        ours = np.array([metrics[f"{iou_type}_{name}"] for name in STAT_NAMES])
        np.testing.assert_allclose(ours, reference[iou_type], rtol=0, atol=1e-6, err_msg=iou_type)
    # Generated detections are neither perfect nor useless: the comparison means something.
    assert 0.1 < metrics["segm_AP"] < 0.9 and 0.1 < metrics["bbox_AP"] < 0.9
    # Every size range has ground truth on coco128: no -1 placeholders.
    assert min(metrics.values()) > 0


def test_segm_results_never_get_box_areas(coco_gt_path, generated, reference):
    """With a bbox key, loadRes would use box areas for mask results: APs/APm/APl would move."""
    results = generated[3]
    assert all("bbox" in r and "segmentation" in r for r in results)  # the trap is armed
    trapped = reference_stats(coco_gt_path, results, "segm", keep_bbox=True)
    moved = np.abs(trapped - reference["segm"])[3:6]  # APs, APm, APl
    assert moved.max() > 1e-3, "the trap did not change the area-range APs on this data"
    metrics = evaluate_coco(coco_gt_path, results, iou_types=("segm",))
    ours = np.array([metrics[f"segm_{name}"] for name in STAT_NAMES])
    np.testing.assert_allclose(ours, reference["segm"], rtol=0, atol=1e-6)
    assert np.abs(ours - trapped)[3:6].max() > 1e-3


def test_inputs_are_not_modified(coco_gt, generated):
    results = generated[3][:200]
    before_results, before_gt = copy.deepcopy(results), copy.deepcopy(coco_gt)
    evaluate_coco(coco_gt, results)
    assert results == before_results
    assert coco_gt == before_gt


def test_results_json_reloads_with_loadres_and_uses_dataset_ids(
    tmp_path, coco_gt_path, coco_gt, generated
):
    detections, image_ids, categories, results = generated
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_gt_path))
        loaded = gt.loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(results)
    # coco128's ids have gaps (1..90 for 71 classes): labels were mapped back, not written raw.
    gt_ids = {c["id"] for c in coco_gt["categories"]}
    written = {r["category_id"] for r in results}
    assert written <= gt_ids and max(written) > len(categories.names)
    first = next(d for d in detections if len(d["labels"]))
    first_result = next(r for r in results if r["image_id"] == image_ids[detections.index(first)])
    assert first_result["category_id"] == categories.dataset_ids[int(first["labels"][0]) - 1]
    x1, y1, x2, y2 = first["boxes"][0].tolist()
    assert first_result["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_results_score_zero(coco_gt_path, backend):
    metrics = evaluate_coco(coco_gt_path, [], backend=backend)
    assert len(metrics) == 24 and set(metrics.values()) == {0.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_of_images_and_images_without_detections(coco_gt_path, generated, backend):
    """Only the predicted images count; a predicted image with no detection still counts."""
    detections, image_ids, _, results = generated
    empty = [i for i, d in zip(image_ids, detections, strict=True) if not len(d["labels"])]
    assert empty, "the generator should leave some images without detections"
    chosen = set(image_ids[:40]) | set(empty)
    subset = [r for r in results if r["image_id"] in chosen]
    metrics = evaluate_coco(coco_gt_path, subset, backend=backend, image_ids=chosen)
    for iou_type in ("bbox", "segm"):
        expected = reference_stats(coco_gt_path, subset, iou_type, img_ids=chosen)
        ours = np.array([metrics[f"{iou_type}_{n}"] for n in STAT_NAMES])
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    without = evaluate_coco(coco_gt_path, subset, backend=backend, image_ids=chosen - set(empty))
    assert without["segm_AR100"] > metrics["segm_AR100"]  # the empty images' objects were missed


def test_detections_on_crowd_regions_are_ignored(coco_gt):
    """A detection on a crowd region is neither a hit nor a false positive (COCO's rule)."""
    crowd = next(a for a in coco_gt["annotations"] if a["iscrowd"])
    image_id = crowd["image_id"]
    gt = {
        **coco_gt,
        "images": [i for i in coco_gt["images"] if i["id"] == image_id],
        "annotations": [a for a in coco_gt["annotations"] if a["image_id"] == image_id],
    }
    others = [a for a in gt["annotations"] if not a["iscrowd"]]
    # Perfect boxes for every object, scored 0.5, and a confident box on the crowd region.
    results = [
        {"image_id": image_id, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
        for a in others
    ]
    on_crowd = {**results[0], "category_id": crowd["category_id"], "bbox": crowd["bbox"]}
    on_crowd["score"] = 0.99
    with_crowd_hit = evaluate_coco(gt, [*results, on_crowd], iou_types=("bbox",))
    assert with_crowd_hit["bbox_AP"] == pytest.approx(1.0)
    # Had the crowd region been dropped (as training targets drop it), the same detection
    # would be a confident false positive.
    dropped = {**gt, "annotations": others}
    assert evaluate_coco(dropped, [*results, on_crowd], iou_types=("bbox",))["bbox_AP"] < 0.99
    assert evaluate_coco(dropped, results, iou_types=("bbox",))["bbox_AP"] == pytest.approx(1.0)


def test_bf16_outputs_are_scored_in_float32():
    categories = Categories.from_names(["a", "b"])
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0]])
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 2:5, 3:7] = 0.8
    detection = {
        "boxes": boxes.bfloat16(),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.7]).bfloat16(),
        "masks": mask.bfloat16(),
    }
    (result,) = detections_to_coco_results([detection], [5], categories)
    assert all(isinstance(v, float) for v in result["bbox"])
    json.dumps(result)  # str RLE counts, plain floats
    assert result["category_id"] == 2 and result["image_id"] == 5
    assert result["bbox"] == [10.0, 20.0, 290.0, 380.0]  # 300.0 and 400.0 are exact in bf16


def test_masks_are_thresholded_before_encoding():
    import pycocotools.mask as mask_util

    categories = Categories.from_names(["a"])
    probabilities = torch.linspace(0, 1, 100).reshape(1, 1, 10, 10)
    detection = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
        "masks": probabilities,
    }
    for threshold in (0.5, 0.8):
        (result,) = detections_to_coco_results([detection], [1], categories, threshold)
        rle = {**result["segmentation"], "counts": result["segmentation"]["counts"].encode()}
        decoded = mask_util.decode(rle)
        assert decoded.sum() == int((probabilities > threshold).sum())
        assert set(np.unique(decoded)) <= {0, 1}


def test_ground_truth_from_targets_scores_perfect_detections_as_one():
    dataset = ShapesDataset(num_images=12, image_size=96, seed=3)
    targets = [target for _, target in dataset]
    gt = ground_truth_for(dataset)
    assert [im["id"] for im in gt["images"]] == list(range(12))
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
    assert min(a["id"] for a in gt["annotations"]) == 1  # COCOeval reads id 0 as "unmatched"
    total = sum(len(t["labels"]) for t in targets)
    assert len(gt["annotations"]) == total > 0
    flat = [(t, i) for t in targets for i in range(len(t["labels"]))]
    for ann, (target, i) in zip(gt["annotations"], flat, strict=True):
        assert ann["area"] == float(target["masks"][i].sum())  # mask area, not box area
        assert ann["iscrowd"] == 0
    json.dumps(gt)
    perfect = [
        {
            "boxes": t["boxes"].as_subclass(torch.Tensor),
            "labels": t["labels"],
            "scores": torch.linspace(0.9, 0.5, len(t["labels"])),
            "masks": t["masks"].as_subclass(torch.Tensor).float()[:, None],
        }
        for t in targets
    ]
    results = detections_to_coco_results(perfect, list(range(12)), dataset.categories)
    metrics = evaluate_coco(gt, results)
    assert metrics["bbox_AP"] == pytest.approx(1.0) and metrics["segm_AP"] == pytest.approx(1.0)


def test_bad_results_are_named(coco_gt):
    good = {"image_id": coco_gt["images"][0]["id"], "category_id": 1, "score": 0.5}
    with pytest.raises(ResultsError, match="image ids are not in the ground truth"):
        evaluate_coco(coco_gt, [{**good, "image_id": 123456789, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ResultsError, match=r"category ids \[12\]"):  # a gap in COCO's ids
        evaluate_coco(coco_gt, [{**good, "category_id": 12, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ResultsError, match="neither 'bbox' nor 'segmentation'"):
        evaluate_coco(coco_gt, [good])
    with pytest.raises(ResultsError, match="segm"):  # boxes only, masks asked for
        evaluate_coco(coco_gt, [{**good, "bbox": [0, 0, 1, 1]}], iou_types=("bbox", "segm"))


def test_table_has_a_row_per_iou_type():
    metrics = {f"{t}_{n}": 0.5 for t in ("bbox", "segm") for n in STAT_NAMES}
    metrics["segm_APl"] = -1.0
    lines = format_metrics_table(metrics).splitlines()
    assert lines[0].split() == list(STAT_NAMES)
    assert lines[1].split()[0] == "bbox" and lines[1].split()[1] == "50.00"
    assert lines[2].split()[6] == "-"  # -1: nothing to measure


def class_reference(gt_path, results: list[dict], iou_type: str, category_id: int) -> np.ndarray:
    """Plain pycocotools restricted to one category: its AP and AP50 are that class's."""
    results = copy.deepcopy(results)
    for result in results:
        result.pop("segmentation" if iou_type == "bbox" else "bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.params.catIds = [category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_class_ap_equals_pycocotools_class_by_class(coco_gt, coco_gt_path, generated, backend):
    results = generated[3]
    report = coco_report(coco_gt_path, results, backend=backend)
    names = {c["id"]: c["name"] for c in coco_gt["categories"]}
    counts: dict[int, int] = {}
    for annotation in coco_gt["annotations"]:
        counts[annotation["category_id"]] = counts.get(annotation["category_id"], 0) + 1
    # The classes with the most ground truth, and one with a single instance.
    checked = [*sorted(counts, key=counts.get, reverse=True)[:4], min(counts, key=counts.get)]
    for iou_type in ("bbox", "segm"):
        assert len(report.per_class[iou_type]) == len(coco_gt["categories"])
        for category_id in checked:
            ours = report.per_class[iou_type][names[category_id]]
            expected = class_reference(coco_gt_path, results, iou_type, category_id)
            np.testing.assert_allclose(
                [ours["AP"], ours["AP50"]], expected, atol=1e-9, err_msg=names[category_id]
            )
    # Classes without ground truth among coco128's images say so (-1), not 0.
    absent = [n for cid, n in names.items() if cid not in counts]
    assert all(report.per_class["segm"][n]["AP"] == -1 for n in absent)
    assert report.metrics == evaluate_coco(coco_gt_path, results, backend=backend)
    worst = report.worst_classes("segm", 3)
    assert len(worst) == 3 and worst[0][1] <= worst[1][1] <= worst[2][1]


def dense_scene(count: int) -> tuple[dict, list[dict]]:
    """One 400x400 image with ``count`` separate 8x8 squares, and a perfect detection of each."""
    annotations, results = [], []
    for index in range(count):
        y, x = divmod(index, 20)
        mask = np.zeros((400, 400), dtype=np.uint8)
        mask[y * 20 : y * 20 + 8, x * 20 : x * 20 + 8] = 1
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        box = [x * 20.0, y * 20.0, 8.0, 8.0]
        annotations.append(
            {
                "id": index + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": box,
                "area": 64.0,
                "iscrowd": 0,
                "segmentation": rle,
            }
        )
        results.append(
            {"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9, "segmentation": rle}
        )
    ground_truth = {
        "images": [{"id": 1, "height": 400, "width": 400}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    return ground_truth, results


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_scene_counts_every_detection_when_max_detections_allows(backend):
    ground_truth, results = dense_scene(150)
    dense = evaluate_coco(ground_truth, results, backend=backend, max_detections=150)
    assert dense["segm_AP"] == pytest.approx(1.0) and dense["bbox_AP"] == pytest.approx(1.0)
    assert dense["segm_AR100"] == pytest.approx(1.0)  # recall at the last maxDets
    capped = evaluate_coco(ground_truth, results, backend=backend)  # COCO's 100
    assert capped["segm_AP"] < 0.7 and capped["segm_AR100"] == pytest.approx(100 / 150)


def test_validation_warns_when_an_image_holds_more_instances_than_max_detections(caplog):
    ground_truth, _ = dense_scene(150)
    with caplog.at_level("WARNING"):
        CocoEvaluator(ground_truth, Categories.from_names(["nucleus"]), max_detections=100)
    assert "more than 100 ground-truth instances (image 1: 150)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        CocoEvaluator(ground_truth, Categories.from_names(["nucleus"]), max_detections=150)
    assert "ground-truth instances" not in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_ground_truth_without_bbox_and_area_is_completed_from_its_masks(backend, tmp_path):
    """Some tools write COCO json without ``bbox``/``area`` (mrcnn trains on the masks alone);
    COCOeval needs both: they are computed from the segmentation, and AP is then exact."""
    from mrcnn.data.coco import CocoDataset
    from tests.data.tmp_data import small_coco

    images, annotations = small_coco(tmp_path)
    data = json.loads(annotations.read_text())
    for annotation in data["annotations"]:
        del annotation["bbox"], annotation["area"], annotation["iscrowd"]
    annotations.write_text(json.dumps(data))
    dataset = CocoDataset(images, annotations)
    ground_truth = ground_truth_for(dataset)
    first = ground_truth["annotations"][0]
    assert first["bbox"] == [2.0, 2.0, 10.0, 10.0] and first["area"] == 100.0
    assert first["iscrowd"] == 0
    results = [
        {**{k: a[k] for k in ("image_id", "category_id", "bbox")}, "score": 0.9}
        for a in ground_truth["annotations"]
    ]
    metrics = evaluate_coco(ground_truth, results, iou_types=["bbox"], backend=backend)
    assert metrics["bbox_AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("backend", "dilation"),
    [("pycocotools", 0.02), pytest.param("faster_coco_eval", 0.05, marks=pytest.mark.slow)],
)
def test_boundary_ap_equals_faster_coco_eval_run_alone_on_the_same_files(
    coco_gt_path, generated, tmp_path, backend, dilation
):
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in generated[3]]
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(masks_only))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FasterCOCO(str(coco_gt_path))
        alone = COCOeval_faster(
            gt,
            gt.loadRes(str(results_path)),
            iouType="boundary",
            boundary_dilation_ratio=dilation,
            print_function=print,
        )
        alone.evaluate()
        alone.accumulate()
        alone.summarize()
    report = coco_report(
        coco_gt_path,
        json.loads(results_path.read_text()),
        iou_types=["segm"],
        backend=backend,
        boundary_dilation=dilation,
    )
    ours = np.array([report.metrics[f"boundary_{name}"] for name in STAT_NAMES])
    np.testing.assert_allclose(ours, np.asarray(alone.stats)[:12], rtol=0, atol=1e-9)
    # Boundary IoU is the stricter: mask edges that a mask IoU forgives count here.
    assert 0.05 < report.metrics["boundary_AP"] < report.metrics["segm_AP"]
    assert set(report.per_class) == {"segm", "boundary"}
    assert report.metrics["segm_AP"] == pytest.approx(
        evaluate_coco(coco_gt_path, masks_only, iou_types=["segm"])["segm_AP"]
    )
