"""Step-wise learning-rate schedules: linear warm-up, then multi-step, cosine or linear decay."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import lightning as L
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mrcnn.errors import ConfigError

log = logging.getLogger(__name__)


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: float = 0,
    warmup_factor: float = 0.001,
    decay: str = "multistep",
    milestones: Sequence[float] = (0.67, 0.89),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """The multiplier of the base learning rate at optimizer step ``step``.

    Milestones are fractions of ``total_steps`` so that one schedule fits any run length
    (torchvision's 26-epoch recipe decays at 16/26 and 22/26, i.e. 0.615 and 0.846).
    ``warmup_steps`` below 1 is a fraction of ``total_steps`` too. ``linear`` decays from the
    end of the warm-up to zero at the last step: under a fixed budget the most robust
    schedule (Li et al., "Budgeted Training", ICLR 2020).
    """
    if 0 < warmup_steps < 1:
        warmup_steps = round(warmup_steps * total_steps)
    if step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if decay == "multistep":
        passed = sum(step >= round(m * total_steps) for m in milestones)
        return warm * gamma**passed
    if decay == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return warm * (min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress)))
    if decay == "linear":
        span = max(total_steps - warmup_steps, 1)
        return warm * max(1 - max(step - warmup_steps, 0) / span, 0.0)
    if decay == "constant":
        return warm
    raise ConfigError(
        f"Unknown decay {decay!r} (scheduler.decay); choose linear, multistep, cosine or constant."
    )


def warmup_schedule(optimizer: Optimizer, total_steps: int, **schedule: float | str) -> LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step; see :func:`lr_factor` for the options."""
    lr_factor(0, total_steps, **schedule)  # validate the options now, not at the first step
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, **schedule))


def scaled_lr(
    lr: float, per_device_batch: int, world_size: int, accumulate: int, reference_batch: int
) -> float:
    """The linear scaling rule: ``lr`` is given for ``reference_batch`` images per optimizer step.

    The global batch is ``per_device_batch * world_size * accumulate`` (world size = devices x
    nodes), and the learning rate grows with it: torchvision's detection reference gives
    lr 0.02 for 16 images (8 GPUs x 2) and says to scale it linearly (Goyal et al. 2017).
    """
    for name, value in (
        ("data.batch_size", per_device_batch),
        ("world size (devices x nodes)", world_size),
        ("trainer.accumulate_grad_batches", accumulate),
        ("lr_reference_batch", reference_batch),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1 for the learning-rate rule, got {value}.")
    return lr * per_device_batch * world_size * accumulate / reference_batch


def lr_for_run(lr: float, reference_batch: int, trainer: L.Trainer) -> float:
    """``lr`` scaled from ``reference_batch`` images to the trainer's global batch, logged once.

    The per-device batch is the datamodule's ``batch_size`` (mrcnn's DetectionDataModule).
    """
    per_device = getattr(trainer.datamodule, "batch_size", None)
    if per_device is None:
        raise ConfigError(
            "lr_reference_batch needs the per-device batch size: fit with a datamodule that "
            "has `batch_size` (mrcnn's DetectionDataModule), or set lr_reference_batch=null."
        )
    world, accumulate = trainer.world_size, trainer.accumulate_grad_batches
    lr_used = scaled_lr(lr, per_device, world, accumulate, reference_batch)
    if trainer.is_global_zero:
        log.info(
            "Learning rate: optimizer.lr=%g is for %d images per step; this run steps on %d "
            "(data.batch_size=%d x %d devices x %d nodes x accumulate_grad_batches=%d) -> lr %g.",
            lr,
            reference_batch,
            per_device * world * accumulate,
            per_device,
            trainer.num_devices,
            trainer.num_nodes,
            accumulate,
            lr_used,
        )
    return lr_used


def parameter_groups(model: nn.Module, decay_norm_and_bias: bool = True) -> list[dict]:
    """Trainable parameters as optimizer groups; without weight decay on norms and biases if asked.

    Weight decay on normalisation scales and biases only shrinks them toward zero (it does not
    regularise what a layer computes); AdamW recipes (timm, detectron2's ViTDet, Ultralytics)
    leave them undecayed.
    """
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": [p for _, p in params]}]
    flat = [p for _, p in params if p.ndim <= 1]  # biases, BatchNorm/GroupNorm weights
    return [
        {"params": [p for _, p in params if p.ndim > 1]},
        {"params": flat, "weight_decay": 0.0},
    ]
