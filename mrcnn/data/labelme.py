"""LabelMe annotations: one json per image, in one folder with the images.

A json's ``shapes`` each have a ``label``, ``points`` (pixels), a ``shape_type`` and an optional
``group_id``. Polygons, rectangles and circles become masks, rasterised like COCO polygons;
shapes with the same label and ``group_id`` in one image are parts of one instance (one mask),
shapes without a ``group_id`` are instances of their own. Lines, points and other shapes without
an area are skipped and counted (``python -m mrcnn.data.check`` lists them). The image is
``imagePath`` (relative to the json), or the image embedded in the json (``imageData``) when
there is one, as LabelMe itself does. The classes are the given ``labels`` (label order) or the
sorted set of labels found; a validation folder reuses the training folder's classes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import DetectionDataModule
from mrcnn.data.errors import DataError, SizeMismatchError, listing
from mrcnn.data.images import image_hw, read_image
from mrcnn.data.polygons import polygons_to_mask

Group = tuple[str, list[list[float]]]  # (label, pixel polygons of its parts)


def read_labelme(path: Path) -> dict[str, Any]:
    """A LabelMe json, with a clear error for a broken file or one that is not LabelMe's."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid json ({error}); re-save it in LabelMe.") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(
            f"{path} is not a LabelMe json (no 'shapes' list); keep only LabelMe's json files "
            "in the data folder."
        )
    return data


def image_of(data: dict[str, Any], path: Path) -> tuple[Path, bytes | None]:
    """The image file a json names (``imagePath``, relative to it) and its embedded bytes."""
    image_path = path.parent / str(data.get("imagePath") or "").replace("\\", "/")
    if not data.get("imageData"):
        return image_path, None
    try:
        return image_path, base64.b64decode(data["imageData"])
    except (binascii.Error, TypeError):
        raise DataError(f"{path}: imageData is not base64; re-save it in LabelMe.") from None


