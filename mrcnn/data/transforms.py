"""Augmentation presets on ``torchvision.transforms.v2``: images, boxes and masks move together.

Every pipeline ends by turning the image into float32 in [0, 1] and removing boxes that an
augmentation made degenerate (``SanitizeBoundingBoxes`` drops their masks and labels too).
Validation data always gets the ``none`` preset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def _augmentations(preset: str, image_size: int) -> list[Callable]:
    if preset == "none":
        return []
    if preset == "hflip":
        return [v2.RandomHorizontalFlip(0.5)]
    raise ValueError(f"Unknown augmentation preset {preset!r}; choose one of {sorted(PRESETS)}.")


PRESETS = ("none", "hflip")


def build_transforms(preset: str = "hflip", image_size: int = 800) -> v2.Compose:
    """The v2 pipeline for a preset; ``image_size`` is the model's input size, for scale jitter."""
    return v2.Compose(
        [
            *_augmentations(preset, image_size),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.SanitizeBoundingBoxes(),
        ]
    )


def to_model_input(
    image: torch.Tensor, target: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Plain tensors for torchvision's model (tv_tensor subclasses are for transforms only)."""
    plain = {
        key: value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value
        for key, value in target.items()
    }
    return image.as_subclass(torch.Tensor), plain
