"""Augmentation presets on ``torchvision.transforms.v2``: images, boxes and masks move together.

The model resizes every image itself (short side -> ``data.image_size``, long side at most
``data.max_image_size``), which would undo a plain random resize. The scale presets therefore
resize *and then crop or pad to a fixed canvas*; the model maps that canvas back to scale 1,
so objects really come out larger or smaller:

- ``none``: nothing (validation always gets this).
- ``hflip``: horizontal flip with probability 0.5 (default for training).
- ``multiscale``: flip, then zoom by a factor in [0.5, 1.5] around the size the model would
  give the image, cropped (zoom in) or padded (zoom out) back to that size; aspect kept.
- ``lsj``: large-scale jitter (Ghiasi et al. 2021): flip, then resize to 0.1-2.0 x the size that
  fits an ``image_size`` square, and crop or pad to that square.

The scale presets recompute every box from its transformed mask (a crop can cut away the part
of an object that defined its box). Every pipeline ends by turning the image into float32 in
[0, 1] and removing boxes that an augmentation made degenerate (``SanitizeBoundingBoxes`` drops
their masks and labels too).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mrcnn.data.targets import boxes_from_masks
from mrcnn.errors import ConfigError

PRESETS = ("none", "hflip", "multiscale", "lsj")
MULTISCALE_RANGE = (0.5, 1.5)
LSJ_RANGE = (0.1, 2.0)


class ScaleCropPad:
    """Random resize, then a random crop or zero pad to a canvas the model keeps at scale 1.

    ``square=False`` (multiscale): the canvas is the image as the model would resize it.
    ``square=True`` (LSJ): the canvas is ``image_size`` x ``image_size`` and the scale is
    relative to fitting the image inside it.
    """

    def __init__(
        self,
        image_size: int,
        max_image_size: int,
        scale_range: tuple[float, float],
        square: bool,
    ) -> None:
        self.image_size = image_size
        self.max_image_size = max_image_size
        self.scale_range = scale_range
        self.square = square

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        height, width = image.shape[-2:]
        if self.square:
            side = min(self.image_size, self.max_image_size)
            canvas_h = canvas_w = side
            base = side / max(height, width)
        else:
            base = min(
                self.image_size / min(height, width), self.max_image_size / max(height, width)
            )
            canvas_h, canvas_w = max(1, round(height * base)), max(1, round(width * base))
        scale = base * random.uniform(*self.scale_range)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        top = random.randint(min(0, new_h - canvas_h), max(0, new_h - canvas_h))
        left = random.randint(min(0, new_w - canvas_w), max(0, new_w - canvas_w))

        def apply(x: Any) -> Any:
            if not isinstance(x, tv_tensors.Image | tv_tensors.BoundingBoxes | tv_tensors.Mask):
                return x
            x = F.resize(x, [new_h, new_w], antialias=True)
            # A crop window reaching outside the image pads it with zeros (masks: background).
            return F.crop(x, top, left, canvas_h, canvas_w)

        return apply(image), {key: apply(value) for key, value in target.items()}


class BoxesFromMasks:
    """Sets every box to the tight box of its (transformed) mask; empty masks get a zero box,
    which ``SanitizeBoundingBoxes`` then removes with its mask and label."""

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        masks = target["masks"]
        target = dict(target)
        target["boxes"] = tv_tensors.BoundingBoxes(
            boxes_from_masks(masks), format="XYXY", canvas_size=tuple(masks.shape[-2:])
        )
        return image, target


def _augmentations(preset: str, image_size: int, max_image_size: int) -> list[Callable]:
    if preset == "none":
        return []
    if preset == "hflip":
        return [v2.RandomHorizontalFlip(0.5)]
    if preset == "multiscale":
        return [
            v2.RandomHorizontalFlip(0.5),
            ScaleCropPad(image_size, max_image_size, MULTISCALE_RANGE, square=False),
            BoxesFromMasks(),
        ]
    if preset == "lsj":
        return [
            v2.RandomHorizontalFlip(0.5),
            ScaleCropPad(image_size, max_image_size, LSJ_RANGE, square=True),
            BoxesFromMasks(),
        ]
    raise ConfigError(
        f"Unknown augmentation preset {preset!r} (data.augment); choose one of {list(PRESETS)}."
    )


def build_transforms(
    preset: str = "hflip", image_size: int = 800, max_image_size: int | None = None
) -> v2.Compose:
    """The v2 pipeline for a preset; ``image_size``/``max_image_size`` are the model's input
    sizes, which the scale presets aim at (``max_image_size`` defaults to ``image_size * 1333 /
    800``, torchvision's ratio)."""
    max_image_size = max_image_size or round(image_size * 1333 / 800)
    return v2.Compose(
        [
            *_augmentations(preset, image_size, max_image_size),
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
