"""COCO ground truth, built in one place for every source: a COCO dict or json file, a
COCO-annotated data set (its json: crowd regions and original ids kept), or any other data set
(its un-augmented targets, converted)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pycocotools.mask as mask_util
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mrcnn.data.categories import Categories
from mrcnn.data.coco import CocoDataset, load_json
from mrcnn.data.errors import DataError
from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.evaluation.results import bytes_rle, encode_masks, xyxy_to_xywh

GroundTruthSource = dict | str | Path | Dataset | Sequence[tuple[Tensor, dict]]


def ground_truth_for(source: GroundTruthSource, categories: Categories | None = None) -> dict:
    """COCO ground truth, the one way mrcnn builds it, for evaluation and results checks.

    ``source`` is one of:

    - a COCO dict or instances json file: checked and returned as it is;
    - a data set, under any ``Subset``/transform wrappers (never augmented: the wrappers are
      looked through): a :class:`~mrcnn.data.coco.CocoDataset` answers from its json, restricted
      to its items' images (crowd regions, original image and category ids kept, as COCOeval
      needs them); any other data set (synthetic, mask folders, or a list of ``(image, target)``
      pairs) is read once and its targets converted by :func:`_samples_to_coco` with
      ``categories`` (default: the data set's own).
    """
    if isinstance(source, dict):
        return _checked_ground_truth(source, "COCO ground truth")
    if isinstance(source, str | Path):
        return _checked_ground_truth(load_json(source), str(source))
    base, indices = unwrap_dataset(source)
    if isinstance(base, CocoDataset):
        data = load_json(base.annotations)
        wanted = {base.image_id(i) for i in indices}
        images = [im for im in data["images"] if im["id"] in wanted]
        sizes = {im["id"]: (im["height"], im["width"]) for im in images}
        return {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": images,
            "annotations": [
                completed(a, sizes[a["image_id"]])
                for a in data["annotations"]
                if a["image_id"] in wanted
            ],
        }
    categories = categories or getattr(base, "categories", None)
    if categories is None:
        raise ValueError(
            f"{type(base).__name__} has no `categories`; pass categories to ground_truth_for."
        )
    return _samples_to_coco((base[index] for index in indices), categories)


def completed(annotation: dict, size: tuple[int, int]) -> dict:
    """A COCO annotation with the keys COCOeval reads: ``bbox`` and ``area`` computed from its
    segmentation where the json leaves them out (COCO files from some tools do; mrcnn trains on
    the masks and never needed them), ``iscrowd`` 0 where absent."""
    if "bbox" in annotation and "area" in annotation and "iscrowd" in annotation:
        return annotation
    annotation = {"iscrowd": 0, **annotation}
    if "bbox" not in annotation or "area" not in annotation:
        rle = bytes_rle(annotation["segmentation"], size)
        annotation.setdefault("bbox", mask_util.toBbox(rle).tolist())
        annotation.setdefault("area", float(mask_util.area(rle)))
    return annotation


def _checked_ground_truth(data: Any, source: str) -> dict:
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(
            f"{source}: COCO ground truth needs 'images', 'annotations' and 'categories' lists."
        )
    return data


def _samples_to_coco(samples: Iterable[tuple[Tensor, dict]], categories: Categories) -> dict:
    """COCO ground truth from ``(image, target)`` samples (the image gives the size).

    Segmentations are RLEs, ``area`` is the mask's pixel count (what COCOeval's area ranges
    use), boxes are xywh, category ids are the data set's (``categories``), ``iscrowd`` comes
    from the target when it has one (else 0). Annotation ids start at 1: COCOeval treats id 0
    as "unmatched".
    """
    images, annotations = [], []
    seen: set[int] = set()
    for image, target in samples:
        height, width = (int(s) for s in image.shape[-2:])
        image_id = int(target["image_id"])
        if image_id in seen:
            raise ValueError(f"Image id {image_id} appears twice; image ids must be unique.")
        seen.add(image_id)
        images.append({"id": image_id, "height": height, "width": width})
        masks = torch.as_tensor(target["masks"]).as_subclass(Tensor)
        if masks.numel() and tuple(masks.shape[-2:]) != (height, width):
            raise ValueError(
                f"Image {image_id}: masks are {tuple(masks.shape[-2:])} but the image is "
                f"{(height, width)} (height, width)."
            )
        rles = encode_masks(masks.reshape(-1, height, width) != 0)
        areas = mask_util.area(rles).tolist() if rles else []
        boxes = xyxy_to_xywh(torch.as_tensor(target["boxes"]).float().reshape(-1, 4)).tolist()
        labels = torch.as_tensor(target["labels"]).reshape(-1).tolist()
        crowd = target.get("iscrowd")
        crowd = [0] * len(labels) if crowd is None else torch.as_tensor(crowd).reshape(-1).tolist()
        for rle, area, box, label, iscrowd in zip(rles, areas, boxes, labels, crowd, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories.dataset_id(label),
                    "segmentation": rle,
                    "area": float(area),
                    "bbox": box,
                    "iscrowd": int(iscrowd),
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name}
            for cid, name in zip(categories.dataset_ids, categories.names, strict=True)
        ],
    }
