"""Writers of YOLO and LabelMe files from COCO jsons and mask folders, for the round-trip tests.

They write what annotation tools export: YOLO label lines of normalised polygons (several parts
of one instance joined by zero-width bridges, as Ultralytics' converter does) and LabelMe jsons
of pixel polygons (several parts share a ``group_id``). Images are linked, never copied.
"""

from __future__ import annotations

import base64
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


@dataclass
class Item:
    """One image and its instances: (class index 0..K-1, pixel polygons of its parts)."""

    image: Path
    height: int
    width: int
    instances: list[tuple[int, list[list[float]]]]


def coco_items(images: Path, annotations: Path) -> tuple[list[Item], list[str]]:
    """A COCO json's images with their non-crowd polygon instances, and the category names in
    id order (class index = position)."""
    data = json.loads(annotations.read_text())
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    per_image = defaultdict(list)
    for ann in data["annotations"]:
        if not ann.get("iscrowd"):
            per_image[ann["image_id"]].append(
                (index_of[ann["category_id"]], [list(map(float, p)) for p in ann["segmentation"]])
            )
    items = [
        Item(images / im["file_name"], im["height"], im["width"], per_image[im["id"]])
        for im in data["images"]
    ]
    return items, [c["name"] for c in categories]


def mask_folder_items(images: Path, masks: Path, suffix: str) -> list[Item]:
    """A mask folder's images with one instance (class 0) per mask id, outlined along pixel
    edges (holes are filled)."""
    items = []
    for image in sorted(images.glob("*.png")):
        ids = np.array(Image.open(masks / f"{image.stem}{suffix}.png"))
        instances = [(0, mask_outlines(ids == i)) for i in np.unique(ids) if i != 0]
        items.append(Item(image, *ids.shape, instances))
    return items


def mask_outlines(mask: np.ndarray) -> list[list[float]]:
    """The outer outlines of a binary mask's parts, along pixel edges (pixel (x, y) covers
    [x, x+1) x [y, y+1)), as polygons [x1, y1, x2, y2, ...] with collinear corners removed."""
    padded = np.pad(mask.astype(bool), 1)
    rows, cols = np.nonzero(mask)
    following: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    # Each pixel side facing the background is an edge, directed clockwise around the pixel
    # (y down): outer outlines then run clockwise, with a positive shoelace area; holes negative.
    sides = [
        (-1, 0, lambda r, c: ((c, r), (c + 1, r))),  # top, left to right
        (0, 1, lambda r, c: ((c + 1, r), (c + 1, r + 1))),  # right, downwards
        (1, 0, lambda r, c: ((c + 1, r + 1), (c, r + 1))),  # bottom, right to left
        (0, -1, lambda r, c: ((c, r + 1), (c, r))),  # left, upwards
    ]
    for dr, dc, edge in sides:
        open_side = ~padded[rows + 1 + dr, cols + 1 + dc]
        for r, c in zip(rows[open_side].tolist(), cols[open_side].tolist(), strict=True):
            start, end = edge(r, c)
            following[start].append(end)
    outlines = []
    while following:
        start = next(iter(following))
        points, current = [start], start
        while True:
            ends = following[current]
            following_end = ends.pop()
            if not ends:
                del following[current]
            current = following_end
            if current == start:
                break
            points.append(current)
        corners = [
            p
            for i, p in enumerate(points)
            if _turns(points[i - 1], p, points[(i + 1) % len(points)])
        ]
        xy = np.array(corners, dtype=np.float64)
        area = np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1])
        if area > 0:
            outlines.append(xy.ravel().tolist())
    return outlines


def _turns(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    return (b[0] - a[0]) * (c[1] - b[1]) != (b[1] - a[1]) * (c[0] - b[0])


def bridged(parts: list[list[float]]) -> list[float]:
    """One polygon for several parts: from the first part's last corner a zero-width bridge runs
    to each other part, around it, and back, so the bridges cover no area."""
    first, *others = parts
    polygon = list(first)
    for part in others:
        polygon += [*part, *part[:2], *first[-2:]]
    return polygon


def link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source.resolve(), target)


def write_yolo(
    root: Path, splits: dict[str, list[Item]], names: list[str], names_as_dict: bool = False
) -> Path:
    """A YOLO segmentation data set: data.yaml, images/<split> (links), labels/<split>/*.txt
    (no label file for an image without instances)."""
    for split, items in splits.items():
        for item in items:
            link(root / "images" / split / item.image.name, item.image)
            if not item.instances:
                continue
            scale = np.array([item.width, item.height], dtype=np.float64)
            lines = []
            for class_index, parts in item.instances:
                xy = (np.reshape(bridged(parts), (-1, 2)) / scale).ravel()
                lines.append(" ".join([str(class_index), *(f"{v:.6f}" for v in xy)]))
            label = root / "labels" / split / f"{item.image.stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + "\n")
    spec = {
        "path": ".",
        **{split: f"images/{split}" for split in splits},
        "names": dict(enumerate(names)) if names_as_dict else list(names),
    }
    (root / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def write_labelme(root: Path, items: list[Item], names: list[str], embed: int = 0) -> Path:
    """LabelMe jsons beside linked images; the first ``embed`` jsons hold their image as
    imageData instead (and name a file that is not there)."""
    root.mkdir(parents=True, exist_ok=True)
    for number, item in enumerate(items):
        shapes = []
        for group, (class_index, parts) in enumerate(item.instances):
            for part in parts:
                shapes.append(
                    {
                        "label": names[class_index],
                        "points": np.reshape(part, (-1, 2)).tolist(),
                        "group_id": group if len(parts) > 1 else None,
                        "shape_type": "polygon",
                        "flags": {},
                    }
                )
        data = {
            "version": "5.4.1",
            "flags": {},
            "shapes": shapes,
            "imagePath": item.image.name,
            "imageData": None,
            "imageHeight": item.height,
            "imageWidth": item.width,
        }
        if number < embed:
            data["imageData"] = base64.b64encode(item.image.read_bytes()).decode()
        else:
            link(root / item.image.name, item.image)
        (root / f"{item.image.stem}.json").write_text(json.dumps(data))
    return root
