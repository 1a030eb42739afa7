"""COCO evaluation during validation: accumulate compact results, gather, evaluate once.

Each validation batch is converted at once to COCO results with RLE masks (a few hundred bytes
per detection instead of full-image float masks), so memory stays small and, under DDP, only
these compact results travel between processes. Rank zero evaluates; every rank gets the
metrics (so checkpoint callbacks monitoring ``val/segm_AP`` work on each rank).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist
from torch import Tensor

from mrcnn.data.categories import Categories
from mrcnn.evaluation.cocoeval import IOU_TYPES, CocoReport, coco_report
from mrcnn.evaluation.results import detections_to_coco_results

log = logging.getLogger(__name__)


def _warn_if_denser_than(ground_truth: dict, max_detections: int) -> None:
    """Warn when an image holds more ground-truth instances than detections count: its recall,
    and so its AP, cannot reach 1 (raise evaluation.max_detections)."""
    counts: dict[Any, int] = {}
    for annotation in ground_truth.get("annotations", []):
        if not annotation.get("iscrowd", 0):
            counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    dense = {image_id: n for image_id, n in counts.items() if n > max_detections}
    if dense:
        image_id, most = max(dense.items(), key=lambda item: item[1])
        log.warning(
            "%d validation image(s) hold more than %d ground-truth instances (image %s: %d); "
            "COCO AP counts at most %d detections per image, so their AP cannot reach 1. Raise "
            "evaluation.max_detections (model.detector.box_detections_per_img follows it).",
            len(dense),
            max_detections,
            image_id,
            most,
            max_detections,
        )


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CocoEvaluator:
    """Collects detections batch by batch and computes COCO box and mask AP.

    Usage in a validation loop::

        evaluator.reset()                                  # on_validation_epoch_start
        evaluator.update(detections, image_ids)            # each validation_step
        metrics = evaluator.compute()                      # on_validation_epoch_end

    Results are kept per image id: an image seen twice (DDP's sampler pads the last batch with
    repeats) counts once. Only images that were predicted are evaluated, so
    ``limit_val_batches`` gives the AP of the images seen, not one diluted by unseen ones.
    """

    def __init__(
        self,
        ground_truth: dict,
        categories: Categories,
        iou_types: Sequence[str] = IOU_TYPES,
        mask_threshold: float = 0.5,
        backend: str = "auto",
        max_detections: int = 100,
        score_threshold: float | str = 0.5,
        boundary_dilation: float | None = None,
        calibration: tuple[str, float | None] | None = None,
        tide: bool = True,
    ) -> None:
        self.ground_truth = ground_truth
        self.categories = categories
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self.backend = backend
        self.max_detections = max_detections
        self.score_threshold = score_threshold  # of the confusion matrix (or `calibrated`)
        self.boundary_dilation = boundary_dilation  # Boundary AP; None: none
        self.calibration = calibration  # (goal, precision target): thresholds fitted each time
        self.tide = tide  # TIDE's error breakdown (calibration implies it)
        _warn_if_denser_than(ground_truth, max_detections)
        self._known_ids = {image["id"] for image in ground_truth["images"]}
        self._results: dict[int, list[dict]] = {}

    def reset(self) -> None:
        self._results = {}

    def __len__(self) -> int:
        """Images seen since the last reset (on this process)."""
        return len(self._results)

    def update(self, detections: list[dict[str, Tensor]], image_ids: Sequence[Any]) -> None:
        """Convert one batch's detections to compact COCO results (RLE masks) and keep them."""
        ids = [int(i.item() if isinstance(i, Tensor) else i) for i in image_ids]
        unknown = [i for i in ids if i not in self._known_ids]
        if unknown:
            raise KeyError(
                f"Image ids {unknown} are not in the evaluation ground truth; it must be built "
                "from the validation set (ground_truth_for(datamodule.val_set))."
            )
        results = detections_to_coco_results(
            detections, ids, self.categories, mask_threshold=self.mask_threshold
        )
        per_image: dict[int, list[dict]] = {i: [] for i in ids}
        for result in results:
            per_image[result["image_id"]].append(result)
        for image_id, image_results in per_image.items():
            self._results.setdefault(image_id, image_results)

    def gather(self) -> dict[int, list[dict]]:
        """Every process's results merged (first copy of each image wins); local if not DDP."""
        if not _distributed():
            return dict(self._results)
        gathered: list[dict[int, list[dict]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._results)
        merged: dict[int, list[dict]] = {}
        for part in gathered:
            for image_id, image_results in (part or {}).items():
                merged.setdefault(image_id, image_results)
        return merged

    def compute(self) -> dict[str, float]:
        """COCO metrics (``bbox_AP`` ... ``segm_ARl``) over every image seen, on every rank
        (:meth:`compute_report`'s ``metrics``)."""
        return self.compute_report().metrics

    def compute_report(self) -> CocoReport:
        """COCO metrics and per-class AP over every image seen, on every rank.

        Under DDP, results are gathered, rank zero runs COCOeval once, and the report is
        broadcast. Empty if no image was seen.
        """
        merged = self.gather()
        report = CocoReport(metrics={})
        rank = dist.get_rank() if _distributed() else 0
        if rank == 0 and merged:
            results = [r for image_results in merged.values() for r in image_results]
            report = coco_report(
                self.ground_truth,
                results,
                iou_types=self.iou_types,
                backend=self.backend,
                image_ids=merged.keys(),
                max_detections=self.max_detections,
                score_threshold=self.score_threshold,
                boundary_dilation=self.boundary_dilation,
                tide=self.tide,
                calibration=self.calibration,
            )
        if _distributed():
            # Every rank needs the numbers; the per-image marks (RLE masks) and TIDE's per
            # detection points stay on rank zero.
            marked, report.marked = report.marked, {}
            points = {t: (e.points, e.num_gt) for t, e in report.errors.items()}
            for errors in report.errors.values():
                errors.points, errors.num_gt = {}, {}
            box = [report]
            dist.broadcast_object_list(box, src=0)
            report = box[0]
            if rank == 0:
                report.marked = marked
                for iou_type, (kept, counts) in points.items():
                    report.errors[iou_type].points = kept
                    report.errors[iou_type].num_gt = counts
        return report

    def results(self) -> list[dict]:
        """This process's COCO results so far (e.g. to write a results file)."""
        return [r for image_results in self._results.values() for r in image_results]
