"""What happens around validation: COCO metrics, image panels, the random-state guard, and the
step of the last validation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from mrcnn.data.categories import Categories
from mrcnn.evaluation.calibration import CHECKPOINT_KEY, Calibration
from mrcnn.evaluation.cocoeval import CocoReport
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.evaluation.tables import per_class_table
from mrcnn.loggers import log_image, log_table
from mrcnn.visualize import (
    draw_prediction,
    draw_target,
    panel_grid,
    plot_confusion_matrix,
    plot_error_breakdown,
    plot_pr_curves,
    side_by_side,
)

log = logging.getLogger(__name__)


class ValidationDetections(Callback):
    """A callback fed every validation batch with its detections: it asks the module for them
    (``detect_in_validation``), which ``validation_step`` then returns from its one pass."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.detect_in_validation = True

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if outputs is not None:
            self.update(pl_module, batch, outputs)

    def update(
        self, pl_module: L.LightningModule, batch: Any, detections: list[dict[str, Tensor]]
    ) -> None:
        """Use one batch ``(images, targets)`` and its detections."""
        raise NotImplementedError


class CocoMetrics(ValidationDetections):
    """COCO box and mask AP of every validation, logged as ``val/bbox_AP``, ``val/segm_AP``, ...,
    per class as ``val/segm_AP/<class>`` and as the table ``val/per_class_AP`` (AP and AP50 of
    each class, worst first) to every logger that takes tables (:func:`mrcnn.loggers.log_table`).

    The evaluator (and its ground truth, built once from the validation set) is handed in.
    For each IoU type in ``error_plots`` (``bbox``, ``segm``), the per-class PR curves and the
    confusion matrix of the same evaluation go to the loggers as images
    ``val/pr_curves_<type>`` and ``val/confusion_matrix_<type>`` (drawn on rank zero only), and
    TIDE's error breakdown as ``val/error_breakdown``. Boundary AP is logged as
    ``val/boundary_AP``, ... when the evaluator computes it.

    Each validation fits per-class score thresholds (:mod:`mrcnn.evaluation.calibration`); every
    checkpoint saved after it carries them (key ``mrcnn_calibration``), so the final checkpoint
    holds the thresholds of its own weights.
    """

    def __init__(self, evaluator: CocoEvaluator, error_plots: Sequence[str] = ()) -> None:
        self.evaluator = evaluator
        self.error_plots = tuple(error_plots)
        self.calibration: Calibration | None = None
        self._categories: Categories | None = None

    def label_thresholds(self) -> float | dict[int, float]:
        """The last validation's calibrated thresholds per label (0.5 before the first)."""
        if self.calibration is None or self._categories is None:
            return 0.5
        return self.calibration.by_label(self._categories)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.calibration is not None:
            checkpoint[CHECKPOINT_KEY] = self.calibration.to_dict()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluator.reset()

    def update(
        self, pl_module: L.LightningModule, batch: Any, detections: list[dict[str, Tensor]]
    ) -> None:
        self.evaluator.update(detections, [target["image_id"] for target in batch[1]])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        report = self.evaluator.compute_report()
        if report.calibration is not None:
            self.calibration, self._categories = report.calibration, pl_module.categories
        metrics = dict(report.metrics)
        for iou_type, classes in report.per_class.items():
            for name, values in classes.items():
                metrics |= {f"{iou_type}_{stat}/{name}": value for stat, value in values.items()}
        # COCOeval reports -1 where a stat is undefined (no ground truth of that size range or
        # class); on a curve it would read as a real value, so it is left out.
        defined = {f"val/{name}": value for name, value in metrics.items() if value >= 0}
        if defined:
            pl_module.log_dict(defined, sync_dist=True)  # the same on every rank: no change
        if trainer.is_global_zero and report.per_class:
            columns, rows = per_class_table(report)
            log_table(trainer.loggers, "val/per_class_AP", columns, rows, trainer.global_step)
        if trainer.is_global_zero and trainer.loggers:  # no logger: nothing to draw for
            self.log_error_plots(trainer, report)
        worst = report.worst_classes("segm" if "segm" in report.per_class else "bbox")
        if worst and trainer.is_global_zero and len(report.per_class.get("segm", {})) > 1:
            log.info(
                "Weakest classes by AP at step %d: %s",
                trainer.global_step,
                ", ".join(f"{name} {value:.3f}" for name, value in worst),
            )

    def log_error_plots(self, trainer: L.Trainer, report: CocoReport) -> None:
        """PR curves and confusion matrix of each IoU type in ``error_plots``, one image each."""
        step = trainer.global_step
        for iou_type in self.error_plots:
            if iou_type not in report.precision:
                continue  # nothing evaluated (no image seen) or not this IoU type
            curves = plot_pr_curves(report.pr_curves(iou_type), f"{iou_type}, step {step}")
            log_image(trainer.loggers, f"val/pr_curves_{iou_type}", curves, step)
            title = f"{iou_type}, step {step} (IoU >= 0.5, score >= {report.threshold_text})"
            matrix = plot_confusion_matrix(report.confusion[iou_type], report.class_names, title)
            log_image(trainer.loggers, f"val/confusion_matrix_{iou_type}", matrix, step)
        shown = {t: e for t, e in report.errors.items() if t in self.error_plots}
        if shown:
            title = f"Which errors cost the AP (TIDE), step {step}"
            breakdown = plot_error_breakdown(shown, title)
            log_image(trainer.loggers, "val/error_breakdown", breakdown, step)


class ImagePanels(ValidationDetections):
    """The first ``count`` validation images, ground truth beside the detections, logged as the
    image ``val/ground_truth_vs_prediction`` at every validation (TensorBoard, MLflow, W&B).

    The validation loader is not shuffled, so they are the same images every time.
    """

    def __init__(
        self,
        count: int,
        score_threshold: float | Callable[[], float | dict[int, float]],
        mask_threshold: float,
    ) -> None:
        self.count = count
        self.score_threshold = score_threshold  # or what gives it (calibrated thresholds)
        self.mask_threshold = mask_threshold
        self._panels: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._panels = []

    def update(
        self, pl_module: L.LightningModule, batch: Any, detections: list[dict[str, Tensor]]
    ) -> None:
        categories = pl_module.categories
        threshold = self.score_threshold
        threshold = threshold() if callable(threshold) else threshold
        for image, target, detection in zip(*batch, detections, strict=True):
            if len(self._panels) >= self.count:
                return
            prediction = draw_prediction(
                image, detection, categories, threshold, self.mask_threshold
            )
            self._panels.append(side_by_side(draw_target(image, target, categories), prediction))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._panels:
            return
        grid = panel_grid(self._panels, columns=1)
        log_image(trainer.loggers, "val/ground_truth_vs_prediction", grid, trainer.global_step)


class ValidationRandomStateGuard(Callback):
    """Validation samples RoIs for its losses; it must not move the training's random stream,
    or a resumed run (or one validating at other steps) would train differently."""

    def __init__(self) -> None:
        self._saved: tuple[Tensor, Tensor | None] | None = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self._saved = (torch.get_rng_state(), cuda)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved is None:
            return
        cpu, cuda = self._saved
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, pl_module.device)
        self._saved = None


class ValidatedStep(Callback):
    """The optimizer step of the last validation (-1: none yet), so that a run can validate its
    final weights when the last step was not validated."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


def validated_step(trainer: L.Trainer) -> int:
    """The step of the trainer's last validation (-1: none), from its :class:`ValidatedStep`."""
    return next(c.step for c in trainer.callbacks if isinstance(c, ValidatedStep))
