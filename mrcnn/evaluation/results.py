"""COCO results: detections as COCO results, and results files read and checked.

Boxes become xywh, labels the data set's own category ids, masks RLE (or COCO polygons). A
results file from ``predict`` or any other tool is read and checked against the ground truth
before COCOeval sees it: pycocotools would fail with a bare assertion, or silently score unknown
categories as nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

from mrcnn.data.categories import Categories
from mrcnn.data.polygons import mask_to_polygons
from mrcnn.errors import ConfigError, UserError

# How detections_to_coco_results writes masks: RLE, or COCO polygons (RLE where none fits).
MASK_FORMATS = ("rle", "polygon")


class ResultsError(UserError, ValueError):
    """A COCO results list (or file) that cannot be evaluated against the ground truth."""


def encode_masks(masks: Tensor | np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs of binary masks [N,H,W], with ``counts`` as str (json-serialisable)."""
    array = masks.numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if array.ndim != 3:
        raise ValueError(f"Masks must be [N,H,W]; got shape {array.shape}.")
    if array.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def check_mask_format(mask_format: str) -> None:
    """Raise :class:`~mrcnn.errors.ConfigError` unless ``mask_format`` is rle or polygon."""
    if mask_format not in MASK_FORMATS:
        raise ConfigError(f"mask_format={mask_format!r}: choose one of {list(MASK_FORMATS)}.")


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """COCO boxes ``[x, y, width, height]`` from torchvision's ``[x1, y1, x2, y2]``."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def detections_to_coco_results(
    detections: list[dict[str, Tensor]],
    image_ids: list[int],
    categories: Categories,
    mask_threshold: float = 0.5,
    mask_format: str = "rle",
    polygon_tolerance: float = 0.5,
) -> list[dict]:
    """COCO results (one dict per detection) from torchvision Mask R-CNN outputs.

    Boxes become xywh, labels become the data set's own category ids, masks (probabilities
    [N,1,H,W] at the image's size) are thresholded (``> mask_threshold``, as torchvision's
    reference does) and RLE-encoded, or with ``mask_format="polygon"`` traced as COCO polygons
    simplified to ``polygon_tolerance`` pixels (:func:`mrcnn.data.polygons.mask_to_polygons`;
    a mask no polygon can express, empty or with large holes, stays RLE). Everything is cast to
    float32 first: under bf16 autocast the model returns bf16 boxes, which lose pixels.
    """
    check_mask_format(mask_format)
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detections for {len(image_ids)} image ids.")
    results: list[dict] = []
    for detection, image_id in zip(detections, image_ids, strict=True):
        boxes = xyxy_to_xywh(detection["boxes"].detach().float().cpu()).tolist()
        scores = detection["scores"].detach().float().cpu().tolist()
        labels = detection["labels"].detach().cpu().tolist()
        masks = detection.get("masks")
        rles: list[dict | None] = [None] * len(labels)
        if masks is not None:
            masks = masks.detach()
            if masks.ndim == 4:
                masks = masks[:, 0]
            # Inference hands over binary masks already; probabilities are thresholded here, on
            # their device: a GPU's full-image float masks are 32x the bytes of bool ones (about
            # 120 MB for 100 detections on a 640x480 image) to copy to the CPU.
            binary = masks if masks.dtype == torch.bool else masks.float() > mask_threshold
            binary = binary.cpu()
            rles = encode_masks(binary)
            if mask_format == "polygon":
                for index, mask in enumerate(binary.numpy()):
                    rles[index] = mask_to_polygons(mask, polygon_tolerance) or rles[index]
        for box, score, label, rle in zip(boxes, scores, labels, rles, strict=True):
            result = {
                "image_id": int(image_id),
                "category_id": categories.dataset_id(label),
                "bbox": box,
                "score": score,
            }
            if rle is not None:
                result["segmentation"] = rle
            results.append(result)
    return results


def load_results(path: str | Path) -> list[dict]:
    """A COCO results list from a json file (from ``predict`` or any other tool)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(
            f"{path} is not valid json ({error}). A COCO results file is a json list of "
            '{"image_id", "category_id", "score", "bbox" and/or "segmentation"} objects.'
        ) from error
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        raise ResultsError(
            f"{path} looks like a COCO ground-truth file (it has 'images' and 'annotations'), "
            "not a results file. A results file is a json list of detections."
        )
    if not isinstance(data, list):
        raise ResultsError(
            f"{path} holds a json {type(data).__name__}, not a list. A COCO results file is a "
            'json list of {"image_id", "category_id", "score", "bbox"/"segmentation"} objects.'
        )
    return data


