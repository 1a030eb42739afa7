"""The LightningModule: torchvision's MaskRCNN, its five weighted losses, optimizer and schedule."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch import Tensor

from mrcnn.data.categories import Categories
from mrcnn.errors import ConfigError, UserError
from mrcnn.model.builder import build_maskrcnn
from mrcnn.model.forward import losses_and_detections
from mrcnn.model.schedule import lr_for_run, parameter_groups

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
Batch = tuple[list[Tensor], list[dict[str, Any]]]


def _processes() -> int:
    """How many processes train together (torch.distributed's world; 1 without DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _mean_over_processes(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each value's mean over every process, detached, with one all-reduce for them all."""
    stacked = torch.stack([value.detach().float() for value in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, (stacked / dist.get_world_size()).unbind(), strict=True))


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss became NaN or infinite; the message names the step and every loss term."""


class MaskRCNNModule(L.LightningModule):
    """Mask R-CNN, its weighted losses and their logging, its optimizer and schedule.

    Every argument is plain data (dicts, lists, numbers, strings), saved as hyper-parameters,
    so a checkpoint alone rebuilds the model and its class mapping, and loads with
    ``torch.load(..., weights_only=True)``. The config's ``model`` node builds it
    (``conf/model/``, Hydra's ``instantiate`` with the data's categories); what happens around
    training and validation (metrics, image panels, checks, resume state) are callbacks
    (:mod:`mrcnn.callbacks`), added by :func:`mrcnn.builders.build_trainer`.

    Args:
        categories: ``Categories.to_dict()`` of the training data; sets ``num_classes``.
        backbone: keyword arguments of :func:`build_maskrcnn` (``name``, ``weights``, ...).
        detector: ``MaskRCNN`` keyword arguments (sizes, RPN and RoI-head settings).
        loss_weights: a weight per loss name (missing ones are 1).
        optimizer: a Hydra ``_target_`` config of a ``torch.optim`` optimizer, without params
            (``decay_norm_and_bias: false``: no weight decay on norms and biases).
        scheduler: a Hydra ``_target_`` config of a schedule taking ``optimizer`` and
            ``total_steps`` (:func:`~mrcnn.model.schedule.warmup_schedule`), or None.
        on_nonfinite_loss: ``raise`` stops the run; ``skip`` skips the batch and counts it.
        lr_reference_batch: the global batch (images per optimizer step) that
            ``optimizer.lr`` is given for; the optimizer then runs with ``lr * global batch /
            lr_reference_batch`` (:func:`~mrcnn.model.schedule.lr_for_run`). None: ``lr`` as is.
        load_weights: False skips fetching pretrained weights (the checkpoint has them).
    """

    def __init__(
        self,
        categories: dict[str, list],
        backbone: dict[str, Any],
        optimizer: dict[str, Any],
        detector: dict[str, Any] | None = None,
        loss_weights: dict[str, float] | None = None,
        scheduler: dict[str, Any] | None = None,
        on_nonfinite_loss: str = "raise",
        lr_reference_batch: int | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        if on_nonfinite_loss not in ("raise", "skip"):
            raise ConfigError(
                f"on_nonfinite_loss must be 'raise' or 'skip', not {on_nonfinite_loss!r}."
            )
        unknown = set(loss_weights or {}) - set(LOSS_NAMES)
        if unknown:
            raise ConfigError(
                f"model.loss_weights has unknown loss names {sorted(unknown)}; known: "
                f"{list(LOSS_NAMES)}."
            )
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
        # Set by the callbacks that use validation detections (metrics, image panels).
        self.detect_in_validation = False
        self.skipped_batches = 0

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections for a list of float [0,1] images, in eval mode."""
        return self.model(images)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            # Training losses are logged already averaged over the processes (model_step);
            # Lightning's advice to sync their epoch values too would only add collectives.
            warnings.filterwarnings(
                "ignore", message=r"It is recommended to use `self\.log\('train/"
            )
        if self.hparams.on_nonfinite_loss == "skip" and self.trainer.world_size > 1:
            raise ConfigError(
                "on_nonfinite_loss=skip does not work with several processes (DDP): a process "
                "skipping a batch would leave the others waiting for its gradients. Use "
                "on_nonfinite_loss=raise."
            )

    def model_step(self, stage: str, batch: Batch) -> tuple[Tensor, list | None]:
        """The weighted total loss of a batch, every loss logged, and (validation only, when a
        callback wants them) the detections from the same backbone pass."""
        images, targets = batch
        if stage == "train":
            losses, detections = self.model(images, targets), None
        else:
            losses, detections = losses_and_detections(
                self.model, images, targets, detect=self.detect_in_validation
            )
        total = sum(self.loss_weights[name] * losses[name] for name in LOSS_NAMES)
        logged = {f"{stage}/loss": total} | {f"{stage}/{name}": losses[name] for name in LOSS_NAMES}
        # sync_dist: under DDP, the mean over every process's images (validation: of the epoch).
        options = {"batch_size": len(images), "on_epoch": True, "sync_dist": True}
        if stage == "train" and _processes() > 1:
            # Training losses are means over the processes at every step too: one all-reduce
            # for all six (sync_dist would make six, each after a barrier), and every process
            # then sees the same total, so a non-finite loss stops them all at the same step
            # instead of leaving the others waiting in the backward pass's all-reduce.
            logged = _mean_over_processes(logged)
            options["sync_dist"] = False
        if stage == "train" and not torch.isfinite(logged["train/loss"]):
            self._non_finite(losses, targets)
            return total, None
        self.log(
            f"{stage}/loss",
            logged.pop(f"{stage}/loss"),
            prog_bar=True,
            on_step=stage == "train",
            **options,
        )
        self.log_dict(logged, on_step=stage == "train", **options)
        return total, detections

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        skip_bad_batches = self.hparams.on_nonfinite_loss == "skip"
        # A bad batch must not leave traces: BatchNorm statistics are updated in the forward.
        buffers = [b.clone() for b in self.model.buffers()] if skip_bad_batches else []
        total, _ = self.model_step("train", batch)
        if not torch.isfinite(total):
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=1)
            return None
        lr = self.optimizers().param_groups[0]["lr"]
        self.log("train/lr", lr, batch_size=len(batch[0]), on_step=True)
        dropped = float(sum(int(t.get("num_dropped", 0)) for t in batch[1]))
        self.log(
            "train/dropped_instances",
            dropped,
            batch_size=len(batch[0]),
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=True,
        )
        return total

    def validation_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]] | None:
        """The batch's detections, for the validation callbacks (None unless one wants them)."""
        return self.model_step("val", batch)[1]

    def _non_finite(self, losses: dict[str, Tensor], targets: list[dict[str, Any]]) -> None:
        terms = ", ".join(f"{name}={losses[name].item():.4g}" for name in LOSS_NAMES)
        ids = [t.get("image_id") for t in targets]
        processes = _processes()
        if processes == 1:
            where = f"(image ids {ids}): {terms}"
        elif all(torch.isfinite(losses[name]) for name in LOSS_NAMES):
            where = (
                f"on another of the {processes} processes, which all stop here (this process, "
                f"rank {dist.get_rank()}, image ids {ids}: {terms})"
            )
        else:
            where = f"on rank {dist.get_rank()} of {processes} (image ids {ids}): {terms}"
        message = (
            f"Non-finite loss at step {self.global_step} {where}. Lower optimizer.lr, lengthen "
            "scheduler.warmup_steps, or set trainer.gradient_clip_val."
        )
        if self.hparams.on_nonfinite_loss == "raise":
            raise NonFiniteLossError(message + " (on_nonfinite_loss=skip skips such batches.)")
        self.skipped_batches += 1
        log.warning("%s Skipping this batch (%d skipped so far).", message, self.skipped_batches)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer_cfg = dict(self.hparams.optimizer)
        if self.hparams.lr_reference_batch:
            optimizer_cfg["lr"] = lr_for_run(
                optimizer_cfg["lr"], self.hparams.lr_reference_batch, self.trainer
            )
        decay_all = optimizer_cfg.pop("decay_norm_and_bias", True)
        # _partial_: Hydra would wrap the parameter groups (dicts of tensors) in configs.
        optimizer = instantiate(optimizer_cfg, _partial_=True)(
            parameter_groups(self.model, decay_all)
        )
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ConfigError(
                "Set trainer.max_steps or trainer.max_epochs: the schedule needs a length."
            )
        scheduler = instantiate(
            self.hparams.scheduler, optimizer=optimizer, total_steps=int(total_steps)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
