"""Plots of evaluation: per-class precision-recall curves and the confusion matrix (matplotlib on
its Agg canvas: no display needed), as uint8 images for the loggers and PNG files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from mrcnn.visualize.draw import class_colour


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


def plot_error_breakdown(errors: dict[str, Any], title: str = "") -> Tensor:
    """TIDE's dAP per error type (:mod:`mrcnn.evaluation.tide`), one bar group per type and one
    bar per IoU type (``errors``: IoU type -> ``TideErrors``); returns uint8 [3,H,W]."""
    from mrcnn.evaluation.tide import MAIN_ERRORS, SPECIAL_ERRORS

    kinds = [*MAIN_ERRORS, *SPECIAL_ERRORS]
    figure = _figure(9.0, 3.8)
    ax = figure.subplots()
    width = 0.8 / max(1, len(errors))
    for n, (iou_type, breakdown) in enumerate(errors.items()):
        values = [breakdown.main[k] for k in MAIN_ERRORS] + [
            breakdown.special[k] for k in SPECIAL_ERRORS
        ]
        positions = np.arange(len(kinds)) + (n - (len(errors) - 1) / 2) * width
        bars = ax.bar(positions, values, width, label=f"{iou_type} (AP50 {breakdown.ap:.1f})")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axvline(len(MAIN_ERRORS) - 0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("dAP (AP50 points gained if fixed)")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(title or "Which errors cost the AP (TIDE)")
    return figure_to_image(figure)
