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

``copy_paste`` goes on top of any of them (``data.augment=[lsj,copy_paste]``): instances of
another training image, augmented the same way, are pasted on (:mod:`mrcnn.data.copy_paste`).

The scale presets recompute every box from its transformed mask (a crop can cut away the part
of an object that defined its box). Every pipeline ends by turning the image into float32 in
[0, 1] and removing boxes that an augmentation made degenerate (``SanitizeBoundingBoxes`` drops
their masks and labels too).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mrcnn.data.copy_paste import CopyPaste
from mrcnn.data.targets import boxes_from_masks
from mrcnn.errors import ConfigError

PRESETS = ("none", "hflip", "multiscale", "lsj")
COPY_PASTE = "copy_paste"
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


def parse_augment(augment: str | Sequence[str]) -> tuple[str, bool]:
    """``data.augment`` as (preset, copy-paste or not): a preset (``lsj``), or a list of at most
    one preset and ``copy_paste`` (``[lsj,copy_paste]``; ``[copy_paste]`` alone means
    ``[none,copy_paste]``)."""
    items = [augment] if isinstance(augment, str) else list(augment)
    presets = [item for item in items if item != COPY_PASTE]
    unknown = [item for item in presets if item not in PRESETS]
    if unknown or len(presets) > 1 or len(items) - len(presets) > 1:
        raise ConfigError(
            f"data.augment={augment if isinstance(augment, str) else list(augment)}: give one "
            f"preset of {list(PRESETS)}, and {COPY_PASTE} on top if wanted, e.g. "
            f"data.augment=lsj or data.augment=[lsj,{COPY_PASTE}]."
        )
    return (presets[0] if presets else "none"), len(items) > len(presets)


def build_transforms(
    preset: str | Sequence[str] = "hflip",
    image_size: int = 800,
    max_image_size: int | None = None,
    source: Dataset | None = None,
    copy_paste_p: float = 1.0,
) -> v2.Compose:
    """The v2 pipeline for ``data.augment`` (:func:`parse_augment`); ``image_size``/
    ``max_image_size`` are the model's input sizes, which the scale presets aim at
    (``max_image_size`` defaults to ``image_size * 1333 / 800``, torchvision's ratio). Copy-paste
    draws its second images from ``source`` (the training set), with probability
    ``copy_paste_p`` per image."""
    max_image_size = max_image_size or round(image_size * 1333 / 800)
    name, copy_paste = parse_augment(preset)
    augmentations = _augmentations(name, image_size, max_image_size)
    if copy_paste:
        if source is None:
            raise ValueError("copy_paste needs the data set to paste from (source=).")
        if not 0 <= copy_paste_p <= 1:
            raise ConfigError(
                f"data.copy_paste_p={copy_paste_p!r}: give the probability that an image gets "
                "pasted instances, from 0 to 1."
            )
        augment = v2.Compose(augmentations) if augmentations else _identity
        augmentations = [CopyPaste(source, augment, copy_paste_p), BoxesFromMasks()]
    return v2.Compose(
        [
            *augmentations,
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.SanitizeBoundingBoxes(),
        ]
    )


def _identity(image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return image, target


def to_model_input(
    image: torch.Tensor, target: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Plain tensors for torchvision's model (tv_tensor subclasses are for transforms only)."""
    plain = {
        key: value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value
        for key, value in target.items()
    }
    return image.as_subclass(torch.Tensor), plain
