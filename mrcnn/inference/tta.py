"""Test-time augmentation: :class:`TTABackend` runs a back end on several views of each image
(the image itself, its mirror image, the model's input size scaled) and merges the detections.

Like :class:`~mrcnn.inference.tiling.TiledBackend` it is a back-end wrapper
(:mod:`mrcnn.inference`): float32 [0,1] images in, torchvision-style detections out (masks as
probabilities at the image's size), so batching, thresholds, tiling, COCO results and drawing
are those of every back end.

**Views.** ``identity``; ``hflip`` (the image mirrored, its detections mirrored back); a number
``s`` (the model's input size times ``s``: ``GeneralizedRCNNTransform``'s ``min_size`` and
``max_size``, so objects reach the backbone ``s`` times larger; a checkpoint's model only: an
exported model's input size is fixed in its graph). ``tta=true`` is :data:`DEFAULT_VIEWS`.

**Merging.** Detections of all views are pooled, best score first; each one not yet taken starts
a group and takes, from every *other* view, the detection of the same label whose box overlaps
its own most (box IoU at least ``iou``). A group becomes one detection: boxes and mask
probabilities averaged over its members (``merge="mean"``), or weighted by their scores
(``merge="wbf"``, weighted box fusion, Solovyev et al. 2021), and the score is the sum of the
members' scores over the number of views, so an object found in one view of three keeps a third
of its score (WBF's rule). A group of one keeps its box and mask as they are; with the identity
view alone, the output is the model's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou

from mrcnn.errors import ConfigError
from mrcnn.inference.core import Backend, Detections

DEFAULT_VIEWS = ("identity", "hflip")
MERGES = ("mean", "wbf")


def parse_views(tta: Any) -> list[str | float]:
    """The views of ``tta`` (false/null: none; true: :data:`DEFAULT_VIEWS`; or a list of
    ``identity``, ``hflip`` and scales), checked; [] when TTA is off."""
    if tta is None or tta is False:
        return []
    if tta is True:
        return list(DEFAULT_VIEWS)
    items = [tta] if isinstance(tta, str | int | float) else list(tta)
    views: list[str | float] = []
    for item in items:
        if item in ("identity", "hflip"):
            views.append(str(item))
        elif isinstance(item, int | float) and not isinstance(item, bool) and 0.1 <= item <= 4:
            views.append("identity" if float(item) == 1.0 else float(item))
        else:
            raise ConfigError(
                f"tta={list(items) if len(items) > 1 else tta!r}: {item!r} is not a view; give "
                "true, false, or a list of identity, hflip and input-size scales from 0.1 to 4, "
                "e.g. tta=[identity,hflip,0.8,1.2]."
            )
    if len(set(map(str, views))) != len(views):
        raise ConfigError(f"tta={items}: a view is listed twice.")
    return views


class TTABackend:
    """Runs ``backend`` on each of ``views`` of every image and merges the detections (see the
    module doc). ``merge``: ``mean`` or ``wbf``; ``iou``: the box IoU that makes two detections of
    different views the same object."""

    def __init__(
        self,
        backend: Backend,
        views: Sequence[str | float],
        merge: str = "mean",
        iou: float = 0.55,
    ) -> None:
        if merge not in MERGES:
            raise ConfigError(f"tta_merge={merge!r}: choose one of {list(MERGES)}.")
        if not 0 < iou <= 1:
            raise ConfigError(f"tta_iou={iou!r}: give a box IoU above 0, at most 1.")
        views = list(views)
        if not views:
            raise ConfigError("tta: give at least one view (e.g. tta=[identity,hflip]).")
        scales = [v for v in views if isinstance(v, float)]
        if scales and _transform(backend) is None:
            raise ConfigError(
                f"tta scales {scales}: an exported model's input size is fixed in its graph, so "
                "only identity and hflip views run on it; give the checkpoint (model=FILE.ckpt) "
                "for scales, or tta=[identity,hflip]."
            )
        self.backend = backend
        self.views = views
        self.merge = merge
        self.iou = float(iou)

    def __getattr__(self, name: str) -> Any:
        # The wrapped back end's attributes (``device``, ``model``) show through.
        if name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        per_view = [self._run_view(images, view) for view in self.views]
        return [
            merge_views([outputs[i] for outputs in per_view], self.merge, self.iou)
            for i in range(len(images))
        ]

    def _run_view(self, images: list[Tensor], view: str | float) -> list[Detections]:
        if view == "identity":
            return self.backend(images)
        if view == "hflip":
            outputs = self.backend([image.flip(-1) for image in images])
            return [
                flip_detections(output, int(image.shape[-1]))
                for image, output in zip(images, outputs, strict=True)
            ]
        with scaled_input(_transform(self.backend), float(view)):
            return self.backend(images)


def _transform(backend: Any) -> Any:
    """The ``GeneralizedRCNNTransform`` of a back end running a torchvision model, else None."""
    return getattr(getattr(backend, "model", None), "transform", None)


@contextmanager
def scaled_input(transform: Any, scale: float):
    """The model resizes its input to ``scale`` times its own size inside the block."""
    min_size, max_size = transform.min_size, transform.max_size
    transform.min_size = tuple(max(1, round(s * scale)) for s in min_size)
    transform.max_size = max(1, round(max_size * scale))
    try:
        yield
    finally:
        transform.min_size, transform.max_size = min_size, max_size


def flip_detections(output: Detections, width: int) -> Detections:
    """Detections of a mirrored image, mirrored back to the original (boxes and masks)."""
    flipped = dict(output)
    boxes = output["boxes"]
    flipped["boxes"] = torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
    )
    if "masks" in output:
        flipped["masks"] = output["masks"].flip(-1)
    return flipped


def merge_views(
    outputs: Sequence[Detections], merge: str = "mean", iou: float = 0.55
) -> Detections:
    """One image's detections from each view merged into one set (see the module doc)."""
    if len(outputs) == 1:
        return outputs[0]
    boxes = torch.cat([o["boxes"].float() for o in outputs])
    labels = torch.cat([o["labels"] for o in outputs])
    scores = torch.cat([o["scores"].float() for o in outputs])
    view = torch.cat([torch.full((len(o["scores"]),), v) for v, o in enumerate(outputs)])
    with_masks = all("masks" in o for o in outputs)
    masks = torch.cat([o["masks"].float() for o in outputs]) if with_masks else None
    overlap = box_iou(boxes, boxes) if len(boxes) else boxes.new_zeros((0, 0))
    candidates = (overlap >= iou) & (labels[:, None] == labels[None, :])
    candidates &= view[:, None] != view[None, :]
    taken = torch.zeros(len(scores), dtype=torch.bool)
    groups: list[list[int]] = []
    for seed in scores.argsort(descending=True, stable=True).tolist():
        if taken[seed]:
            continue
        members = [seed]
        taken[seed] = True
        for other_view in range(len(outputs)):
            if other_view == int(view[seed]):
                continue
            mine = candidates[seed] & (view == other_view) & ~taken
            if mine.any():
                best = int(torch.where(mine, overlap[seed], -1.0).argmax())
                members.append(best)
                taken[best] = True
        groups.append(members)
    merged: dict[str, list[Tensor]] = {"boxes": [], "labels": [], "scores": [], "masks": []}
    for members in groups:
        index = torch.tensor(members)
        if len(members) == 1:
            weights = None
        else:
            weights = scores[index] if merge == "wbf" else torch.ones(len(members))
            weights = weights / weights.sum()
        merged["labels"].append(labels[index[0]])
        merged["scores"].append(scores[index].sum() / len(outputs))
        merged["boxes"].append(
            boxes[index[0]] if weights is None else (weights[:, None] * boxes[index]).sum(0)
        )
        if masks is not None:
            merged["masks"].append(
                masks[index[0]]
                if weights is None
                else (weights[:, None, None, None] * masks[index]).sum(0)
            )
    height_width = outputs[0]["masks"].shape[-2:] if masks is not None else None
    result = {
        "boxes": torch.stack(merged["boxes"]) if groups else boxes.new_zeros((0, 4)),
        "labels": torch.stack(merged["labels"]) if groups else labels[:0],
        "scores": torch.stack(merged["scores"]) if groups else scores[:0],
    }
    if masks is not None:
        result["masks"] = (
            torch.stack(merged["masks"]) if groups else masks.new_zeros((0, 1, *height_width))
        )
    order = result["scores"].argsort(descending=True, stable=True)
    return {key: value[order] for key, value in result.items()}