def check_results(results: list[dict], ground_truth: dict, source: str = "results") -> set[str]:
    """Check results against the ground truth; return the IoU types they support.

    Raises :class:`ResultsError` naming malformed entries and image or category ids that the
    ground truth does not have (pycocotools would fail with a bare assertion, or silently
    score unknown categories as nothing).
    """
    if not isinstance(results, list):
        raise ResultsError(
            f"{source}: expected a list of detections, got {type(results).__name__}."
        )
    image_ids = {image["id"] for image in ground_truth["images"]}
    category_ids = {category["id"] for category in ground_truth["categories"]}
    unknown_images: set = set()
    unknown_categories: set = set()
    has_bbox = has_segm = True
    for index, result in enumerate(results):
        if not isinstance(result, dict) or not {"image_id", "category_id", "score"} <= set(result):
            raise ResultsError(
                f"{source}: entry {index} is {str(result)[:120]!r}; every detection needs "
                "'image_id', 'category_id' and 'score', plus 'bbox' and/or 'segmentation'."
            )
        bbox, segm = result.get("bbox"), result.get("segmentation")
        if bbox is not None and (
            not isinstance(bbox, list | tuple)
            or len(bbox) != 4
            or not all(isinstance(v, int | float) for v in bbox)
        ):
            raise ResultsError(f"{source}: entry {index} has bbox {bbox!r}; expected [x, y, w, h].")
        if segm is not None and not (is_rle(segm) or is_polygons(segm)):
            raise ResultsError(
                f"{source}: entry {index} has a segmentation that is neither an RLE "
                "({'size': [h, w], 'counts': ...}) nor COCO polygons ([[x1, y1, x2, y2, ...], "
                "...], 3 points or more each)."
            )
        if bbox is None and segm is None:
            raise ResultsError(f"{source}: entry {index} has neither 'bbox' nor 'segmentation'.")
        has_bbox &= bbox is not None or segm is not None  # a box can come from the mask
        has_segm &= segm is not None
        if result["image_id"] not in image_ids:
            unknown_images.add(result["image_id"])
        if result["category_id"] not in category_ids:
            unknown_categories.add(result["category_id"])
    if unknown_images:
        raise ResultsError(
            f"{source}: {len(unknown_images)} image ids are not in the ground truth, e.g. "
            f"{sorted(unknown_images, key=str)[:10]}. Pass the data set the results were made on "
            "(data=... overrides), with the same image ids."
        )
    if unknown_categories:
        raise ResultsError(
            f"{source}: category ids {sorted(unknown_categories, key=str)} are not in the ground "
            f"truth (known: {sorted(category_ids)}). Results must use the data set's own "
            "category ids, not the model's contiguous labels."
        )
    return {t for t, ok in (("bbox", has_bbox), ("segm", has_segm)) if ok}


def is_rle(segm: Any) -> bool:
    return isinstance(segm, dict) and {"size", "counts"} <= set(segm)


def is_polygons(segm: Any) -> bool:
    return (
        isinstance(segm, list)
        and len(segm) > 0
        and all(
            isinstance(p, list | tuple)
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, int | float) for v in p)
            for p in segm
        )
    )


def bytes_rle(rle: dict | list, size: tuple[int, int] | None = None) -> dict:
    """A pycocotools RLE (bytes counts) from an RLE or from polygons on an image of ``size``."""
    if isinstance(rle, list):  # COCO polygons: the parts of one instance, merged
        height, width = size
        return mask_util.merge(mask_util.frPyObjects(rle, height, width))
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as some tools write it
        height, width = rle["size"]
        return mask_util.frPyObjects(rle, height, width)
    return {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
