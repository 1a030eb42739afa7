"""Masks, boxes and labels drawn on images (for TensorBoard, ``predict`` and notebooks), and
images laid out as panels.

Drawing rests on :func:`torchvision.utils.draw_segmentation_masks` and
:func:`torchvision.utils.draw_bounding_boxes`; this module adds what they leave to the caller:

- every input form the model and the data sets produce: images float [0,1] or uint8 (bf16 and
  half are cast to float32), masks bool/uint8 [N,H,W] or float probabilities [N,1,H,W]
  thresholded at ``mask_threshold``, tensors on any device;
- one stable colour per class (label ``k`` always gets ``PALETTE[k % len(PALETTE)]``), so the
  same class looks the same in ground truth, predictions and every image;
- masks drawn one at a time, lowest score first: ``draw_segmentation_masks`` paints pixels where
  several masks of one call overlap black, and predicted masks overlap often;
- labels ("name 0.93") drawn with Pillow above their box and kept inside the image, in a
  TrueType font found on the system sized to the image, else Pillow's built-in font;
- zero instances (the image comes back unchanged, without torchvision's warnings).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mrcnn.data.categories import Categories
from mrcnn.evaluation.calibration import label_thresholds

# Distinct, colour-blind-friendlier colours (Tableau 10 followed by lighter variants); label k
# (1..K) gets PALETTE[k % len(PALETTE)]. Label 0 is background and is never drawn.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)

# TrueType fonts tried in order (Pillow also searches the system font folders for bare names).
FONT_CANDIDATES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "LiberationSans-Regular.ttf",
    "Arial.ttf",
    "arial.ttf",
    "Helvetica.ttc",
    "FreeSans.ttf",
)


def class_colour(label: int) -> tuple[int, int, int]:
    """The colour of a class label, the same in every image and panel."""
    return PALETTE[int(label) % len(PALETTE)]


@functools.lru_cache(maxsize=1)
def font_path() -> str | None:
    """Path of the first TrueType font Pillow can open, or None (Pillow's own font is used)."""
    for name in FONT_CANDIDATES:
        try:
            return str(ImageFont.truetype(name, 12).path)
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A system TrueType font at ``size`` px, else Pillow's built-in one (sizeable from 10.1)."""
    path = font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def font_size_for(height: int, width: int) -> int:
    """Label text height that stays readable on small images and proportionate on large ones."""
    return max(10, round(min(height, width) / 30))


def to_uint8_image(image: Tensor) -> Tensor:
    """An RGB uint8 [3,H,W] CPU copy of a float [0,1] (any float dtype) or uint8 image.

    Grayscale [1,H,W] is repeated to three channels; an alpha channel [4,H,W] is dropped.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"Expected an image [C,H,W] with C in 1, 3 or 4; got {tuple(image.shape)}."
        )
    image = image.detach().cpu()
    if image.dtype.is_floating_point:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise ValueError(f"Images must be float in [0,1] or uint8, not {image.dtype}.")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image[:3].contiguous()


def binary_masks(masks: Tensor, mask_threshold: float = 0.5) -> Tensor:
    """Bool masks [N,H,W] from bool/uint8 [N,H,W] masks or float probabilities [N,1,H,W]/[N,H,W].

    Float masks are model probabilities: a pixel belongs to the instance when
    ``p > mask_threshold``, the rule of torchvision's reference and of the COCO results
    (:func:`mrcnn.evaluation.results.detections_to_coco_results`), so drawings match results files.
    """
    masks = masks.detach()
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"Masks [N,1,H,W] expected, got {tuple(masks.shape)}.")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"Masks [N,H,W] or [N,1,H,W] expected, got {tuple(masks.shape)}.")
    # Thresholded on their device, then copied: bool masks are a quarter of float32's bytes.
    if masks.dtype.is_floating_point:
        return (masks.float() > mask_threshold).cpu()
    return (masks != 0).cpu()


def mask_outlines(masks: Tensor, width: int) -> Tensor:
    """The inner border (``width`` pixels) of each bool mask [N,H,W]."""
    inverted = (~masks).float()[:, None]
    grown = F.max_pool2d(inverted, kernel_size=2 * width + 1, stride=1, padding=width)
    return masks & (grown[:, 0] > 0)


def _text_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_labels(
    canvas: Tensor,
    boxes: Tensor,
    texts: list[str],
    colours: list[tuple[int, int, int]],
    avoid_overlap: bool = False,
) -> Tensor:
    """Filled text labels just above each box (inside it at the image's top edge), shifted left
    where they would leave the image: torchvision's labels sit inside the box and get cut off.
    With ``avoid_overlap``, a label that would cover one already drawn moves down a line (error
    pictures mark several detections of one object)."""
    height, width = canvas.shape[-2:]
    image = to_pil_image(canvas)
    draw = ImageDraw.Draw(image)
    font = label_font(font_size_for(height, width))
    pad = 2
    placed: list[tuple[int, int, int, int]] = []
    for box, text, colour in zip(boxes.tolist(), texts, colours, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        label_w, label_h = right - left + 2 * pad, bottom - top + 2 * pad
        x = max(0, min(round(box[0]), width - label_w))
        y = round(box[1]) - label_h
        if y < 0:
            y = max(0, min(round(box[1]), height - label_h))
        if avoid_overlap:
            for _ in range(len(placed)):
                if not any(
                    x < px + pw and px < x + label_w and y < py + ph and py < y + label_h
                    for px, py, pw, ph in placed
                ):
                    break
                y = min(y + label_h, height - label_h)
            placed.append((x, y, label_w, label_h))
        draw.rectangle([x, y, x + label_w - 1, y + label_h - 1], fill=colour)
        draw.text((x + pad - left, y + pad - top), text, fill=_text_colour(colour), font=font)
    return pil_to_tensor(image)


def draw_instances(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor | Sequence[int],
    masks: Tensor | None = None,
    scores: Tensor | None = None,
    categories: Categories | None = None,
    score_threshold: float | dict[int, float] = 0.5,
    mask_threshold: float = 0.5,
    mask_alpha: float = 0.45,
    max_instances: int | None = None,
) -> Tensor:
    """Draw masks, boxes and "name 0.93" labels of one image's instances; returns uint8 [3,H,W].

    Args:
        image: float [0,1] (float32, bf16, half) or uint8 [C,H,W].
        boxes: [N,4] XYXY in pixels of ``image``; clipped to the image.
        labels: [N] model labels 1..K (names come from ``categories``, else "class k").
        masks: bool/uint8 [N,H,W] (ground truth) or float probabilities [N,1,H,W] (model).
        scores: [N] or None (ground truth: everything drawn, no score shown). With scores, only
            instances with ``score >= score_threshold`` are drawn, highest score on top.
        categories: the data set's categories, for names.
        score_threshold: minimum score drawn (predictions only); one per label when calibrated.
        mask_threshold: a pixel belongs to a float mask where its probability is above this.
        mask_alpha: opacity of the mask fill.
        max_instances: draw at most this many (the best-scoring ones): an early model's 100
            weak detections per image hide the image.
    """
    canvas = to_uint8_image(image)
    height, width = canvas.shape[-2:]
    boxes = torch.as_tensor(boxes).detach().cpu().float().reshape(-1, 4)
    labels = torch.as_tensor(labels).detach().cpu().reshape(-1).long()
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels.")
    num_instances = len(labels)
    keep = torch.arange(len(labels))
    if scores is not None:
        scores = torch.as_tensor(scores).detach().cpu().float().reshape(-1)
        if len(scores) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(scores)} scores.")
        keep = torch.nonzero(scores >= label_thresholds(score_threshold, labels)).flatten()
        keep = keep[torch.argsort(scores[keep], stable=True)]  # lowest first, best drawn last
    if max_instances is not None:
        keep = keep[len(keep) - min(len(keep), max(0, max_instances)) :]
    if len(keep) == 0:
        return canvas

    boxes, labels = boxes[keep], labels[keep]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    colours = [class_colour(int(label)) for label in labels]
    line = max(1, round(min(height, width) / 256))

    if masks is not None:
        bool_masks = binary_masks(masks, mask_threshold)
        if tuple(bool_masks.shape[-2:]) != (height, width):
            raise ValueError(
                f"Masks are {bool_masks.shape[-1]}x{bool_masks.shape[-2]} (WxH) but the image is "
                f"{width}x{height}; draw on the image the masks belong to."
            )
        if len(bool_masks) != num_instances:
            raise ValueError(f"{len(bool_masks)} masks for {num_instances} instances.")
        bool_masks = bool_masks[keep]
        outlines = mask_outlines(bool_masks, line)
        for mask, outline, colour in zip(bool_masks, outlines, colours, strict=True):
            if mask.any():
                canvas = draw_segmentation_masks(canvas, mask, alpha=mask_alpha, colors=colour)
                canvas = draw_segmentation_masks(canvas, outline, alpha=1.0, colors=colour)

    name = categories.name if categories is not None else (lambda k: f"class {k}")
    texts = [name(int(label)) for label in labels]
    if scores is not None:
        texts = [
            f"{text} {score:.2f}" for text, score in zip(texts, scores[keep].tolist(), strict=True)
        ]
    canvas = draw_bounding_boxes(canvas, boxes, colors=colours, width=line + 1)
    return draw_labels(canvas, boxes, texts, colours)


def draw_target(
    image: Tensor, target: dict[str, Any], categories: Categories | None = None
) -> Tensor:
    """Ground truth of one image (a data set's target: ``boxes``, ``labels``, ``masks``)."""
    return draw_instances(
        image, target["boxes"], target["labels"], target.get("masks"), categories=categories
    )


def draw_prediction(
    image: Tensor,
    prediction: dict[str, Tensor],
    categories: Categories | None = None,
    score_threshold: float | dict[int, float] = 0.5,
    mask_threshold: float = 0.5,
    max_instances: int | None = None,
) -> Tensor:
    """One image's detections as torchvision's Mask R-CNN returns them (``boxes``, ``labels``,
    ``scores``, ``masks`` [N,1,H,W] probabilities), above ``score_threshold``."""
    return draw_instances(
        image,
        prediction["boxes"],
        prediction["labels"],
        prediction.get("masks"),
        scores=prediction["scores"],
        categories=categories,
        score_threshold=score_threshold,
        mask_threshold=mask_threshold,
        max_instances=max_instances,
    )


def panel_grid(
    panels: Sequence[Tensor], columns: int | None = None, gap: int = 4, fill: int = 255
) -> Tensor:
    """Panels of any sizes in a grid (row by row), each top-left in a cell of the largest size.

    Returns uint8 [3, rows*H + (rows-1)*gap, columns*W + (columns-1)*gap], ``H``/``W`` the
    largest panel height/width, with ``fill`` (white) around smaller panels and in the gaps.
    """
    if not panels:
        raise ValueError("panel_grid needs at least one panel.")
    images = [to_uint8_image(p) for p in panels]
    columns = len(images) if columns is None else max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    cell_h = max(p.shape[1] for p in images)
    cell_w = max(p.shape[2] for p in images)
    grid = torch.full(
        (3, rows * cell_h + (rows - 1) * gap, columns * cell_w + (columns - 1) * gap),
        fill,
        dtype=torch.uint8,
    )
    for i, panel in enumerate(images):
        top, left = (i // columns) * (cell_h + gap), (i % columns) * (cell_w + gap)
        grid[:, top : top + panel.shape[1], left : left + panel.shape[2]] = panel
    return grid


def side_by_side(ground_truth_panel: Tensor, prediction_panel: Tensor, gap: int = 4) -> Tensor:
    """Ground truth left, prediction right: uint8 [3, H, 2W+gap] (smaller panels padded white)."""
    return panel_grid([ground_truth_panel, prediction_panel], columns=2, gap=gap)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write uint8 [3,H,W] (or float [0,1]) as a PNG, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil_image(to_uint8_image(image)).save(path)
    return path
