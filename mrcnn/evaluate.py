"""`python -m mrcnn.evaluate`: COCO box and mask AP of a checkpoint or a results file.

- ``ckpt_path=FILE``: the checkpoint alone rebuilds the model and its classes; the classes must
  match the data's; the validation split is predicted through :mod:`mrcnn.inference` (as
  ``mrcnn.predict`` predicts) and scored.
- ``model=FILE.onnx`` (or ``.pt``; the config key is ``model_path``): a model from
  ``mrcnn.export``, its classes from its sidecar, run (ONNX Runtime, TorchScript) and scored
  the same way.
- ``results=FILE.json``: a COCO results file from ``predict`` or any other tool is scored
  against the same validation split.

Prints a table of the 12 COCOeval numbers for bbox and segm and writes them as json. The json
is written only when evaluation finished: a failure leaves no file that looks complete.

Pictures of the errors go to the run folder: per-class precision-recall curves
(``pr_curves_<bbox|segm>.png``) and the confusion matrix at IoU 0.5 with a background row and
column (``confusion_matrix_<bbox|segm>.png``, its counts in the json); with ``worst=N``, the N
validation images with the most errors, each error marked (``worst/01_<image>.png``, ...).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mrcnn.config import CONFIG_DIR
from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import collate
from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.errors import ConfigError
from mrcnn.evaluation.coco import (
    IOU_TYPES,
    CocoReport,
    check_results,
    coco_report,
    detections_to_coco_results,
    format_metrics_table,
    format_per_class_table,
    ground_truth_for,
    load_results,
)
from mrcnn.evaluation.diagnostics import confusion_json, error_counts, worst_images
from mrcnn.export import read_sidecar
from mrcnn.inference import Inference
from mrcnn.io import write_json_atomically
from mrcnn.model.checkpoint import ensure_classes_match
from mrcnn.runner import build_datamodule, command, configured_inference, exported_model_alias
from mrcnn.visualize import draw_marked, plot_confusion_matrix, plot_pr_curves, save_png

log = logging.getLogger(__name__)


def predict_results(
    inference: Inference, dataset: Dataset, categories: Categories, num_workers: int = 0
) -> tuple[list[dict], list[int]]:
    """COCO results of ``inference`` on every image of ``dataset``, converted batch by batch
    (RLE masks, not full-image ones, are kept).

    Returns the results and the ids of every image predicted (with or without detections).
    """
    loader = DataLoader(
        dataset,
        batch_size=inference.batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        shuffle=False,
    )
    results: list[dict] = []
    image_ids: list[int] = []
    with tqdm(total=len(dataset), desc="Evaluating", unit="img") as bar:
        for images, targets in loader:
            detections = inference(images)
            ids = [int(target["image_id"]) for target in targets]
            results += detections_to_coco_results(
                detections, ids, categories, inference.mask_threshold
            )
            image_ids += ids
            bar.update(len(images))
    return results, image_ids


def keep_detections(inference: Inference, count: int, source: str | Path) -> None:
    """Let a checkpoint's model keep at least ``count`` detections per image (what AP counts);
    an exported model's limit is fixed in its graph: a warning says when it is lower."""
    roi_heads = getattr(getattr(inference.backend, "model", None), "roi_heads", None)
    if roi_heads is not None and hasattr(roi_heads, "detections_per_img"):
        if roi_heads.detections_per_img < count:
            log.info("The model keeps %d detections per image (max_detections).", count)
            roi_heads.detections_per_img = count
        return
    kept = int(read_sidecar(source)["thresholds"]["box_detections_per_img"])
    if kept < count:
        log.warning(
            "max_detections=%d, but %s keeps at most %d detections per image (fixed when it was "
            "exported, from the checkpoint's model.detector.box_detections_per_img): AP counts "
            "at most %d. Evaluate the checkpoint (ckpt_path=) to count more.",
            count,
            source,
            kept,
            kept,
        )


def write_error_plots(report: CocoReport, folder: Path) -> list[Path]:
    """``pr_curves_<type>.png`` and ``confusion_matrix_<type>.png`` for each IoU type."""
    written = []
    for iou_type in report.precision:
        title = f"{iou_type}: precision-recall per class"
        written.append(
            save_png(
                plot_pr_curves(report.pr_curves(iou_type), title),
                folder / f"pr_curves_{iou_type}.png",
            )
        )
        title = f"{iou_type}: confusion matrix (IoU >= 0.5, score >= {report.score_threshold:g})"
        matrix = plot_confusion_matrix(report.confusion[iou_type], report.class_names, title)
        written.append(save_png(matrix, folder / f"confusion_matrix_{iou_type}.png"))
    return written


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