def shape_polygon(shape: dict[str, Any]) -> list[float] | None:
    """The pixel polygon ``[x1, y1, ...]`` of a shape with an area; None for lines and points."""
    kind = shape.get("shape_type") or "polygon"
    if kind not in ("polygon", "rectangle", "circle"):
        return None
    points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
    if kind == "polygon":
        return points.ravel().tolist()
    if kind == "rectangle":  # two opposite corners
        (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    (cx, cy), (px, py) = points[0], points[1]  # a circle: its centre and a point on it
    radius = math.hypot(px - cx, py - cy)
    angles = np.linspace(0, 2 * math.pi, max(16, math.ceil(math.pi * radius)), endpoint=False)
    corners = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    return corners.ravel().tolist()


def group_shapes(data: dict[str, Any], path: Path) -> tuple[list[Group], Counter, list[str]]:
    """A json's instances in order of appearance, the shapes skipped by type, and problems."""
    groups: dict[tuple, Group] = {}
    skipped: Counter = Counter()
    problems = []
    for number, shape in enumerate(data["shapes"], start=1):
        try:
            label, polygon = str(shape["label"]), shape_polygon(shape)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            problems.append(
                f"{path} shape {number}: needs a 'label' and 'points' [[x, y], ...] (a circle: "
                "its centre and a point on it); fix or delete the shape in LabelMe"
            )
            continue
        if polygon is None:
            skipped[str(shape.get("shape_type"))] += 1
            continue
        group = shape.get("group_id")
        key = (label, group) if group is not None else (label, None, number)
        groups.setdefault(key, (label, []))[1].append(polygon)
    return list(groups.values()), skipped, problems


class LabelMeDataset(InstanceDataset):
    """The LabelMe json files of one folder and their images (see the module doc).

    Args:
        root: folder holding the json files (``*.json``, not sub-folders).
        labels: the class names in label order; None: the sorted set of labels in the files.
    """

    def __init__(self, root: str | Path, labels: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        files = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        if not files:
            raise DataError(
                f"No LabelMe json files in {self.root}. Set data.root (and data.val_root) to the "
                "folder holding LabelMe's json files and their images."
            )
        problems, sizes, seen = [], [], {}
        self.skipped: Counter = Counter()
        self.num_instances = self.num_empty = 0
        for path in files:
            try:
                data = read_labelme(path)
                groups, skipped, bad = group_shapes(data, path)
                image_path, embedded = image_of(data, path)
                if embedded is None and not image_path.is_file():
                    raise DataError(
                        f"{path}: its image {image_path} (imagePath, relative to the json) does "
                        "not exist and the json holds no imageData. Put the image there, fix "
                        "imagePath, or save the json with the image data in LabelMe."
                    )
                height, width = data.get("imageHeight"), data.get("imageWidth")
                if not height or not width:
                    height, width = image_hw(image_path, str(path), embedded)
            except DataError as error:
                problems.append(str(error))
                continue
            problems += bad
            self.skipped += skipped
            self.num_instances += len(groups)
            self.num_empty += not groups
            sizes.append((int(height), int(width)))
            for label, _ in groups:
                seen.setdefault(label, path)
        names = list(labels) if labels is not None else sorted(seen)
        problems += [
            f"{path}: label {label!r} is not among the classes {names}; add it to data.labels"
            for label, path in seen.items()
            if label not in names
        ]
        if problems:
            raise DataError(
                f"LabelMe folder {self.root}: {len(problems)} problem(s); fix or remove these "
                f"files or shapes:\n{listing(problems)}"
            )
        if not names or len(set(names)) != len(names):
            raise DataError(
                f"LabelMe folder {self.root}: classes {names}: no shape with an area in any file, "
                "or a name listed twice in data.labels. Annotate polygons, rectangles or circles, "
                "or list each class once."
            )
        self.categories = Categories.from_names(names)
        self._label_of = {name: label for label, name in enumerate(names, start=1)}
        self._files = np.array([str(p) for p in files])
        self._hw = np.array(sizes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._files)

    def source(self, index: int) -> str:
        return f"{self._files[index]} (image {index})"

    def image_hw(self, index: int) -> tuple[int, int]:
        """From the json's imageHeight/imageWidth (else the image header, read once)."""
        height, width = self._hw[index]
        return int(height), int(width)

    def describe(self) -> str:
        skipped = f", skipped shapes without an area: {dict(self.skipped)}" if self.skipped else ""
        return (
            f"LabelMe {self.root}: {len(self)} images ({self.num_empty} without objects), "
            f"{self.num_instances} instances of {len(self.categories.names)} classes{skipped}"
        )

    def annotation_warnings(self) -> list[str]:
        return [
            f"{count} 'mask' shape(s) skipped: mrcnn does not read LabelMe's bitmap masks yet; "
            "redraw them as polygons in LabelMe"
            if kind == "mask"
            else f"{count} '{kind}' shape(s) skipped: only polygons, rectangles and circles have "
            "an area to make a mask of"
            for kind, count in sorted(self.skipped.items())
        ]

    def load_raw(self, index: int) -> RawSample:
        path, source = Path(str(self._files[index])), self.source(index)
        data = read_labelme(path)
        groups, _, problems = group_shapes(data, path)
        problems += [f"new label {label!r}" for label, _ in groups if label not in self._label_of]
        if problems:
            raise DataError(
                f"{source}: the file changed since the data set was built ({problems[0]}); "
                "start again so that its shapes and classes are read anew."
            )
        image_path, embedded = image_of(data, path)
        image = read_image(image_path, source, embedded)
        height, width = image.shape[:2]
        if (height, width) != self.image_hw(index):
            raise SizeMismatchError(
                f"{source}: the image is {width}x{height} (WxH, EXIF orientation applied) but "
                f"the json says {self._hw[index][1]}x{self._hw[index][0]} (imageWidth x "
                "imageHeight). Fix them in the json or use the image that was annotated."
            )
        masks = [polygons_to_mask(parts, height, width) for _, parts in groups]
        return RawSample(image, masks, [self._label_of[label] for label, _ in groups])


def labelme_datamodule(
    root: str | Path,
    val_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    **datamodule: Any,
) -> DetectionDataModule:
    """A DetectionDataModule over LabelMe folders (``data=labelme``): validation is ``val_root``
    with the training classes, or a held-out ``val_fraction`` of ``root``."""
    train = LabelMeDataset(root, None if labels is None else list(labels))
    val = LabelMeDataset(val_root, train.categories.names) if val_root else None
    return DetectionDataModule(train=train, val=val, **datamodule)
