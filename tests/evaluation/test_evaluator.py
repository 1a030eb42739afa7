"""CocoEvaluator over validation batches, ground truth from data sets, gathering under DDP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Subset

from mrcnn.data.categories import Categories
from mrcnn.data.coco import CocoDataset
from mrcnn.data.datamodule import DetectionDataModule, TransformedDataset
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.data.transforms import build_transforms
from mrcnn.evaluation import CocoEvaluator, evaluate_coco, ground_truth_for
from tests.evaluation.coco_fakes import detections_from_ground_truth

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def small_gt(coco_gt: dict, num_images: int) -> dict:
    images = coco_gt["images"][:num_images]
    ids = {i["id"] for i in images}
    return {
        **coco_gt,
        "images": images,
        "annotations": [a for a in coco_gt["annotations"] if a["image_id"] in ids],
    }


def categories_of(gt: dict, category_ids: list[int]) -> Categories:
    names = {c["id"]: c["name"] for c in gt["categories"]}
    return Categories(tuple(names[c] for c in category_ids), tuple(category_ids))


def test_evaluator_matches_one_shot_evaluation_and_counts_repeats_once(coco_gt):
    gt = small_gt(coco_gt, 40)
    detections, image_ids, category_ids = detections_from_ground_truth(gt, seed=1)
    categories = categories_of(coco_gt, category_ids)
    evaluator = CocoEvaluator(gt, categories)
    for start in range(0, 40, 6):  # uneven batches
        evaluator.update(detections[start : start + 6], image_ids[start : start + 6])
    evaluator.update(detections[:2], image_ids[:2])  # a padded repeat, as DDP samplers do
    assert len(evaluator) == 40
    metrics = evaluator.compute()
    expected = evaluate_coco(gt, evaluator.results())
    assert metrics == expected and len(metrics) == 24
    evaluator.reset()
    assert len(evaluator) == 0 and evaluator.compute() == {}


def test_evaluator_scores_only_images_seen(coco_gt):
    """limit_val_batches: AP of the images predicted, not diluted by the ones never seen."""
    gt = small_gt(coco_gt, 40)
    detections, image_ids, category_ids = detections_from_ground_truth(gt, seed=1)
    evaluator = CocoEvaluator(gt, categories_of(coco_gt, category_ids))
    evaluator.update(detections[:10], image_ids[:10])
    partial = evaluator.compute()
    assert partial == evaluate_coco(gt, evaluator.results(), image_ids=image_ids[:10])
    assert partial != evaluate_coco(gt, evaluator.results())  # all 40 images: lower recall


def test_evaluator_rejects_images_outside_its_ground_truth(coco_gt):
    gt = small_gt(coco_gt, 5)
    evaluator = CocoEvaluator(gt, categories_of(coco_gt, [1]))
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, 4, 4),
    }
    with pytest.raises(KeyError, match="not in the evaluation ground truth"):
        evaluator.update([empty], [999999999])


def test_ground_truth_for_wrapped_synthetic_split_is_unaugmented():
    shapes = ShapesDataset(num_images=10, image_size=64, seed=2)
    datamodule = DetectionDataModule(train=shapes, val=None, val_fraction=0.3, augment="hflip")
    datamodule.setup()
    gt = ground_truth_for(datamodule.val_set)
    val_ids = [datamodule.val_set[i][1]["image_id"] for i in range(len(datamodule.val_set))]
    assert [im["id"] for im in gt["images"]] == val_ids and len(val_ids) == 3
    # A flipping wrapper must not change the ground truth: it comes from the raw samples.
    flipped = TransformedDataset(
        Subset(shapes, datamodule.val_set.dataset.indices), build_transforms("hflip", 64)
    )
    torch.manual_seed(0)
    assert ground_truth_for(flipped) == gt
    masks = [shapes[i][1]["masks"] for i in val_ids]
    assert [a["area"] for a in gt["annotations"]] == [
        float(m.sum()) for mask in masks for m in mask
    ]


def test_ground_truth_for_coco_comes_from_the_annotation_file(coco128_dir):
    dataset = CocoDataset(
        coco128_dir / "val2017", coco128_dir / "annotations" / "instances_val2017.json"
    )
    wrapped = TransformedDataset(Subset(dataset, [3, 5, 7]), build_transforms("none"))
    gt = ground_truth_for(wrapped)
    ids = [dataset[i][1]["image_id"] for i in (3, 5, 7)]
    assert sorted(im["id"] for im in gt["images"]) == sorted(ids)
    assert {a["image_id"] for a in gt["annotations"]} <= set(ids)
    full = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    assert gt["categories"] == full["categories"]  # original ids, gaps included


def _ddp_worker(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    folder_path = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder_path / 'store'}", rank=rank, world_size=world_size
    )
    try:
        gt = json.loads((folder_path / "gt.json").read_text())
        detections, image_ids, category_ids = detections_from_ground_truth(gt, seed=4)
        names = {c["id"]: c["name"] for c in gt["categories"]}
        categories = Categories(tuple(names[c] for c in category_ids), tuple(category_ids))
        evaluator = CocoEvaluator(gt, categories, backend="pycocotools")
        # DistributedSampler order: rank r takes r, r + world, ...; padding repeats image 0.
        indices = [*range(len(image_ids)), 0]
        mine = indices[rank::world_size]
        evaluator.update([detections[i] for i in mine], [image_ids[i] for i in mine])
        metrics = evaluator.compute()
        (folder_path / f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_ddp_gathers_compact_results_and_every_rank_gets_the_metrics(tmp_path, coco_gt):
    gt = small_gt(coco_gt, 15)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # fork: the workers inherit the imported modules (spawn would re-import torch and lightning).
    context = mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two DDP workers did not finish within 60 s")
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    detections, image_ids, category_ids = detections_from_ground_truth(gt, seed=4)
    evaluator = CocoEvaluator(gt, categories_of(gt, category_ids), backend="pycocotools")
    evaluator.update(detections, image_ids)
    expected = evaluator.compute()
    assert per_rank[0] == per_rank[1]
    for key, value in expected.items():
        assert np.isclose(per_rank[0][key], value, rtol=0, atol=1e-12), key
