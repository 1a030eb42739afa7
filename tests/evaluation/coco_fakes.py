"""Detections made from ground truth: jittered masks and boxes, random scores, false positives.

A random-init model detects nothing, so metric tests need detections with every kind of match:
good, poor, wrong class, duplicates, detections on crowd regions, and images left empty.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO


def decode(segmentation: dict | list, height: int, width: int) -> np.ndarray:
    """A binary mask [H,W] from a COCO polygon list or (compressed or not) RLE."""
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(bool)


def jitter_mask(mask: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """The mask moved by a few pixels and grown or shrunk by one, clipped to the image."""
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    moved = np.roll(np.roll(mask, int(dy), axis=0), int(dx), axis=1)
    if rng.random() < 0.3:
        grow = np.zeros_like(moved)
        grow[1:] |= moved[:-1]
        grow[:, 1:] |= moved[:, :-1]
        moved = moved | grow
    return moved


def detections_from_ground_truth(
    ground_truth: dict,
    seed: int = 0,
    skip_fraction: float = 0.1,
    false_positives: int = 2,
) -> tuple[list[dict[str, torch.Tensor]], list[int], list[int]]:
    """torchvision-style detections per image (float masks [N,1,H,W], xyxy boxes, labels 1..K).

    Returns detections, image ids and the data set's category ids in label order (label k is
    ``category_ids[k - 1]``). Some images get no detection at all.
    """
    rng = np.random.default_rng(seed)
    coco = COCO()
    coco.dataset = ground_truth
    coco.createIndex()
    category_ids = sorted(coco.getCatIds())
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    detections, image_ids = [], []
    for image in ground_truth["images"]:
        height, width = image["height"], image["width"]
        masks, labels, scores, boxes = [], [], [], []
        if rng.random() >= skip_fraction:
            for ann in coco.imgToAnns[image["id"]]:
                if rng.random() < 0.1:
                    continue  # a missed object
                mask = jitter_mask(
                    decode(ann["segmentation"], height, width),
                    rng,
                    max_shift=int(rng.integers(1, 6)),
                )
                label = label_of[ann["category_id"]]
                if rng.random() < 0.1:
                    label = int(rng.integers(1, len(category_ids) + 1))  # wrong class
                for _copy in range(1 + (rng.random() < 0.1)):  # some duplicates
                    masks.append(mask)
                    labels.append(label)
                    scores.append(float(rng.uniform(0.05, 1.0)))
                    x, y, w, h = ann["bbox"]
                    noise = rng.normal(0, 0.05 * max(w, h, 1), size=4)
                    x1, y1 = x + noise[0], y + noise[1]
                    boxes.append([x1, y1, x1 + max(w + noise[2], 1), y1 + max(h + noise[3], 1)])
            for _ in range(false_positives):
                fx, fy = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
                fw, fh = rng.uniform(4, width * 0.3), rng.uniform(4, height * 0.3)
                mask = np.zeros((height, width), dtype=bool)
                mask[int(fy) : int(fy + fh), int(fx) : int(fx + fw)] = True
                masks.append(mask)
                labels.append(int(rng.integers(1, len(category_ids) + 1)))
                scores.append(float(rng.uniform(0.05, 0.6)))
                boxes.append([fx, fy, fx + fw, fy + fh])
        # Probabilities, as torchvision returns them: values on both sides of the threshold.
        probabilities = np.stack(masks).astype(np.float32) * 0.6 + 0.3 if masks else None
        detections.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "masks": (
                    torch.from_numpy(probabilities)[:, None]
                    if probabilities is not None
                    else torch.zeros((0, 1, height, width))
                ),
            }
        )
        image_ids.append(image["id"])
    return detections, image_ids, category_ids


def results_from_ground_truth(ground_truth: dict, seed: int = 7) -> list[dict]:
    """COCO results (the data set's category ids, RLE masks) of
    :func:`detections_from_ground_truth`, as ``predict`` writes them."""
    from mrcnn.data.categories import Categories
    from mrcnn.evaluation.results import detections_to_coco_results

    detections, image_ids, category_ids = detections_from_ground_truth(ground_truth, seed=seed)
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    categories = Categories(tuple(names[c] for c in category_ids), tuple(category_ids))
    return detections_to_coco_results(detections, image_ids, categories)
