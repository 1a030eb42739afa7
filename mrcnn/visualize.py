"""The one module that draws: masks, boxes and labels (for TensorBoard, ``predict`` and
notebooks), evaluation errors marked on an image, and the PR-curve and confusion-matrix plots
(matplotlib on its Agg canvas: no display needed).

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
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mrcnn.data.categories import Categories

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
    (:func:`mrcnn.evaluation.coco.detections_to_coco_results`), so drawings match results files.
    """
    masks = masks.detach().cpu()
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"Masks [N,1,H,W] expected, got {tuple(masks.shape)}.")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"Masks [N,H,W] or [N,1,H,W] expected, got {tuple(masks.shape)}.")
    if masks.dtype.is_floating_point:
        return masks.float() > mask_threshold
    return masks != 0


def _outline(masks: Tensor, width: int) -> Tensor:
    """The inner border (``width`` pixels) of each bool mask [N,H,W]."""
    inverted = (~masks).float()[:, None]
    grown = F.max_pool2d(inverted, kernel_size=2 * width + 1, stride=1, padding=width)
    return masks & (grown[:, 0] > 0)


def _text_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_labels(
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
    score_threshold: float = 0.5,
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
        score_threshold: minimum score drawn (predictions only).
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
        keep = torch.nonzero(scores >= score_threshold).flatten()
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
        outlines = _outline(bool_masks, line)
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
    return _draw_labels(canvas, boxes, texts, colours)


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
    score_threshold: float = 0.5,
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


# --------------------------------------------------------------------------- errors and plots

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
            outlines = _outline(ordered, line)
            for i, (mask, outline) in enumerate(zip(ordered, outlines, strict=True)):
                if not mask.any():
                    continue
                if kinds[order[i]] != "correct":
                    canvas = draw_segmentation_masks(
                        canvas, mask, alpha=mask_alpha, colors=colours[i]
                    )
                canvas = draw_segmentation_masks(canvas, outline, alpha=1.0, colors=colours[i])
        canvas = draw_bounding_boxes(canvas, boxes, colors=colours, width=line)
        canvas = _draw_labels(canvas, boxes, [texts[i] for i in order], colours, avoid_overlap=True)
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


def _figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib Figure (inches) on the Agg canvas: no display, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_to_image(figure: Any) -> Tensor:
    """A drawn matplotlib figure as uint8 [3,H,W] (what :func:`mrcnn.loggers.log_image` takes)."""
    buffer = io.BytesIO()
    # bbox_inches="tight": the canvas grows to hold every label (long class names included).
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1, facecolor="white")
    buffer.seek(0)
    return pil_to_tensor(Image.open(buffer).convert("RGB"))


def plot_pr_curves(curves: Sequence[Any], title: str = "", legend_size: int = 10) -> Tensor:
    """Per-class precision-recall curves, at IoU 0.5 (left) and averaged over IoU 0.50:0.95
    (right), with the mean over classes in black; returns uint8 [3,H,W].

    ``curves``: :class:`mrcnn.evaluation.diagnostics.PRCurve` (``name``, ``recall``,
    ``precision50``, ``precision``, ``ap50``, ``ap``). With many classes, the legend names the
    ``legend_size`` weakest (by AP50 on the left, AP on the right).
    """
    figure = _figure(10, 4.6)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, field_name, ap_name, label in (
        (axes[0], "precision50", "ap50", "IoU 0.5"),
        (axes[1], "precision", "ap", "IoU 0.50:0.95 (mean)"),
    ):
        ranked = sorted(range(len(curves)), key=lambda i: getattr(curves[i], ap_name))
        named = set(ranked[:legend_size])
        for i, curve in enumerate(curves):
            colour = tuple(c / 255 for c in class_colour(i + 1))
            ax.plot(
                curve.recall,
                getattr(curve, field_name),
                color=colour,
                linewidth=1.5 if len(curves) <= legend_size else 0.8,
                label=f"{curve.name} {getattr(curve, ap_name):.3f}" if i in named else None,
            )
        if curves:
            mean = np.mean([getattr(c, field_name) for c in curves], axis=0)
            ax.plot(
                curves[0].recall,
                mean,
                color="black",
                linewidth=2.5,
                label=f"all classes {float(mean.mean()):.3f}",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_title(f"{label}: AP{'50' if ap_name == 'ap50' else ''} per class")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    axes[0].set_ylabel("precision")
    if len(curves) > legend_size:
        title += f" (legend: the {legend_size} weakest of {len(curves)} classes)"
    if title:
        figure.suptitle(title)
    return figure_to_image(figure)


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], title: str = "", annotate_up_to: int = 30
) -> Tensor:
    """A confusion matrix ``[K+1, K+1]`` (rows: ground truth, columns: prediction, the last of
    each ``background``), coloured by each row's share and labelled with counts; returns uint8
    [3,H,W]. Counts are written in cells when there are at most ``annotate_up_to`` rows."""
    matrix = np.asarray(matrix)
    labels = [*names, "background"]
    size = len(labels)
    if matrix.shape != (size, size):
        raise ValueError(f"A {matrix.shape} matrix for {size} labels (classes + background).")
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = min(4.0 + 0.45 * size, 18.0)
    figure = _figure(side + 1.2, side)
    ax = figure.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(size), labels, rotation=45 if size > 4 else 0, ha="right")
    ax.set_yticks(range(size), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if size <= annotate_up_to:
        for row in range(size):
            for column in range(size):
                if row == column == size - 1:
                    continue  # background taken for background: not counted
                count = int(matrix[row, column])
                ax.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=10 if size <= 12 else 7,
                    color="white" if shares[row, column] > 0.6 else "black",
                )
    if title:
        ax.set_title(title)
    return figure_to_image(figure)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write uint8 [3,H,W] (or float [0,1]) as a PNG, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil_image(to_uint8_image(image)).save(path)
    return path


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
