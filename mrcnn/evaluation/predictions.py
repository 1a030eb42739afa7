"""A model's COCO results on a whole data set, converted batch by batch (what ``evaluate``
scores)."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import collate
from mrcnn.evaluation.results import detections_to_coco_results
from mrcnn.inference.core import Inference


def predict_results(
    inference: Inference, dataset: Dataset, categories: Categories, num_workers: int = 0
) -> tuple[list[dict], list[int]]:
    """COCO results of ``inference`` on every image of ``dataset``, converted batch by batch
    (RLE masks, not full-image ones, are kept).

    Returns the results and the ids of every image predicted (with or without detections).
    """
    loader = DataLoader(
        dataset,
        batch_size=inference.batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        shuffle=False,
    )
    results: list[dict] = []
    image_ids: list[int] = []
    with tqdm(total=len(dataset), desc="Evaluating", unit="img") as bar:
        for images, targets in loader:
            detections = inference(images)
            ids = [int(target["image_id"]) for target in targets]
            results += detections_to_coco_results(
                detections, ids, categories, inference.mask_threshold
            )
            image_ids += ids
            bar.update(len(images))
    return results, image_ids
