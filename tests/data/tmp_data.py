"""Small real data sets written to tmp folders, for tests of formats and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def square(x: float, y: float, size: float) -> list[float]:
    return [x, y, x + size, y, x + size, y + size, x, y + size]


def coco_json(images: list[dict], annotations: list[dict], categories=None) -> dict:
    return {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def small_coco(tmp_path: Path, **overrides) -> tuple[Path, Path]:
    """Two 40x60 images, one with two polygons (one multi-part), one without annotations."""
    images_dir = tmp_path / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    write_image(images_dir / "a.png", 40, 60)
    write_image(images_dir / "b.png", 40, 60, seed=1)
    data = coco_json(
        [
            {"id": 11, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 12, "file_name": "b.png", "height": 40, "width": 60},
        ],
        [
            {
                "id": 1,
                "image_id": 11,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [square(2, 2, 10)],
                "bbox": [2, 2, 10, 10],
                "area": 100,
            },
            {
                "id": 2,
                "image_id": 11,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": [square(30, 5, 5), square(40, 20, 8)],
                "bbox": [30, 5, 18, 23],
                "area": 89,
            },
        ],
    )
    data.update(overrides)
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(data))
    return images_dir, annotations


def mask_folder(tmp_path: Path, masks: dict[str, np.ndarray], suffix: str = "_mask") -> Path:
    """A root with images/ and masks/ (PNG instance ids), images the size of their masks."""
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    for i, (stem, ids) in enumerate(masks.items()):
        write_image(tmp_path / "images" / f"{stem}.png", *ids.shape, seed=i)
        Image.fromarray(ids.astype(np.uint8), "L").save(tmp_path / "masks" / f"{stem}{suffix}.png")
    return tmp_path
