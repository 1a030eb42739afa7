"""Masks as COCO polygons: round trips through pycocotools, holes, parts, and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn.data import ShapesDataset
from mrcnn.data.polygons import decode_rle, mask_to_polygons, polygons_to_mask
from mrcnn.errors import ConfigError
from mrcnn.evaluation.cocoeval import evaluate_coco
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.evaluation.results import detections_to_coco_results
from tests.tiny import TINY, run_module


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """The mask a COCO segmentation (polygons or RLE) gives, rasterised by pycocotools."""
    if isinstance(segmentation, list):
        return decode_rle(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
    return decode_rle({**segmentation, "counts": segmentation["counts"].encode()})


def shape_detections(dataset: ShapesDataset):
    """Each image's exact instances as detections (masks [N,1,H,W] probabilities)."""
    detections, samples = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        masks = target["masks"].as_subclass(torch.Tensor).float()[:, None]
        n = len(target["labels"])
        detections.append(
            {
                "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
                "labels": target["labels"],
                "scores": torch.linspace(0.9, 0.5, n) if n else torch.zeros(0),
                "masks": masks,
            }
        )
        samples.append((image, target))
    return detections, samples


def test_polygons_rasterise_back_to_the_rle_masks():
    dataset = ShapesDataset(num_images=24, image_size=128, seed=3)
    detections, samples = shape_detections(dataset)
    ids = [int(t["image_id"]) for _, t in samples]
    rle = detections_to_coco_results(detections, ids, dataset.categories)
    polygons = detections_to_coco_results(
        detections, ids, dataset.categories, mask_format="polygon"
    )
    assert len(rle) == len(polygons) > 40
    sizes = {int(t["image_id"]): tuple(image.shape[-2:]) for image, t in samples}
    ious = []
    for a, b in zip(rle, polygons, strict=True):
        assert isinstance(b["segmentation"], list) and b["bbox"] == a["bbox"]
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in b["segmentation"])
        height, width = sizes[a["image_id"]]
        ious.append(
            iou(
                segmentation_mask(a["segmentation"], height, width),
                segmentation_mask(b["segmentation"], height, width),
            )
        )
    print(f"polygon vs RLE mask IoU: min {min(ious):.3f}, mean {np.mean(ious):.3f}")
    assert min(ious) >= 0.95
    # Without simplification the outline is exact: pixel edges, not pixel centres.
    for _, target in samples[:6]:
        for mask in target["masks"].numpy():
            exact = polygons_to_mask(mask_to_polygons(mask, tolerance=0), *mask.shape)
            assert np.array_equal(exact, mask)


def test_parts_holes_and_degenerate_masks():
    mask = np.zeros((40, 50), np.uint8)
    mask[2:12, 3:13] = 1
    mask[20:35, 30:45] = 1
    parts = mask_to_polygons(mask)
    assert len(parts) == 2  # one polygon per part, like COCO's multi-part annotations
    assert iou(polygons_to_mask(parts, 40, 50), mask) >= 0.95

    ring = np.zeros((40, 40), np.uint8)
    ring[5:35, 5:35] = 1
    ring[12:28, 12:28] = 0  # a hole of 28% of the outline's area: no polygon can say it
    assert mask_to_polygons(ring) == []
    speck = ring.copy()
    speck[12:28, 12:28] = 1
    speck[20, 20] = 0  # a one-pixel gap of a predicted mask: filled
    (filled,) = mask_to_polygons(speck)
    assert iou(polygons_to_mask([filled], 40, 40), speck) >= 0.98

    assert mask_to_polygons(np.zeros((10, 10), np.uint8)) == []
    for polygon in mask_to_polygons(np.pad(np.ones((1, 1), np.uint8), 4)):
        assert len(polygon) >= 6  # a single pixel: a real polygon or none at all


def test_masks_without_polygons_stay_rle_and_evaluate_as_such():
    ring = torch.zeros(1, 1, 40, 40)
    ring[..., 5:35, 5:35] = 1
    ring[..., 12:28, 12:28] = 0
    square = torch.zeros(1, 1, 40, 40)
    square[..., 2:4, 2:30] = 1
    detections = [
        {
            "boxes": torch.tensor([[5.0, 5, 35, 35], [2, 2, 30, 4]]),
            "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.9, 0.8]),
            "masks": torch.cat([ring, square]),
        }
    ]
    dataset = ShapesDataset(num_images=1, image_size=40)
    results = detections_to_coco_results(detections, [7], dataset.categories, mask_format="polygon")
    assert isinstance(results[0]["segmentation"], dict)  # the ring: RLE
    assert isinstance(results[1]["segmentation"], list)
    ground_truth = {
        "images": [{"id": 7, "height": 40, "width": 40}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 7,
                "category_id": r["category_id"],
                "segmentation": r["segmentation"],
                "bbox": r["bbox"],
                "area": float(m.sum()),
                "iscrowd": 0,
            }
            for i, (r, m) in enumerate(zip(results, [ring, square], strict=True))
        ],
    }
    for backend in ("pycocotools", "faster_coco_eval"):
        metrics = evaluate_coco(ground_truth, results, backend=backend)
        assert metrics["segm_AP"] == pytest.approx(1.0), backend
    with pytest.raises(ConfigError, match="mask_format"):
        detections_to_coco_results(detections, [7], dataset.categories, mask_format="svg")


