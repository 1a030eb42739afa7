"""Pictures of where a model fails, written beside ``evaluate``'s metrics: per-class PR curves,
the confusion matrix, and the validation images with the most errors, each error marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.errors import ConfigError
from mrcnn.evaluation.cocoeval import CocoReport
from mrcnn.evaluation.diagnostics import error_counts, worst_images
from mrcnn.visualize import (
    draw_marked,
    plot_confusion_matrix,
    plot_error_breakdown,
    plot_pr_curves,
    save_png,
)


def write_error_plots(report: CocoReport, folder: Path) -> list[Path]:
    """``pr_curves_<type>.png`` and ``confusion_matrix_<type>.png`` for each IoU type, and
    ``error_breakdown.png`` (TIDE's dAP per error type) when the report has it."""
    written = []
    for iou_type in report.precision:
        title = f"{iou_type}: precision-recall per class"
        written.append(
            save_png(
                plot_pr_curves(report.pr_curves(iou_type), title),
                folder / f"pr_curves_{iou_type}.png",
            )
        )
        title = f"{iou_type}: confusion matrix (IoU >= 0.5, score >= {report.threshold_text})"
        matrix = plot_confusion_matrix(report.confusion[iou_type], report.class_names, title)
        written.append(save_png(matrix, folder / f"confusion_matrix_{iou_type}.png"))
    if report.errors:
        breakdown = plot_error_breakdown(report.errors)
        written.append(save_png(breakdown, folder / "error_breakdown.png"))
    return written


def check_worst(worst: Any) -> int:
    """``worst=N``: a whole number, 0 (no gallery) or more."""
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(
            f"worst={worst!r}: give the number of worst images to draw, 0 or more "
            "(e.g. worst=8; worst=0 draws none)."
        )
    return worst


def write_worst_images(
    report: CocoReport, dataset: Dataset, ground_truth: dict, count: int, folder: Path
) -> list[dict[str, Any]]:
    """The ``count`` images with the most errors (masks where there are, else boxes), drawn
    with every error marked, as ``folder/01_<image>.png``, ...; returns what was written."""
    iou_type = "segm" if "segm" in report.marked else "bbox"
    marked = report.marked[iou_type]
    base, indices = unwrap_dataset(dataset)
    index_of = {int(base.image_id(i)) if hasattr(base, "image_id") else i: i for i in indices}
    file_names = {im["id"]: im.get("file_name") for im in ground_truth["images"]}
    names = dict(zip(report.category_ids, report.class_names, strict=True))
    written = []
    for rank, image_id in enumerate(worst_images(marked, count), start=1):
        image = base[index_of[image_id]][0]
        stem = Path(file_names.get(image_id) or f"image_{image_id}").stem
        path = save_png(
            draw_marked(image, marked[image_id], names), folder / f"{rank:02d}_{stem}.png"
        )
        written.append({"file": str(path), "image_id": image_id, **error_counts(marked[image_id])})
    return written
