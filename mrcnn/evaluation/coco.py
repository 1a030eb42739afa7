"""COCO box and mask AP: results conversion, ground truth, and evaluation with COCOeval.

Ground truth is built in one place, :func:`ground_truth_for`, for every source: a COCO dict or
json file, a COCO-annotated data set (its json: crowd regions and original ids kept), or any
other data set (its un-augmented targets, converted).

The numbers are COCOeval's own (pycocotools, or faster-coco-eval which gives identical results
faster), never a re-implementation: papers and other tools report exactly these. Traps handled
here, each covered by a test:

- ``loadRes`` takes its box branch whenever a result has a ``bbox`` key, so mask results would
  get box areas and move APs/APm/APl: ``bbox`` is dropped from results before ``segm`` (as
  detectron2 does), ``segmentation`` before ``bbox``.
- ``loadRes`` fails on an empty result list: an empty result set is built directly instead.
- ``loadRes`` and ``COCOeval`` write into the dicts they are given: both get copies.
- bf16 outputs under autocast lose box pixels: detections are cast to float32 first.
- Masks are probabilities: thresholded at ``mask_threshold`` before RLE encoding.
- Only images that were actually predicted are evaluated (``image_ids``), so a partial
  validation run is not scored against ground truth it never saw.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mrcnn.data.categories import Categories
from mrcnn.data.coco import CocoDataset, load_json
from mrcnn.data.errors import DataError
from mrcnn.data.polygons import mask_to_polygons
from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.errors import ConfigError, UserError
from mrcnn.evaluation.diagnostics import Marked, PRCurve, confusion_matrix, match_image, pr_curves

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# The 12 numbers COCOeval.summarize() computes for boxes and masks, in its order.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
# How detections_to_coco_results writes masks: RLE, or COCO polygons (RLE where none fits).
MASK_FORMATS = ("rle", "polygon")


class ResultsError(UserError, ValueError):
    """A COCO results list (or file) that cannot be evaluated against the ground truth."""


# --------------------------------------------------------------------------- conversion


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
            masks = masks.detach().cpu()
            if masks.ndim == 4:
                masks = masks[:, 0]
            # Inference hands over binary masks already; probabilities are thresholded here.
            binary = masks if masks.dtype == torch.bool else masks.float() > mask_threshold
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


# --------------------------------------------------------------------------- ground truth

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
        return {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": [im for im in data["images"] if im["id"] in wanted],
            "annotations": [a for a in data["annotations"] if a["image_id"] in wanted],
        }
    categories = categories or getattr(base, "categories", None)
    if categories is None:
        raise ValueError(
            f"{type(base).__name__} has no `categories`; pass categories to ground_truth_for."
        )
    return _samples_to_coco((base[index] for index in indices), categories)


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


# --------------------------------------------------------------------------- checking input


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
        if segm is not None and not (_is_rle(segm) or _is_polygons(segm)):
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


# --------------------------------------------------------------------------- evaluation


def resolve_backend(backend: str = "auto") -> str:
    """``faster_coco_eval`` where installed (identical numbers, 2-3x faster), else pycocotools."""
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown COCO backend {backend!r}; choose one of {list(BACKENDS)}.")
    if backend == "auto":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            return "pycocotools"
        return "faster_coco_eval"
    return backend


def _is_rle(segm: Any) -> bool:
    return isinstance(segm, dict) and {"size", "counts"} <= set(segm)


def _is_polygons(segm: Any) -> bool:
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


def _results_for(
    results: Iterable[dict], iou_type: str, sizes: dict[int, tuple[int, int]]
) -> list[dict]:
    """Copies of the results as ``loadRes`` must see them for one IoU type.

    Polygons become RLEs at their image's size (``sizes``: image id -> (height, width)):
    ``loadRes`` computes mask areas and boxes of RLEs only.
    """
    prepared = []
    for result in results:
        result = dict(result)
        segm = result.pop("segmentation", None)
        if isinstance(segm, list) and result["image_id"] not in sizes:
            raise ResultsError(
                f"Image {result['image_id']} has polygon results but no height and width in the "
                "ground truth: polygons are rasterised at the image's size."
            )
        if segm is not None:
            segm = _bytes_rle(segm, sizes.get(result["image_id"]))
        if iou_type == "segm":
            # With a bbox key, loadRes would set area = box area for mask results.
            result.pop("bbox", None)
            result["segmentation"] = segm
        elif "bbox" not in result and segm is not None:
            result["bbox"] = mask_util.toBbox(segm).tolist()
        prepared.append(result)
    return prepared


def _bytes_rle(rle: dict | list, size: tuple[int, int] | None = None) -> dict:
    """A pycocotools RLE (bytes counts) from an RLE or from polygons on an image of ``size``."""
    if isinstance(rle, list):  # COCO polygons: the parts of one instance, merged
        height, width = size
        return mask_util.merge(mask_util.frPyObjects(rle, height, width))
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as some tools write it
        height, width = rle["size"]
        return mask_util.frPyObjects(rle, height, width)
    return {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def _coco_api(backend: str) -> tuple[Any, Any]:
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _ground_truth_api(coco_cls: Any, ground_truth: dict) -> Any:
    coco = coco_cls()
    coco.dataset = copy.deepcopy(ground_truth)  # COCOeval writes into ground-truth annotations
    coco.createIndex()
    return coco


def _load_results(coco_cls: Any, gt: Any, results: list[dict]) -> Any:
    if results:
        return gt.loadRes(results)
    # pycocotools' loadRes fails on an empty list; an empty result set scores 0 where there is GT.
    empty = coco_cls()
    empty.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": [],
    }
    empty.createIndex()
    return empty


@dataclass
class CocoReport:
    """What one COCO evaluation found.

    ``metrics``: COCOeval's 12 summary numbers per IoU type (``bbox_AP`` ... ``segm_ARl``).
    ``per_class``: per IoU type, per class name, ``AP`` and ``AP50`` (-1: no ground truth of
    that class among the images evaluated), read from COCOeval's own precision array as
    detectron2 does, so they average to ``metrics[...AP]`` over the classes with ground truth.

    What the pictures of the errors need (:mod:`mrcnn.evaluation.diagnostics`), per IoU type:
    ``precision``: COCOeval's precision ``[T, R, K]`` (all areas, last maxDets), with
    ``iou_thresholds`` and ``recall_thresholds``; ``marked``: per image id, every ground-truth
    instance and detection (score >= ``score_threshold``) marked correct, missed, false positive
    or wrong class; ``confusion``: their counts ``[K+1, K+1]`` (rows: ground truth, columns:
    prediction, background last). Classes are ``class_names`` / ``category_ids`` in COCOeval's
    order (sorted ids).
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    iou_thresholds: np.ndarray | None = None
    recall_thresholds: np.ndarray | None = None
    marked: dict[str, dict[int, list[Marked]]] = field(default_factory=dict)
    confusion: dict[str, np.ndarray] = field(default_factory=dict)
    score_threshold: float = 0.5

    def pr_curves(self, iou_type: str) -> list[PRCurve]:
        """Per-class precision-recall curves at IoU 0.5 and over 0.50:0.95 (classes with
        ground truth)."""
        return pr_curves(
            self.precision[iou_type], self.recall_thresholds, self.iou_thresholds, self.class_names
        )

    def worst_classes(self, iou_type: str = "segm", count: int = 3) -> list[tuple[str, float]]:
        """The ``count`` classes with the lowest AP (classes without ground truth left out)."""
        scored = [(n, v["AP"]) for n, v in self.per_class.get(iou_type, {}).items() if v["AP"] >= 0]
        return sorted(scored, key=lambda item: item[1])[:count]


