"""Generated COCO ground truth and detections, at any size (figures 4 and 6).

Every instance is a polygon (a jittered ellipse) on a 640x480 image, 80 categories with
COCO's 1..90 ids. Written files go under /tmp and are reused when they exist (same arguments,
same name); they are never part of the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
WIDTH, HEIGHT = 640, 480
CACHE_DIR = Path("/tmp/mrcnn-bench-coco")


def _polygons(rng: np.random.Generator, count: int, vertices: int) -> tuple[np.ndarray, ...]:
    """``count`` polygons [count, vertices, 2], their xywh boxes and areas."""
    centre = rng.uniform([40, 40], [WIDTH - 40, HEIGHT - 40], size=(count, 1, 2))
    radius = rng.uniform(6, 80, size=(count, 1, 2))
    angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)[None, :]
    jitter = rng.uniform(0.8, 1.2, size=(count, vertices))
    xy = np.stack([np.cos(angle) * jitter, np.sin(angle) * jitter], axis=-1) * radius + centre
    xy = np.clip(np.round(xy, 2), 0, [WIDTH - 1, HEIGHT - 1])
    low, high = xy.min(axis=1), xy.max(axis=1)
    boxes = np.concatenate([low, high - low], axis=1)
    x, y = xy[..., 0], xy[..., 1]
    area = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    return xy, boxes, area


def generate_ground_truth(
    num_images: int, instances_per_image: float = 7.3, vertices: int = 16, seed: int = 0
) -> dict[str, Any]:
    """A COCO instances dict: ``num_images`` 640x480 images, about ``instances_per_image``
    polygon instances each (COCO train2017: 118,287 images, 860,001 instances, i.e. 7.3)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(instances_per_image, size=num_images)
    total = int(counts.sum())
    xy, boxes, areas = _polygons(rng, total, vertices)
    image_of = np.repeat(np.arange(num_images), counts)
    categories = rng.choice(COCO_CATEGORY_IDS, size=total)
    flat = xy.reshape(total, -1).tolist()
    box_list, area_list = np.round(boxes, 2).tolist(), np.round(areas, 2).tolist()
    annotations = [
        {
            "id": index + 1,
            "image_id": int(image_of[index]) + 1,
            "category_id": int(categories[index]),
            "segmentation": [flat[index]],
            "area": area_list[index],
            "bbox": box_list[index],
            "iscrowd": 0,
        }
        for index in range(total)
    ]
    images = [
        {"id": i + 1, "file_name": f"{i % 8:06d}.jpg", "height": HEIGHT, "width": WIDTH}
        for i in range(num_images)
    ]
    categories_list = [
        {"id": c, "name": f"class{c}", "supercategory": "x"} for c in COCO_CATEGORY_IDS
    ]
    return {"images": images, "annotations": annotations, "categories": categories_list}


def generate_detections(
    ground_truth: dict[str, Any], per_instance: float = 1.5, seed: int = 1
) -> list[dict[str, Any]]:
    """COCO results near the ground truth (jittered polygons as RLE, boxes from them) plus
    false positives: every AP and AR is some value between 0 and 1."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    results = []
    for ann in ground_truth["annotations"]:
        if ann.get("iscrowd"):
            continue
        image = ann["image_id"]
        for _ in range(rng.poisson(per_instance)):
            polygon = np.asarray(ann["segmentation"][0], dtype=np.float64)
            if rng.random() < 0.3:  # a false positive: a polygon somewhere else
                polygon = polygon + rng.uniform(-120, 120, size=2).repeat(len(polygon) // 2)
            polygon = polygon + rng.normal(0, 3, size=polygon.shape)
            polygon[0::2] = np.clip(polygon[0::2], 0, WIDTH - 1)
            polygon[1::2] = np.clip(polygon[1::2], 0, HEIGHT - 1)
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon.tolist()], HEIGHT, WIDTH))
            box = mask_utils.toBbox(rle).tolist()
            if box[2] <= 0 or box[3] <= 0:
                continue
            category = (
                ann["category_id"] if rng.random() < 0.9 else int(rng.choice(COCO_CATEGORY_IDS))
            )
            results.append(
                {
                    "image_id": image,
                    "category_id": category,
                    "bbox": box,
                    "score": float(rng.random()),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    return results


def write_images(folder: Path, count: int = 8, seed: int = 0) -> Path:
    """``count`` noise JPEGs of 640x480 named like the generated ``file_name`` entries."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        path = folder / f"{index:06d}.jpg"
        if not path.exists():
            pixels = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return folder


def annotation_file(num_images: int, instances_per_image: float = 7.3, vertices: int = 16) -> Path:
    """The generated annotation json under /tmp (written once, then reused), with its images."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    write_images(CACHE_DIR / "images")
    path = CACHE_DIR / f"instances_{num_images}_{instances_per_image:g}_{vertices}.json"
    if not path.exists():
        data = generate_ground_truth(num_images, instances_per_image, vertices)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as file:
            json.dump(data, file, separators=(",", ":"))
        tmp.rename(path)
    return path
