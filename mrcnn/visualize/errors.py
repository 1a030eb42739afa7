"""Evaluation's errors marked on an image: missed ground truth, false positives, wrong classes
and correct detections, each in its own colour, with a legend that counts them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mrcnn.visualize.draw import (
    binary_masks,
    draw_labels,
    font_size_for,
    label_font,
    mask_outlines,
    to_uint8_image,
)

# What the error pictures mark, each in its own colour (not a class colour: these are drawn
# over every class alike): missed ground truth, false positives, wrong class, correct.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "missed": (230, 0, 60),
    "false positive": (255, 140, 0),
    "wrong class": (150, 40, 220),
    "correct": (40, 170, 60),
}


def _upscaled(canvas: Tensor, boxes: Tensor, masks: Tensor | None, min_size: int):
    """Small images enlarged (whole factor, nearest) so that labels stay readable."""
    height, width = canvas.shape[-2:]
    factor = max(1, -(-min_size // min(height, width)))
    if factor == 1:
        return canvas, boxes, masks
    canvas = canvas.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    if masks is not None:
        masks = masks.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    return canvas, boxes * factor, masks


def draw_errors(
    image: Tensor,
    kinds: Sequence[str],
    boxes: Tensor,
    texts: Sequence[str],
    masks: Tensor | None = None,
    mask_alpha: float = 0.35,
    min_size: int = 384,
) -> Tensor:
    """One image's instances marked by what evaluation made of them, and a legend with counts.

    Args:
        image: float [0,1] or uint8 [C,H,W].
        kinds: per instance, a key of :data:`ERROR_COLOURS` (``missed``, ``false positive``,
            ``wrong class``, ``correct``): its colour.
        boxes: [N,4] XYXY pixels.
        texts: per instance, its label (e.g. "missed: cat", "dog 0.91 (is cat)").
        masks: bool [N,H,W] or None (boxes only).
        min_size: small images are enlarged to at least this (whole factor) for readable text.

    Correct instances get an outline only, errors a filled mask, so the errors stand out. The
    legend below the image counts each kind. Returns uint8 [3, H', W'].
    """
    canvas = to_uint8_image(image)
    boxes = torch.as_tensor(boxes).detach().cpu().float().reshape(-1, 4)
    if not len(kinds) == len(boxes) == len(texts):
        raise ValueError(f"{len(kinds)} kinds, {len(boxes)} boxes and {len(texts)} texts.")
    unknown = set(kinds) - set(ERROR_COLOURS)
    if unknown:
        raise ValueError(f"Unknown kinds {sorted(unknown)}; use {list(ERROR_COLOURS)}.")
    if masks is not None:
        masks = binary_masks(masks)
        if tuple(masks.shape) != (len(kinds), *canvas.shape[-2:]):
            raise ValueError(
                f"Masks {tuple(masks.shape)} for {len(kinds)} instances on a "
                f"{tuple(canvas.shape[-2:])} image; they must match."
            )
    canvas, boxes, masks = _upscaled(canvas, boxes, masks, min_size)
    height, width = canvas.shape[-2:]
    line = max(2, round(min(height, width) / 200))
    colours = [ERROR_COLOURS[kind] for kind in kinds]
    # Correct ones first: errors are drawn on top.
    order = sorted(range(len(kinds)), key=lambda i: kinds[i] != "correct")
    if order:
        index = torch.tensor(order)
        boxes = boxes[index]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
        colours = [colours[i] for i in order]
        if masks is not None:
            ordered = masks[index]
            outlines = mask_outlines(ordered, line)
            for i, (mask, outline) in enumerate(zip(ordered, outlines, strict=True)):
                if not mask.any():
                    continue
                if kinds[order[i]] != "correct":
                    canvas = draw_segmentation_masks(
                        canvas, mask, alpha=mask_alpha, colors=colours[i]
                    )
                canvas = draw_segmentation_masks(canvas, outline, alpha=1.0, colors=colours[i])
        canvas = draw_bounding_boxes(canvas, boxes, colors=colours, width=line)
        canvas = draw_labels(canvas, boxes, [texts[i] for i in order], colours, avoid_overlap=True)
    return _with_legend(canvas, kinds)


def _with_legend(canvas: Tensor, kinds: Sequence[str]) -> Tensor:
    """The image above a white strip: a colour square and "missed 2" for each kind, wrapped
    onto more lines where the image is narrow."""
    height, width = canvas.shape[-2:]
    font = label_font(max(12, font_size_for(height, width)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = probe.textbbox((0, 0), "Ag", font=font)[3]
    items, x, y = [], 6, 6
    for kind, colour in ERROR_COLOURS.items():
        text = f"{kind} {sum(k == kind for k in kinds)}"
        item_w = text_h + 4 + int(probe.textlength(text, font=font))
        if x > 6 and x + item_w > width - 6:
            x, y = 6, y + text_h + 6
        items.append((x, y, text, colour))
        x += item_w + 12
    framed = Image.new("RGB", (width, height + y + text_h + 6), (255, 255, 255))
    framed.paste(to_pil_image(canvas), (0, 0))
    draw = ImageDraw.Draw(framed)
    for x, y, text, colour in items:
        draw.rectangle([x, height + y, x + text_h, height + y + text_h], fill=colour)
        draw.text((x + text_h + 4, height + y), text, fill=(0, 0, 0), font=font)
    return pil_to_tensor(framed)


def draw_marked(image: Tensor, marked: Sequence[Any], names: dict[int, str]) -> Tensor:
    """:func:`draw_errors` of evaluation's marked instances
    (:class:`mrcnn.evaluation.diagnostics.Marked`: ``kind``, ``category_id``, xywh ``bbox``,
    RLE ``segmentation`` or None, ``score``, ``true_category_id``); ``names``: category id ->
    name. Labels say "missed cat", "FP dog 0.91", "cat 0.80, is dog" (wrong class)."""
    import pycocotools.mask as mask_util

    texts, boxes = [], []
    for m in marked:
        name = names.get(m.category_id, str(m.category_id))
        score = "" if m.score is None else f" {m.score:.2f}"
        texts.append(
            {
                "missed": f"missed {name}",
                "false positive": f"FP {name}{score}",
                "wrong class": f"{name}{score}, is {names.get(m.true_category_id, '?')}",
            }.get(m.kind, f"{name}{score}")
        )
        x, y, w, h = m.bbox
        boxes.append([x, y, x + w, y + h])
    masks = None
    if marked and all(m.segmentation is not None for m in marked):
        decoded = mask_util.decode([m.segmentation for m in marked])  # [H, W, N]
        masks = torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1))).bool()
    return draw_errors(
        image,
        [m.kind for m in marked],
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        texts,
        masks,
    )
