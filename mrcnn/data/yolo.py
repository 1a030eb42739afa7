"""Ultralytics YOLO segmentation data sets: a ``data.yaml``, ``images/`` and ``labels/``.

The label file of ``.../images/<split>/a.jpg`` is ``.../labels/<split>/a.txt`` (the image path's
last ``images`` folder becomes ``labels``, as in Ultralytics; beside the image when there is
none). One line per instance: ``class x1 y1 x2 y2 ...``, a polygon with corners normalised by the
image's width and height. An image without a label file has no objects. ``data.yaml`` holds
``names`` (a list, or a dict of class id -> name) and the splits (``train``, ``val``): each a
folder of images, a ``.txt`` list of image paths, or a list of those, relative to ``path`` or,
when that is not a folder here (a data set moved from another machine), to the yaml's folder.

Class ids (0..K-1) become labels 1..K through :class:`Categories`, and results files use them
again. Label files are read once up front: every bad line is listed, with its file and number.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import DetectionDataModule
from mrcnn.data.errors import DataError, listing
from mrcnn.data.images import IMAGE_EXTENSIONS, normalise_extensions, read_image
from mrcnn.data.polygons import polygons_to_mask

log = logging.getLogger(__name__)

Instance = tuple[int, list[float]]  # (class id, normalised polygon x1 y1 x2 y2 ...)


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The parsed ``data.yaml``, with a clear error when it is missing or has no ``names``."""
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.y*ml")) if path.parent.is_dir() else []
        hint = f" ({path.parent} holds {', '.join(others)})" if others else ""
        raise DataError(
            f"YOLO data set file {path} does not exist. Set data.root to the folder holding "
            "Ultralytics' data.yaml (with 'names' and the 'train'/'val' splits), or "
            f"data.config_file to its name{hint}."
        )
    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataError(f"YOLO data set file {path} is not valid YAML: {error}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("names"), list | dict):
        raise DataError(
            f"YOLO data set file {path} has no 'names': give the class names as a list "
            "(names: [person, car], class ids 0, 1, ...) or a dict (names: {0: person, 1: car})."
        )
    return spec


def label_path(image: Path) -> Path:
    """Where Ultralytics looks for an image's labels: its last ``images`` folder -> ``labels``."""
    folders = image.parts[:-1]
    if "images" not in folders:
        return image.with_suffix(".txt")
    i = len(folders) - 1 - folders[::-1].index("images")
    return Path(*folders[:i], "labels", *folders[i + 1 :], image.stem + ".txt")


def parse_labels(path: Path, class_ids: set[int]) -> tuple[list[Instance], list[str]]:
    """The instances of one label file (none when it is missing) and what is wrong in it."""
    if not path.is_file():
        return [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        return [], [f"{path}: cannot read it as text ({error}); re-export the labels"]
    instances, problems = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {number}"
        try:  # all numbers, as Ultralytics reads them ("0.0" is class 0)
            values = np.array(fields, dtype=np.float64)
        except ValueError:
            values = np.array([np.nan])
        if not np.isfinite(values).all():
            problems.append(f"{where}: {line.strip()[:60]!r} is not 'class x1 y1 x2 y2 ...'")
            continue
        class_id, coords = values[0], values[1:].tolist()
        class_id = int(class_id) if class_id.is_integer() else float(class_id)
        if class_id not in class_ids:
            problems.append(
                f"{where}: class id {class_id} is not in data.yaml's names (ids "
                f"{min(class_ids)}..{max(class_ids)}); add it to names or fix the label"
            )
        elif len(coords) == 4:
            problems.append(
                f"{where}: 'class cx cy w h' is a YOLO detection box; Mask R-CNN needs polygons: "
                "export the segmentation format (class x1 y1 x2 y2 ...)"
            )
        elif len(coords) % 2 or len(coords) < 6:
            problems.append(
                f"{where}: {len(coords)} coordinates; a polygon needs x y pairs of at least "
                "3 corners (an even number, 6 or more)"
            )
        elif min(coords) < -0.01 or max(coords) > 1.01:
            problems.append(
                f"{where}: coordinates outside 0..1; YOLO labels are normalised (divide x by "
                "the image width and y by its height)"
            )
        else:
            instances.append((class_id, coords))
    return instances, problems


class YoloDataset(InstanceDataset):
    """One split of an Ultralytics YOLO segmentation data set (see the module doc).

    Args:
        root: folder holding the data set file.
        split: the key in the data set file naming this split's images (``train``, ``val``).
        config_file: the data set file, relative to root.
        image_extensions: image file endings looked for in split folders (case-insensitive);
            None: every ending mrcnn reads (:data:`~mrcnn.data.images.IMAGE_EXTENSIONS`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config_file: str = "data.yaml",
        image_extensions: Sequence[str] | None = None,
    ) -> None:
        self.data_yaml = Path(root) / config_file
        self.split = split
        self.spec = spec = read_data_yaml(self.data_yaml)
        names = spec["names"]
        try:
            pairs = sorted((int(k), v) for k, v in names.items()) if isinstance(names, dict) else []
            pairs = pairs or list(enumerate(names))
            self.categories = Categories(tuple(v for _, v in pairs), tuple(k for k, _ in pairs))
        except ValueError as error:
            raise DataError(
                f"{self.data_yaml}: bad names ({error}); give a list of class names or a dict "
                "of integer class ids to names."
            ) from None
        extensions = normalise_extensions(image_extensions or IMAGE_EXTENSIONS)
        images = self._split_images(spec, extensions)
        self._images = np.array([str(p) for p in images])
        known, problems = set(self.categories.dataset_ids), []
        self.num_instances = self.num_empty = self.num_unlabelled = 0
        for image in images:
            instances, bad = parse_labels(label_path(image), known)
            problems += bad
            self.num_instances += len(instances)
            self.num_empty += not instances
            self.num_unlabelled += not label_path(image).is_file()
        if self.num_unlabelled == len(images):
            raise DataError(
                f"{self.data_yaml} ({split}): none of its {len(images)} images has a label file "
                f"(that of {images[0]} would be {label_path(images[0])}). Put the labels in a "
                "'labels' folder beside 'images', with the same sub-folders, as Ultralytics does."
            )
        if problems:
            raise DataError(
                f"{self.data_yaml} ({split}): {len(problems)} problem(s) in label files; fix or "
                f"remove these lines:\n{listing(problems)}"
            )

    def _split_images(self, spec: dict[str, Any], extensions: tuple[str, ...]) -> list[Path]:
        folder = self.data_yaml.parent
        base = folder / str(spec.get("path") or ".")
        if not base.is_dir():
            log.info(
                "%s: path %s is not a folder here; reading paths from %s.",
                self.data_yaml,
                spec["path"],
                folder,
            )
            base = folder
        entry = spec.get(self.split)
        if not entry:
            raise DataError(
                f"{self.data_yaml} has no '{self.split}' split; add '{self.split}: "
                f"images/{self.split}' (a folder of images relative to path) to it."
            )
        images: list[Path] = []
        missing: list[str] = []
        for item in entry if isinstance(entry, list) else [entry]:
            path = base / str(item)
            if path.is_dir():
                found = (p for p in path.rglob("*") if p.suffix.lower() in extensions)
                images += sorted(p for p in found if p.is_file())
            elif path.is_file() and path.suffix == ".txt":
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    if line.strip():
                        images.append(path.parent / line.strip())
                        if not images[-1].is_file():
                            missing.append(f"{path} line {number}: {images[-1]}")
            else:
                raise DataError(
                    f"{self.data_yaml}: the '{self.split}' split {path} is neither a folder nor a "
                    "file listing images. Fix the split or 'path' (paths are relative to it)."
                )
        if missing:
            raise DataError(
                f"{self.data_yaml}: {len(missing)} image(s) of the '{self.split}' split do not "
                "exist (paths in a list file are relative to it); add the images or remove "
                f"these lines:\n{listing(missing)}"
            )
        if not images:
            raise DataError(
                f"{self.data_yaml}: no images in the '{self.split}' split {entry!r} (extensions "
                f"{list(extensions)}). Check the split's path and data.image_extensions."
            )
        return images

    def __len__(self) -> int:
        return len(self._images)

    def source(self, index: int) -> str:
        return f"{self._images[index]} (image {index})"

    def image_hw(self, index: int) -> tuple[int, int]:
        return self._header_hw(index, Path(str(self._images[index])))

    def describe(self) -> str:
        return (
            f"YOLO {self.data_yaml} '{self.split}': {len(self)} images ({self.num_empty} without "
            f"objects), {self.num_instances} instances of {len(self.categories.names)} classes"
        )

    def annotation_warnings(self) -> list[str]:
        if not self.num_unlabelled:
            return []
        return [
            f"{self.num_unlabelled} image(s) have no label file and train as negatives (the "
            "labels of images/<split>/a.jpg are labels/<split>/a.txt)"
        ]

    def load_raw(self, index: int) -> RawSample:
        path = Path(str(self._images[index]))
        image = read_image(path, self.source(index))
        height, width = image.shape[:2]
        instances, problems = parse_labels(label_path(path), set(self.categories.dataset_ids))
        if problems:  # the file changed since the data set was built
            raise DataError(f"{self.source(index)}: {problems[0]}")
        scale = np.array([width, height], dtype=np.float64)
        masks = [
            polygons_to_mask([(np.reshape(c, (-1, 2)) * scale).ravel().tolist()], height, width)
            for _, c in instances
        ]
        return RawSample(image, masks, [self.categories.label(i) for i, _ in instances])


def yolo_datamodule(
    root: str | Path,
    config_file: str = "data.yaml",
    train_split: str = "train",
    val_split: str | None = "val",
    image_extensions: Sequence[str] | None = None,
    **datamodule: Any,
) -> DetectionDataModule:
    """A DetectionDataModule over a YOLO data set (``data=yolo``). Validation is the data set's
    ``val_split``; without one, or when it is the training split itself (coco128's yaml), a
    ``val_fraction`` of the training images is held out."""
    train = YoloDataset(root, train_split, config_file, image_extensions)
    spec = train.spec
    val = None
    if val_split and spec.get(val_split) and spec[val_split] != spec.get(train_split):
        val = YoloDataset(root, val_split, config_file, image_extensions)
    elif val_split and spec.get(val_split):
        log.info(
            "%s: '%s' is the training split itself; holding out data.val_fraction instead.",
            train.data_yaml,
            val_split,
        )
    return DetectionDataModule(train=train, val=val, **datamodule)
