"""The LightningModule: torchvision's MaskRCNN, its five losses, COCO AP, optimizer and schedule."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from mrcnn.data.categories import Categories
from mrcnn.data.errors import DataError
from mrcnn.evaluation.coco import ground_truth_for
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.model.builder import build_maskrcnn
from mrcnn.model.forward import losses_and_detections
from mrcnn.model.schedule import parameter_groups, scaled_lr, warmup_schedule
from mrcnn.visualize import draw_prediction, draw_target, panel_grid, side_by_side

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
Batch = tuple[list[Tensor], list[dict[str, Any]]]


DEFAULT_EVALUATION = {
    "coco_metrics": True,
    "mask_threshold": 0.5,
    "backend": "auto",
    "image_panels": 4,
    "panel_score_threshold": 0.5,
}


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and every loss term."""


class MaskRCNNModule(L.LightningModule):
    """Mask R-CNN for training and validation.

    Every argument is plain data (dicts, lists, numbers, strings), saved as hyper-parameters,
    so a checkpoint alone rebuilds the model and its class mapping, and loads with
    ``torch.load(..., weights_only=True)``.

    Args:
        categories: ``Categories.to_dict()`` of the training data; sets ``num_classes``.
        backbone: keyword arguments of :func:`build_maskrcnn` (``name``, ``weights``, ...).
        detector: ``MaskRCNN`` keyword arguments (sizes, RPN and RoI-head settings).
        loss_weights: a weight per loss name (missing ones are 1).
        optimizer: a Hydra ``_target_`` config of a ``torch.optim`` optimizer, without params.
        scheduler: options of :func:`warmup_schedule`, or None for a constant learning rate.
        on_nonfinite_loss: ``raise`` stops the run; ``skip`` skips the batch and counts it.
        evaluation: validation options: ``coco_metrics`` (compute box and mask AP, default
            true), ``mask_threshold`` (0.5), ``backend`` (``auto``), ``image_panels`` (how
            many validation images TensorBoard shows with ground truth and predictions, 4),
            ``panel_score_threshold`` (0.5).
        lr_reference_batch: the global batch (images per optimizer step) that
            ``optimizer.lr`` is given for; the optimizer then runs with ``lr * global batch /
            lr_reference_batch`` (:func:`~mrcnn.model.schedule.scaled_lr`). None: ``lr`` as is.
        load_weights: False skips fetching pretrained weights (the checkpoint has them).
    """

    def __init__(
        self,
        categories: dict[str, list],
        backbone: dict[str, Any],
        detector: dict[str, Any] | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        on_nonfinite_loss: str = "raise",
        evaluation: dict[str, Any] | None = None,
        lr_reference_batch: int | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        if on_nonfinite_loss not in ("raise", "skip"):
            raise ValueError(
                f"on_nonfinite_loss must be 'raise' or 'skip', not {on_nonfinite_loss!r}."
            )
        unknown = set(loss_weights or {}) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"Unknown loss names {sorted(unknown)}; known: {list(LOSS_NAMES)}.")
        self.save_hyperparameters(ignore=["load_weights"])
        self.categories = Categories.from_dict(categories)
        self.loss_weights = {
            name: float((loss_weights or {}).get(name, 1.0)) for name in LOSS_NAMES
        }
        self.model = build_maskrcnn(
            num_classes=self.categories.num_classes,
            load_weights=load_weights,
            **backbone,
            **(detector or {}),
        )
        self.evaluation = {**DEFAULT_EVALUATION, **(evaluation or {})}
        self.evaluator: CocoEvaluator | None = None
        self._panels: list[Tensor] = []
        self.skipped_batches = 0
        self.last_validated_step = -1
        self._epoch_batches = self._epoch_instances = 0
        self._training_rng: tuple[Tensor, Tensor | None] | None = None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections for a list of float [0,1] images, in eval mode."""
        return self.model(images)

    def _weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        return sum(self.loss_weights[name] * losses[name] for name in LOSS_NAMES)

    def _log_losses(
        self, stage: str, losses: dict[str, Tensor], total: Tensor, batch_size: int
    ) -> None:
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            total,
            batch_size=batch_size,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            sync_dist=True,  # under DDP: the mean over every process's images
        )
        self.log_dict(
            {f"{stage}/{name}": losses[name] for name in LOSS_NAMES},
            batch_size=batch_size,
            on_step=on_step,
            on_epoch=True,
            sync_dist=True,
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets = batch
        skip_bad_batches = self.hparams.on_nonfinite_loss == "skip"
        # A bad batch must not leave traces: BatchNorm statistics are updated in the forward.
        buffers = [b.clone() for b in self.model.buffers()] if skip_bad_batches else []
        losses = self.model(images, targets)
        total = self._weighted_total(losses)
        if not torch.isfinite(total):
            terms = ", ".join(f"{name}={losses[name].item():.4g}" for name in LOSS_NAMES)
            image_ids = [t.get("image_id") for t in targets]
            message = (
                f"Non-finite loss at step {self.global_step} (batch {batch_idx}, image ids "
                f"{image_ids}): {terms}. Lower optimizer.lr, lengthen scheduler.warmup_steps, "
                "or set trainer.gradient_clip_val."
            )
            if not skip_bad_batches:
                raise NonFiniteLossError(message + " (on_nonfinite_loss=skip skips such batches.)")
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
            self.skipped_batches += 1
            log.warning(
                "%s Skipping this batch (%d skipped so far).", message, self.skipped_batches
            )
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=len(images))
            return None
        batch_size = len(images)
        self._epoch_batches += 1
        self._epoch_instances += sum(len(target["labels"]) for target in targets)
        self._log_losses("train", losses, total, batch_size)
        self.log(
            "train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size, on_step=True
        )
        dropped = sum(int(t.get("num_dropped", 0)) for t in targets)
        self.log(
            "train/dropped_instances",
            float(dropped),
            batch_size=batch_size,
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=True,
        )
        return total

    def on_train_epoch_start(self) -> None:
        self._epoch_batches = self._epoch_instances = 0

    def on_train_epoch_end(self) -> None:
        # Checked here rather than by reading every mask up front: a whole epoch of images,
        # none with a usable instance, means the model can learn nothing but background.
        complete = self._epoch_batches == self.trainer.num_training_batches
        if complete and self._epoch_batches and not self._epoch_instances:
            raise DataError(
                f"No usable instance in a whole epoch ({self._epoch_batches} batches): every "
                "training image is a negative or its instances were dropped as empty. Run "
                "`python -m mrcnn.data.check` with the same data overrides to see why."
            )

    def setup(self, stage: str) -> None:
        """Build the validation ground truth once (from the annotation file for COCO data)."""
        if self.hparams.on_nonfinite_loss == "skip" and self.trainer.world_size > 1:
            raise ValueError(
                "on_nonfinite_loss=skip does not work with several processes (DDP): a process "
                "skipping a batch would leave the others waiting for its gradients. Use "
                "on_nonfinite_loss=raise."
            )
        datamodule = getattr(self.trainer, "datamodule", None)
        wanted = self.evaluation["coco_metrics"] and stage in ("fit", "validate")
        if not wanted or self.evaluator is not None or datamodule is None:
            return
        datamodule.setup(stage)
        self.evaluator = CocoEvaluator(
            ground_truth_for(datamodule.val_set, self.categories),
            self.categories,
            mask_threshold=self.evaluation["mask_threshold"],
            backend=self.evaluation["backend"],
        )

    def on_validation_start(self) -> None:
        # Validation samples RoIs for its losses; it must not move the training's random stream,
        # or a resumed run (or one validating at other steps) would train differently.
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self._training_rng = (torch.get_rng_state(), cuda)

    def on_validation_end(self) -> None:
        if self._training_rng is not None:
            cpu, cuda = self._training_rng
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            self._training_rng = None

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset()
        self._panels = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets = batch
        detect = self.evaluator is not None
        losses, detections = losses_and_detections(self.model, images, targets, detect=detect)
        self._log_losses("val", losses, self._weighted_total(losses), len(images))
        if detections is None:
            return
        self.evaluator.update(detections, [target["image_id"] for target in targets])
        # The validation loader is not shuffled: the first images are the same every epoch.
        for image, target, detection in zip(images, targets, detections, strict=True):
            if len(self._panels) >= self.evaluation["image_panels"]:
                break
            self._panels.append(
                side_by_side(
                    draw_target(image, target, self.categories),
                    draw_prediction(
                        image,
                        detection,
                        self.categories,
                        score_threshold=self.evaluation["panel_score_threshold"],
                        mask_threshold=self.evaluation["mask_threshold"],
                    ),
                )
            )

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_validated_step = self.global_step
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        metrics = self.evaluator.compute()
        # COCOeval reports -1 where a stat is undefined (no ground truth of that size range);
        # on a curve it would read as a real value, so it is left out.
        defined = {f"val/{name}": value for name, value in metrics.items() if value >= 0}
        if defined:
            self.log_dict(defined, sync_dist=True)  # the same on every rank: no change
        if self._panels:
            grid = panel_grid(self._panels, columns=1)
            for logger in self.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(
                        "val/ground_truth_vs_prediction", grid, self.global_step
                    )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer_cfg = dict(self.hparams.optimizer or {"_target_": "torch.optim.SGD", "lr": 0.01})
        if self.hparams.get("lr_reference_batch"):
            optimizer_cfg["lr"] = self._scaled_lr(optimizer_cfg["lr"])
        decay_all = optimizer_cfg.pop("decay_norm_and_bias", True)
        # _partial_: Hydra would wrap the parameter groups (dicts of tensors) in configs.
        optimizer = instantiate(optimizer_cfg, _partial_=True)(
            parameter_groups(self.model, decay_all)
        )
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ValueError(
                "Set trainer.max_steps or trainer.max_epochs: the schedule needs a length."
            )
        scheduler = warmup_schedule(optimizer, int(total_steps), **self.hparams.scheduler)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _scaled_lr(self, lr: float) -> float:
        """``lr`` scaled from ``lr_reference_batch`` images to this run's global batch (logged)."""
        trainer = self.trainer
        per_device = getattr(trainer.datamodule, "batch_size", None)
        if per_device is None:
            raise ValueError(
                "lr_reference_batch needs the per-device batch size: fit with a datamodule that "
                "has `batch_size` (mrcnn's DetectionDataModule), or set lr_reference_batch=null."
            )
        reference = self.hparams.lr_reference_batch
        world, accumulate = trainer.world_size, trainer.accumulate_grad_batches
        lr_used = scaled_lr(lr, per_device, world, accumulate, reference)
        if trainer.is_global_zero:
            log.info(
                "Learning rate: optimizer.lr=%g is for %d images per step; this run steps on %d "
                "(data.batch_size=%d x %d devices x %d nodes x accumulate_grad_batches=%d) "
                "-> lr %g.",
                lr,
                reference,
                per_device * world * accumulate,
                per_device,
                trainer.num_devices,
                trainer.num_nodes,
                accumulate,
                lr_used,
            )
        return lr_used