def evaluate_coco(ground_truth: dict | str | Path, results: list[dict], **options: Any) -> dict:
    """COCOeval's 12 summary numbers per IoU type, e.g. ``bbox_AP`` ... ``segm_ARl``: the
    ``metrics`` of :func:`coco_report`, which takes the same arguments (``iou_types``,
    ``backend``, ``image_ids``, ``max_detections``)."""
    return coco_report(ground_truth, results, **options).metrics


def coco_report(
    ground_truth: dict | str | Path,
    results: list[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    backend: str = "auto",
    image_ids: Iterable[int] | None = None,
    max_detections: int = 100,
    score_threshold: float = 0.5,
) -> CocoReport:
    """COCOeval's summary numbers, per-class AP, PR curves and the confusion matrix for each
    IoU type.

    Args:
        ground_truth: a COCO ground-truth dict or json file (crowd regions are kept: COCOeval
            ignores detections on them, as the official numbers do).
        results: COCO results; not modified.
        iou_types: ``bbox`` and/or ``segm``.
        backend: ``auto`` (faster-coco-eval where installed), ``faster_coco_eval`` or
            ``pycocotools``; both give identical numbers.
        image_ids: evaluate only these images (those predicted); default: every image.
        max_detections: detections per image that count (COCOeval's last ``maxDets``, 100 by
            default): dense scenes (a hundred nuclei) need more. AP and the ``AR100`` entry use it.
        score_threshold: detections below this score are left out of the confusion matrix and
            the per-image errors (AP and the PR curves count every detection).

    COCOeval's printed summary is captured (no spam in training logs) and logged at DEBUG.
    Values are -1 where COCOeval has nothing to measure (e.g. no ground truth of that size).
    """
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"Unknown iou type {iou_type!r}; choose from {list(IOU_TYPES)}.")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be at least 1, got {max_detections}.")
    if not isinstance(score_threshold, int | float) or not 0 <= score_threshold <= 1:
        raise ConfigError(
            f"confusion_score_threshold={score_threshold!r}: give a score from 0 to 1 (the "
            "confusion matrix and the worst images count detections scored at least this)."
        )
    ground_truth = ground_truth_for(ground_truth)
    supported = check_results(results, ground_truth)
    missing = [t for t in iou_types if t not in supported and results]
    if missing:
        raise ResultsError(
            f"Cannot evaluate {missing}: not every detection has a "
            f"{'segmentation' if 'segm' in missing else 'bbox'}."
        )
    backend = resolve_backend(backend)
    coco_cls, eval_cls = _coco_api(backend)
    report = CocoReport(metrics={}, score_threshold=float(score_threshold))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        gt = _ground_truth_api(coco_cls, ground_truth)
        selected = sorted(gt.getImgIds() if image_ids is None else set(image_ids))
        sizes = {i["id"]: (i["height"], i["width"]) for i in ground_truth["images"] if "width" in i}
        for iou_type in iou_types:
            prepared = _results_for(results, iou_type, sizes)
            dt = _load_results(coco_cls, gt, prepared)  # it adds ids, areas, boxes: harmless
            evaluator = (
                eval_cls(gt, dt, iouType=iou_type, print_function=print)
                if backend == "faster_coco_eval"
                else eval_cls(gt, dt, iouType=iou_type)
            )
            evaluator.params.imgIds = selected
            evaluator.params.maxDets = [1, 10, int(max_detections)]
            evaluator.evaluate()
            evaluator.accumulate()
            print(f"{iou_type} ({backend}, {len(selected)} images):")
            evaluator.summarize()
            stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(STAT_NAMES)]
            # pycocotools' summarize takes AP at maxDets=100 whatever maxDets is (it finds no
            # such column and reports -1): read it from the precision array like the others.
            stats[0] = _mean_precision(evaluator.eval["precision"][:, :, :, 0, -1])
            report.metrics.update(
                {f"{iou_type}_{name}": float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}
            )
            report.per_class[iou_type] = _per_class_ap(evaluator, gt)
            report.category_ids = [int(c) for c in evaluator.params.catIds]
            report.class_names = [str(gt.cats[c]["name"]) for c in report.category_ids]
            report.iou_thresholds = np.asarray(evaluator.params.iouThrs, dtype=np.float64)
            report.recall_thresholds = np.asarray(evaluator.params.recThrs, dtype=np.float64)
            report.precision[iou_type] = np.array(evaluator.eval["precision"][:, :, :, 0, -1])
            marked = _mark_images(
                ground_truth, prepared, iou_type, selected, sizes, score_threshold, max_detections
            )
            report.marked[iou_type] = marked
            report.confusion[iou_type] = confusion_matrix(marked, report.category_ids)
    log.debug("COCOeval output:\n%s", output.getvalue())
    return report


