"""COCO json instance segmentation (polygons, RLE) on pycocotools, compact in memory.

The annotation file is parsed once and checked as a whole (every problem listed, not only the
first). What items need later is stored as numpy arrays and one pickled byte record per image:
data loader workers then share it copy-on-write without touching Python refcounts, so their
memory stays flat over an epoch (a list of dicts per image grows in every worker; see
detectron2's ``data/common.py``). Masks are decoded per item, never held.
"""

from __future__ import annotations

import gc
import json
import logging
import pickle
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.errors import DataError, SizeMismatchError, listing
from mrcnn.data.images import read_image
from mrcnn.data.polygons import decode_rle, polygons_to_mask

log = logging.getLogger(__name__)

# What json.load gives for numbers (bool is an int to isinstance, as it was accepted before).
NUMBER_TYPES = frozenset({int, float, bool})


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a big annotation file is read.

    ``json.load`` and parsing create millions of objects without cycles; the collector's passes
    over them took about a third of the start-up time on a COCO-train-sized file (see
    ``benchmarks/scale.py``). Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_json(path: str | Path) -> dict[str, Any]:
    """The parsed annotation file; a clear error for a missing or malformed one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Annotation file {path} does not exist. Set data.train.annotations (and "
            "data.val.annotations) to a COCO instances json."
        )
    try:
        with path.open("rb") as file, cyclic_gc_paused():
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise DataError(
            f"Annotation file {path} is not valid json: {error.msg} at line {error.lineno}, "
            f"column {error.colno}. Re-export it, or check that it was copied completely."
        ) from None
    except UnicodeDecodeError as error:
        raise DataError(f"Annotation file {path} is not UTF-8 text json ({error}).") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if not isinstance(data, dict) or missing:
        raise DataError(
            f"Annotation file {path} lacks the COCO keys {missing}; an instances json has "
            "'images', 'annotations' and 'categories' lists."
        )
    return data


def _segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why a segmentation cannot be decoded, or None when it can."""
    if isinstance(seg, list):
        if not seg:
            return "has an empty segmentation list"
        # Types are collected in C (map/set): a per-coordinate isinstance loop took longer
        # than parsing the json itself on a COCO-train-sized file (benchmarks/scale.py).
        if not all(isinstance(p, list) for p in seg) or not NUMBER_TYPES.issuperset(
            map(type, chain.from_iterable(seg))
        ):
            return "has a polygon segmentation that is not a list of coordinate lists"
        return None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [height, width]:
            return (
                f"has an RLE mask of size {seg['size'][1]}x{seg['size'][0]} (WxH) but its image is "
                f"{width}x{height}; re-export the mask at the image's size"
            )
        return None
    return "has no usable segmentation (Mask R-CNN needs a polygon or RLE mask per annotation)"


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A uint8 mask [H,W] from COCO polygons (all parts) or RLE (compressed or uncompressed)."""
    if isinstance(seg, list):
        return polygons_to_mask(seg, height, width)
    if isinstance(seg["counts"], list):
        return decode_rle(mask_utils.frPyObjects(seg, height, width))
    counts = seg["counts"]
    return decode_rle(
        {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    )


class CocoDataset(InstanceDataset):
    """Images of a folder annotated by a COCO instances json.

    Category ids (COCO: 1..90 with gaps) become contiguous labels 1..K through
    :attr:`categories`. Crowd regions (``iscrowd=1``) are kept out of training targets, as in
    torchvision, detectron2 and MMDetection; evaluation's ground truth keeps them
    (:func:`mrcnn.evaluation.ground_truth.ground_truth_for` reads it from :attr:`annotations`).

    Args:
        images: folder the json's ``file_name`` entries are relative to.
        annotations: the COCO instances json.
        keep_empty: keep images without (non-crowd) annotations as negatives.
    """

    def __init__(self, images: str | Path, annotations: str | Path, keep_empty: bool = True):
        self.images = Path(images)
        self.annotations = Path(annotations)
        self.keep_empty = keep_empty
        if not self.images.is_dir():
            raise DataError(
                f"Image folder {self.images} does not exist (for {self.annotations}). Set "
                "data.train.images / data.val.images to the folder holding the json's file_name "
                "entries."
            )
        with cyclic_gc_paused():
            data = load_json(self.annotations)
            self.categories = self._parse_categories(data["categories"])
            self._parse(data)
            del data
        if self.num_instances == 0:
            raise DataError(
                f"{self.annotations}: no usable instance at all ({len(self)} images, "
                f"{self.num_crowd} crowd regions, which are never trained on). Mask R-CNN "
                "needs annotated objects: check that this is the instances json, not captions "
                "or keypoints, and that its annotations list is not empty."
            )

    # -- parsing --------------------------------------------------------------------------------
    def _parse_categories(self, categories: list) -> Categories:
        problems, seen = [], set()
        for cat in categories:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                problems.append(f"category entry {cat!r} needs an 'id' and a 'name'")
            elif cat["id"] in seen:
                problems.append(f"category id {cat['id']} appears more than once")
            else:
                seen.add(cat["id"])
        if not categories:
            problems.append("the 'categories' list is empty")
        if problems:
            raise DataError(f"{self.annotations}: bad categories:\n{listing(problems)}")
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return Categories(
            names=tuple(c["name"] for c in ordered), dataset_ids=tuple(c["id"] for c in ordered)
        )

    def _parse(self, data: dict[str, Any]) -> None:
        problems: list[str] = []
        index_of: dict[int, int] = {}
        images = []
        for entry in data["images"]:
            keys = ("id", "file_name", "height", "width")
            if not isinstance(entry, dict) or any(k not in entry for k in keys):
                problems.append(f"image entry {str(entry)[:80]} needs {', '.join(keys)}")
            elif entry["id"] in index_of:
                problems.append(f"image id {entry['id']} appears more than once")
            else:
                index_of[entry["id"]] = len(images)
                images.append(entry)
        per_image: list[list[tuple]] = [[] for _ in images]
        sizes = [(int(image["height"]), int(image["width"])) for image in images]
        seen_ids: set[int] = set()
        # One pass over every annotation (860k for COCO train): messages are only formatted
        # for problems, and the common path does nothing twice.
        label_of = {cid: self.categories.label(cid) for cid in self.categories.dataset_ids}
        self.num_crowd = 0
        for ann in data["annotations"]:
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            if ann_id is None:
                problems.append(f"annotation {str(ann)[:80]} has no 'id'")
                continue
            if ann_id in seen_ids:
                problems.append(f"annotation id {ann_id} appears more than once")
                continue
            seen_ids.add(ann_id)
            index = index_of.get(ann.get("image_id"))
            if index is None:
                problems.append(
                    f"annotation id {ann_id} is for image id {ann.get('image_id')}, which is not "
                    "in 'images'"
                )
                continue
            label = label_of.get(ann.get("category_id"))
            if label is None:
                problems.append(
                    f"annotation id {ann_id} (image id {ann['image_id']}) has category id "
                    f"{ann.get('category_id')}, which is not in 'categories'"
                )
                continue
            if ann.get("iscrowd", 0):
                self.num_crowd += 1
                continue  # evaluation reads crowd regions from the json itself
            segmentation = ann.get("segmentation")
            problem = _segmentation_problem(segmentation, *sizes[index])
            if problem:
                problems.append(f"annotation id {ann_id} (image id {ann['image_id']}) {problem}")
                continue
            per_image[index].append((int(ann_id), label, segmentation))
        if problems:
            raise DataError(
                f"{self.annotations}: {len(problems)} problem(s); fix or remove these entries:\n"
                f"{listing(problems)}"
            )
        keep = [i for i in range(len(images)) if self.keep_empty or per_image[i]]
        self.num_instances = sum(len(per_image[i]) for i in keep)
        self.num_empty = sum(1 for i in keep if not per_image[i])
        self._image_ids = np.array([images[i]["id"] for i in keep], dtype=np.int64)
        self._hw = np.array(
            [(images[i]["height"], images[i]["width"]) for i in keep], dtype=np.int64
        ).reshape(-1, 2)
        # File names apart from the records: the start-up check stats every file without
        # unpickling every image's annotations.
        self._file_names = np.array([str(images[i]["file_name"]) for i in keep])
        records = [pickle.dumps(per_image[i], protocol=5) for i in keep]
        self._offsets = np.cumsum([0, *map(len, records)], dtype=np.int64)
        self._records = np.frombuffer(b"".join(records), dtype=np.uint8)

    # -- the data set contract ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._image_ids)

    def _record(self, index: int) -> list[tuple[int, int, Any]]:
        """Item ``index``'s annotations: (annotation id, label, segmentation) each."""
        start, end = self._offsets[index], self._offsets[index + 1]
        return pickle.loads(self._records[start:end].tobytes())

    def image_file(self, index: int) -> Path:
        return self.images / str(self._file_names[index])

    def image_hw(self, index: int) -> tuple[int, int]:
        """Height and width from the json (no decoding), for aspect-ratio grouping."""
        height, width = self._hw[index]
        return int(height), int(width)

    def image_id(self, index: int) -> int:
        return int(self._image_ids[index])

    def source(self, index: int) -> str:
        return f"{self.annotations} image id {self.image_id(index)} ({self.image_file(index)})"

    def describe(self) -> str:
        """One line for the training log: what is trained on and what is left out."""
        return (
            f"COCO {self.annotations}: {len(self)} images ({self.num_empty} without instances), "
            f"{self.num_instances} instances of {len(self.categories.names)} categories, "
            f"{self.num_crowd} crowd regions (evaluation only)"
        )

    def image_labels(self, index: int) -> list[int]:
        """The labels of the image's instances, from the json (nothing decoded)."""
        return [label for _, label, _ in self._record(index)]

    def load_raw(self, index: int) -> RawSample:
        anns = self._record(index)
        source = self.source(index)
        image = read_image(self.image_file(index), source)
        height, width = self.image_hw(index)
        if image.shape[:2] != (height, width):
            raise SizeMismatchError(
                f"{source}: the image is {image.shape[1]}x{image.shape[0]} (WxH, EXIF orientation "
                f"applied) but the json says {width}x{height}. Fix width/height in the json or "
                "replace the file with the one that was annotated."
            )
        masks = [decode_segmentation(seg, height, width) for _, _, seg in anns]
        return RawSample(image, masks, [label for _, label, _ in anns])

    def annotation_warnings(self) -> list[str]:
        """What is odd in the json but does not stop training (for ``mrcnn.data.check``):
        degenerate or out-of-image ``bbox`` entries (targets use the masks' boxes instead) and
        image files listed twice."""
        data = load_json(self.annotations)
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        warnings = []
        for ann in data["annotations"]:
            bbox = ann.get("bbox")
            if not bbox or len(bbox) != 4:
                continue
            x, y, w, h = bbox
            height, width = sizes[ann["image_id"]]
            if w <= 0 or h <= 0:
                warnings.append(f"annotation id {ann['id']}: degenerate bbox {bbox}")
            elif x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
                warnings.append(
                    f"annotation id {ann['id']}: bbox {bbox} leaves its {width}x{height} image"
                )
        names = Counter(im["file_name"] for im in data["images"])
        warnings += [f"file {n} is listed for {c} image ids" for n, c in names.items() if c > 1]
        return warnings


def optional_coco_dataset(
    images: str | Path | None = None, annotations: str | Path | None = None, **kwargs: Any
) -> CocoDataset | None:
    """A :class:`CocoDataset`, or None when neither path is given (the config's "no val set,
    split train" case: ``data.val.images=...`` overrides then work without a ``+``)."""
    if images is None and annotations is None:
        return None
    if images is None or annotations is None:
        raise DataError(
            f"A COCO split needs both an image folder and an annotation file; got images={images} "
            f"and annotations={annotations}. Set both (data.val.images=DIR "
            "data.val.annotations=FILE.json) or neither (then val_fraction of train is held out)."
        )
    return CocoDataset(images, annotations, **kwargs)