def test_polygon_results_score_as_their_rle_twins_with_both_backends():
    dataset = ShapesDataset(num_images=12, image_size=96, seed=5)
    detections, samples = shape_detections(dataset)
    ids = [int(t["image_id"]) for _, t in samples]
    ground_truth = ground_truth_for(samples, dataset.categories)
    # Shift every mask by a pixel so that AP is not trivially 1.
    for detection in detections:
        detection["masks"] = torch.roll(detection["masks"], shifts=1, dims=-1)
    rle = detections_to_coco_results(detections, ids, dataset.categories)
    exact = detections_to_coco_results(
        detections, ids, dataset.categories, mask_format="polygon", polygon_tolerance=0
    )
    polygons = detections_to_coco_results(
        detections, ids, dataset.categories, mask_format="polygon"
    )
    for backend in ("pycocotools", "faster_coco_eval"):
        from_rle = evaluate_coco(ground_truth, rle, backend=backend)
        # Unsimplified polygons are the masks exactly: the same numbers, to the last digit.
        assert evaluate_coco(ground_truth, exact, backend=backend) == from_rle, backend
        # Simplified (0.5 px), small shapes lose a little at the strictest IoU thresholds.
        from_polygons = evaluate_coco(ground_truth, polygons, backend=backend)
        print(backend, "segm AP rle", from_rle["segm_AP"], "polygon", from_polygons["segm_AP"])
        assert from_polygons["segm_AP"] == pytest.approx(from_rle["segm_AP"], abs=0.05), backend
        assert from_polygons["bbox_AP"] == from_rle["bbox_AP"]
    # pycocotools' own loader takes polygon results with their boxes (as predict writes them).
    coco = COCO()
    coco.dataset = json.loads(json.dumps(ground_truth))
    coco.createIndex()
    assert len(coco.loadRes(json.loads(json.dumps(polygons))).getAnnIds()) == len(polygons)


def test_cli_predict_polygons_then_evaluate_them(tiny_checkpoint, tmp_path):
    # The synthetic validation images of TINY's data, with their ground truth's ids.
    dataset = ShapesDataset(num_images=2, image_size=128, seed=1)
    folder = tmp_path / "images"
    folder.mkdir()
    ground_truth = ground_truth_for(dataset)
    for index, image in enumerate(ground_truth["images"]):
        image["file_name"] = f"val_{index}.png"
        pixels = dataset[index][0].permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / image["file_name"])
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(ground_truth))

    out = tmp_path / "out"
    run_module(
        "mrcnn.predict",
        f"model_path={tiny_checkpoint}",
        f"input={folder}",
        f"output={out}",
        f"image_ids_from={annotations}",
        "evaluation.score_threshold=0.05",
        "mask_format=polygon",
        "draw=false",
        f"hydra.run.dir={tmp_path / 'predict_run'}",
        cwd=tmp_path,
    )
    results = json.loads((out / "predictions.json").read_text())
    assert results, "a 2-step model still gives detections above score 0.05"
    assert any(isinstance(r["segmentation"], list) for r in results)
    # CVAT and friends import results against images.json's sizes with pycocotools.
    loaded = COCO(str(out / "images.json")).loadRes(str(out / "predictions.json"))
    assert len(loaded.getAnnIds()) == len(results)

    metrics_file = tmp_path / "metrics.json"
    data = [o for o in TINY if o.startswith("data.")]
    done = run_module(
        "mrcnn.evaluate",
        *data,
        f"results={out / 'predictions.json'}",
        f"output={metrics_file}",
        f"hydra.run.dir={tmp_path / 'evaluate_run'}",
        cwd=tmp_path,
    )
    metrics = json.loads(metrics_file.read_text())["metrics"]
    assert {"segm_AP", "bbox_AP"} <= set(metrics), done.stdout[-2000:]