def _mark_images(
    ground_truth: dict,
    prepared: list[dict],
    iou_type: str,
    image_ids: Sequence[int],
    sizes: dict[int, tuple[int, int]],
    score_threshold: float,
    max_detections: int,
) -> dict[int, list[Marked]]:
    """Every evaluated image's instances marked by :func:`~mrcnn.evaluation.diagnostics.
    match_image`, from the results ``loadRes`` was given (RLE masks) and the ground truth."""
    wanted = set(image_ids)
    gts: dict[int, list[dict]] = {i: [] for i in image_ids}
    for ann in ground_truth["annotations"]:
        if ann["image_id"] not in wanted:
            continue
        ann = dict(ann)
        if iou_type == "segm":
            ann["segmentation"] = _bytes_rle(ann["segmentation"], sizes.get(ann["image_id"]))
        else:
            ann.pop("segmentation", None)
        gts[ann["image_id"]].append(ann)
    dts: dict[int, list[dict]] = {i: [] for i in image_ids}
    for result in prepared:
        if result["image_id"] in wanted:
            if "bbox" not in result:
                result = {**result, "bbox": mask_util.toBbox(result["segmentation"]).tolist()}
            dts[result["image_id"]].append(result)
    marked = {}
    for image_id in image_ids:
        # COCOeval counts only the best max_detections of an image; so does the matrix.
        kept = sorted(dts[image_id], key=lambda d: -d["score"])[:max_detections]
        marked[image_id] = match_image(gts[image_id], kept, iou_type, score_threshold)
    return marked