def check_worst(worst: Any) -> int:
    """``worst=N``: a whole number, 0 (no gallery) or more."""
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(
            f"worst={worst!r}: give the number of worst images to draw, 0 or more "
            "(e.g. worst=8; worst=0 draws none)."
        )
    return worst


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate as configured, print the table, write the metrics json; return the metrics."""
    if sum(cfg.get(key) is not None for key in ("ckpt_path", "model_path", "results")) != 1:
        raise ConfigError(
            "Give exactly one of ckpt_path=FILE (evaluate a checkpoint), model=FILE.onnx|.pt "
            "(a model from mrcnn.export; the key model_path) or results=FILE.json (score a COCO "
            "results file)."
        )
    worst = check_worst(cfg.get("worst", 0))
    # Read the model first: a bad file fails fast, before any data is touched.
    inference = model_categories = None
    if cfg.get("results") is None:
        inference, model_categories, source = configured_inference(cfg, 0.0, cfg.mask_threshold)

    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    val_set = datamodule.val_set
    categories = datamodule.categories
    if inference is not None:  # before the ground truth: that reads every validation mask
        ensure_classes_match(model_categories, categories)
    ground_truth = ground_truth_for(val_set, categories)
    info: dict[str, Any] = {"num_images": len(val_set)}

    max_detections = int(cfg.get("max_detections") or 100)  # null: COCO's 100
    if inference is not None:
        if cfg.get("max_detections"):
            keep_detections(inference, max_detections, source)
        results, image_ids = predict_results(
            inference, val_set, categories, num_workers=int(cfg.num_workers)
        )
        iou_types: tuple[str, ...] = IOU_TYPES
        info["ckpt_path" if cfg.get("ckpt_path") is not None else "model_path"] = str(
            Path(source).resolve()
        )
    else:
        source = Path(cfg.results)
        results = load_results(source)
        supported = check_results(results, ground_truth, source=str(source))
        iou_types = tuple(t for t in IOU_TYPES if t in supported) if results else IOU_TYPES
        image_ids = None  # every validation image counts, predicted or not
        info["results"] = str(source.resolve())
        if "segm" not in iou_types:
            log.info("%s has boxes only: evaluating bbox.", source)

    report = coco_report(
        ground_truth,
        results,
        iou_types=iou_types,
        backend=cfg.backend,
        image_ids=image_ids,
        max_detections=max_detections,
        score_threshold=cfg.get("confusion_score_threshold", 0.5),
    )
    metrics = report.metrics
    info["num_detections"] = len(results)
    print(
        f"COCO metrics (%), {info['num_images']} validation images, "
        f"{info['num_detections']} detections:\n{format_metrics_table(metrics)}\n"
        "AP: mean over IoU 0.50:0.95; s/m/l: objects under 32², 32²-96², over 96² pixels; "
        f"AR1/10/{max_detections}: recall with at most 1/10/{max_detections} detections per "
        "image; -: nothing to measure.\n"
        f"\nPer class (%), weakest first:\n{format_per_class_table(report)}"
    )
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "metrics.json"
    run_dir = output.parent  # the pictures go beside the metrics
    pictures = write_error_plots(report, run_dir)
    worst_written = write_worst_images(report, val_set, ground_truth, worst, run_dir / "worst")
    print(f"\nPictures of the errors: {', '.join(str(p) for p in pictures)}")
    if not worst:
        print("worst=N draws the N validation images with the most errors, each error marked.")
    else:
        print(
            f"The {len(worst_written)} images with the most errors: {run_dir / 'worst'}"
            + (f" (only {len(worst_written)} have errors)" if len(worst_written) < worst else "")
        )
    write_json_atomically(
        {
            "metrics": metrics,
            "per_class": report.per_class,
            "confusion": {
                t: confusion_json(m, report.class_names, report.score_threshold)
                for t, m in report.confusion.items()
            },
            "pictures": [str(p) for p in pictures],
            "worst": worst_written,
            **info,
            "mask_threshold": cfg.mask_threshold,
            "max_detections": max_detections,
        },
        output,
        indent=2,
    )
    log.info("Metrics written to %s", output)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
@command("mrcnn.evaluate")
def main(cfg: DictConfig) -> None:
    """``python -m mrcnn.evaluate``."""
    evaluate(cfg)


def cli() -> None:
    """``python -m mrcnn.evaluate``: ``model=FILE`` on the command line names an exported model
    (:func:`~mrcnn.runner.exported_model_alias`)."""
    sys.argv = exported_model_alias(sys.argv)
    main()


if __name__ == "__main__":
    cli()
