"""Copy-paste augmentation (Ghiasi et al., CVPR 2021, "Simple Copy-Paste"): instances of another
training image pasted, with their masks, onto the image being augmented.

:class:`CopyPaste` augments the image as the preset says (flip, scale jitter), draws a second
training image from the same random stream, augments it the same way (independently), picks a
random non-empty subset of its instances and pastes their pixels on top. What a pasted instance
covers is removed from the target's own masks (it is in front), every box is recomputed from its
mask, and an instance hidden completely is dropped (``SanitizeBoundingBoxes``, counted as
dropped). The source is fitted inside the target's canvas (aspect kept, scaled down only when it
is larger) at a random place: with ``lsj`` both are the same square canvas already, as in the
paper. No blending: the paper found it unnecessary (and torchvision's reference,
``SimpleCopyPaste``, blends with a Gaussian only as an option).

It works on ``tv_tensors`` with ``torchvision.transforms.v2.functional``, per sample (so it
combines with the per-sample seeds that make augmentation reproducible, see
:mod:`mrcnn.data.sampler`), where torchvision's reference pastes within a batch, after collation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from mrcnn.data.targets import boxes_from_masks

# Target keys that hold one entry per instance (and so grow with the pasted ones).
INSTANCE_KEYS = ("boxes", "masks", "labels")


class CopyPaste:
    """Augment with ``augment``, then paste instances of a random other item of ``dataset``
    (augmented with ``augment`` too) with probability ``p``; see the module doc.

    ``dataset`` yields what the pipeline's input is (uint8 ``tv_tensors.Image``, target with
    ``boxes``, ``masks``, ``labels``). The number of pasted instances is written to
    ``target["num_pasted"]`` (:class:`~mrcnn.data.wrappers.TransformedDataset` counts drops with
    it). Random numbers come from Python's ``random`` and torch's generator, which the training
    loader seeds per sample.
    """

    def __init__(self, dataset: Dataset, augment: Callable, p: float = 1.0) -> None:
        self.dataset = dataset
        self.augment = augment
        self.p = float(p)

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        image, target = self.augment(image, target)
        target = dict(target)
        target["num_pasted"] = 0
        if len(self.dataset) < 2 or random.random() >= self.p:
            return image, target
        index = random.randrange(len(self.dataset))
        source_image, source_target = self.augment(*self.dataset[index])
        count = len(source_target["labels"])
        if count == 0:
            return image, target
        chosen = torch.tensor(sorted(random.sample(range(count), random.randint(1, count))))
        return paste(image, target, source_image, source_target, chosen)


def paste(
    image: torch.Tensor,
    target: dict[str, Any],
    source_image: torch.Tensor,
    source_target: dict[str, Any],
    chosen: torch.Tensor,
) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """``image`` with the ``chosen`` instances of the source pasted on top (see the module doc).

    The source is fitted inside the target's canvas (scaled down if larger, aspect kept) at a
    random offset. Returns the new image and target: the target's masks minus what the pasted
    ones cover, then the pasted instances; every box the tight box of its mask (an instance
    hidden completely keeps an empty mask and a zero box, for ``SanitizeBoundingBoxes``).
    """
    height, width = image.shape[-2:]
    masks = source_target["masks"][chosen].as_subclass(torch.Tensor)
    pixels = source_image.as_subclass(torch.Tensor)
    source_h, source_w = pixels.shape[-2:]
    scale = min(1.0, height / source_h, width / source_w)
    if scale < 1.0:
        size = [max(1, int(source_h * scale)), max(1, int(source_w * scale))]
        pixels = F.resize(pixels, size, antialias=True)
        masks = F.resize(tv_tensors.Mask(masks), size).as_subclass(torch.Tensor)
    top = random.randint(0, height - pixels.shape[-2])
    left = random.randint(0, width - pixels.shape[-1])
    padding = [left, top, width - left - pixels.shape[-1], height - top - pixels.shape[-2]]
    pixels = F.pad(pixels, padding)
    masks = F.pad(masks, padding) if len(masks) else masks.new_zeros((0, height, width))
    pasted = masks.amax(dim=0, keepdim=True).bool() if len(masks) else None

    plain = image.as_subclass(torch.Tensor)
    own = target["masks"].as_subclass(torch.Tensor)
    if pasted is not None:
        plain = torch.where(pasted, pixels.to(plain.dtype), plain)
        own = own * ~pasted
    all_masks = torch.cat([own, masks.to(own.dtype)])
    labels = torch.cat([target["labels"], source_target["labels"][chosen]])
    result = {key: value for key, value in target.items() if key not in INSTANCE_KEYS}
    result["masks"] = tv_tensors.Mask(all_masks)
    result["labels"] = labels
    result["boxes"] = tv_tensors.BoundingBoxes(
        boxes_from_masks(all_masks), format="XYXY", canvas_size=(height, width)
    )
    result["num_pasted"] = int(target.get("num_pasted", 0)) + len(chosen)
    return tv_tensors.Image(plain), result