def _mean_precision(precision: np.ndarray) -> float:
    """COCOeval's average of a slice of its precision array (-1 entries: nothing to measure)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0


def _per_class_ap(evaluator: Any, gt: Any) -> dict[str, dict[str, float]]:
    """AP and AP50 of every category, all areas, at the last maxDets (detectron2's recipe)."""
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall, class, area, maxDets]
    iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
    per_class = {}
    for index, category_id in enumerate(evaluator.params.catIds):
        name = str(gt.cats[category_id]["name"])
        per_class[name] = {
            "AP": _mean_precision(precision[:, :, index, 0, -1]),
            "AP50": _mean_precision(precision[iou50, :, index, 0, -1]),
        }
    return per_class


def per_class_table(report: CocoReport) -> tuple[list[str], list[list[str | float | None]]]:
    """Per-class AP and AP50 (0..1) for each IoU type: the columns (``class``, ``bbox AP``,
    ``bbox AP50``, ``segm AP``, ...) and one row per class, worst first (by segm AP when there
    are masks); None where a class has no ground truth among the images evaluated."""
    types = [t for t in IOU_TYPES if t in report.per_class]
    names = list(next(iter(report.per_class.values()), {}))
    key = types[-1] if types else None  # segm when there are masks
    names.sort(key=lambda n: report.per_class[key][n]["AP"] if key else 0)
    columns = ["class", *(f"{t} {stat}" for t in types for stat in ("AP", "AP50"))]
    rows: list[list[str | float | None]] = []
    for name in names:
        values = [report.per_class[t][name][stat] for t in types for stat in ("AP", "AP50")]
        rows.append([name, *(value if value >= 0 else None for value in values)])
    return columns, rows


def format_per_class_table(report: CocoReport) -> str:
    """Per-class AP and AP50 (percent) for each IoU type, one row per class, worst first."""
    columns, rows = per_class_table(report)
    width = max([len(str(row[0])) for row in rows] + [5])
    cells = [11 if index % 2 else 12 for index in range(1, len(columns))]  # AP, AP50 widths
    titles = zip(columns[1:], cells, strict=True)
    header = f"{'class':<{width}}" + "".join(f"{title:>{w}}" for title, w in titles)
    lines = [header]
    for name, *values in rows:
        text = [
            f"{'-':>{w}}" if v is None else f"{100 * v:>{w}.2f}"
            for v, w in zip(values, cells, strict=True)
        ]
        lines.append(f"{name:<{width}}" + "".join(text))
    return "\n".join(lines)


def format_metrics_table(metrics: dict[str, float], iou_types: Sequence[str] = IOU_TYPES) -> str:
    """A readable table: one row per IoU type, one column per COCO statistic (in percent)."""
    rows = [t for t in iou_types if any(k.startswith(f"{t}_") for k in metrics)]
    width = 7
    lines = ["      " + "".join(f"{name:>{width}}" for name in STAT_NAMES)]
    for iou_type in rows:
        cells = []
        for name in STAT_NAMES:
            value = metrics.get(f"{iou_type}_{name}")
            cells.append(
                f"{'-':>{width}}" if value is None or value < 0 else f"{100 * value:>{width}.2f}"
            )
        lines.append(f"{iou_type:<6}" + "".join(cells))
    return "\n".join(lines)
