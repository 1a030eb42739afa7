"""`mrcnn predict model=FILE input=IMAGE_OR_DIR output=DIR`: detections for images.

``model=`` is a checkpoint from ``mrcnn train`` or a model from ``mrcnn export`` (``.onnx``,
``.pt``); the config key is ``model_path``. Writes to ``output``:

- ``<image stem>.png`` per image: the image with the masks, boxes, class names and scores drawn
  (``<file name>.png``, e.g. ``a.jpg.png``, when two inputs share a stem);
- ``predictions.json``: COCO results for the whole input (``image_id``, ``category_id`` = the data
  set's own category id, ``bbox`` [x, y, w, h] in pixels, ``score``, ``segmentation`` as RLE, or
  with ``mask_format=polygon`` as COCO polygons, RLE where a mask has no polygon form);
- ``images.json``: ``{"images": [{"id", "file_name", "height", "width"}], "categories": [...],
  "info": {...}}``, which maps every ``image_id`` back to its file, and is also a COCO ground-truth
  skeleton that pycocotools' ``COCO.loadRes`` accepts. ``info.skipped`` lists unreadable files.

Image ids: the input folder's image files (not sub-folders; hidden files ignored) are sorted by
file name and numbered 1..N; a single input file gets id 1. Ids are given before any image is
read, so an unreadable file keeps its number (with no results) and the others do not shift. With
``image_ids_from=ANNOTATIONS.json`` the ids are that COCO file's ids for the same file names, so
``predictions.json`` can be evaluated against those annotations.

Images are read as training reads them (:mod:`mrcnn.data.image_files`): turned upright by their
EXIF orientation, so boxes, masks and ``images.json`` sizes are in the frame the model was trained
and annotated in. The model runs through :mod:`mrcnn.inference`, as in ``evaluate``; with
``tile_size`` set, its back end is wrapped in :class:`~mrcnn.inference.tiling.TiledBackend`
(sliced inference on images larger than a tile).

``evaluation.score_threshold`` filters what is drawn AND what is written;
``evaluation.mask_threshold`` binarises mask probabilities for both. Unreadable images are skipped
with a warning naming them, and counted in the closing summary; the rest are still predicted (exit
status 0). The two JSON files are written last, each atomically (temporary file, then rename), and
stale ones are removed at the start: if they exist, the run that wrote them finished.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from mrcnn.argv import prepare_command_line
from mrcnn.config import CONFIG_DIR
from mrcnn.data.categories import Categories
from mrcnn.data.image_files import ImageFiles, find_images, image_ids_for
from mrcnn.errors import UserError
from mrcnn.evaluation.calibration import CALIBRATED, check_threshold
from mrcnn.evaluation.results import check_mask_format, detections_to_coco_results
from mrcnn.inference.core import Inference, lowest_threshold
from mrcnn.inference.loading import configured_inference
from mrcnn.inference.tiling import TiledBackend, check_tiling
from mrcnn.io import write_json_atomically
from mrcnn.task import command
from mrcnn.visualize import draw_prediction

log = logging.getLogger(__name__)

COMMAND = "mrcnn predict"
PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"


class PredictError(UserError, ValueError):
    """An output folder ``predict`` cannot write to; the message says what to change."""


@dataclass
class PredictSummary:
    """What a ``predict`` run wrote, and what it could not read."""

    output_dir: Path
    predictions_path: Path
    images_path: Path
    num_images: int = 0
    num_detections: int = 0
    drawn: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def drawn_names(files: list[Path]) -> list[str]:
    """PNG name per input: ``<stem>.png``, or ``<file name>.png`` where two inputs share a stem."""
    stems = [f.stem for f in files]
    return [f"{f.stem if stems.count(f.stem) == 1 else f.name}.png" for f in files]


def prepare_output(output: str | Path, files: list[Path], names: list[str], draw: bool) -> Path:
    """Create ``output``, prove it writable, refuse to overwrite inputs, remove stale results."""
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise PredictError(f"output={output} is not a writable folder: {error}") from error
    if draw:
        inputs = {f.resolve() for f in files}
        clashes = [name for name in names if (out / name).resolve() in inputs]
        if clashes:
            raise PredictError(
                f"output={output} would overwrite input images ({', '.join(clashes[:5])}): "
                "choose another output folder."
            )
    for stale in (PREDICTIONS_FILE, IMAGES_FILE):
        if (out / stale).exists():
            log.info("Removing %s from an earlier run; it is rewritten when this run ends.", stale)
            (out / stale).unlink()
    return out


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def predict(cfg: DictConfig) -> PredictSummary:
    """Run the model on the input images and write PNGs and COCO JSON (see module doc)."""
    score_setting = cfg.evaluation.score_threshold  # a number, or `calibrated`
    if score_setting != CALIBRATED:
        check_threshold(score_setting)
    mask_threshold = float(cfg.evaluation.mask_threshold)
    files = find_images(cfg.input)
    names = drawn_names(files)
    image_ids = image_ids_for(files, cfg.get("image_ids_from"))
    check_mask_format(cfg.mask_format)
    if cfg.tile_size is not None:
        check_tiling(cfg.tile_size, cfg.tile_overlap)
    # Settings first: a typo must not cost the last run's results. A bad output folder fails
    # before the model loads; a model that fails to load leaves no stale results behind.
    output = prepare_output(cfg.output, files, names, bool(cfg.draw))
    inference, categories, source = configured_inference(cfg, score_setting, mask_threshold)
    score_threshold = inference.score_threshold  # per label when calibrated
    if isinstance(score_threshold, dict):
        log.info(
            "Calibrated score thresholds: %s.",
            ", ".join(f"{categories.name(k)} {v:.3f}" for k, v in score_threshold.items()),
        )
    if cfg.tile_size is not None:  # sliced inference: the same contract, tile by tile
        inference.backend = TiledBackend(
            inference.backend,
            cfg.tile_size,
            cfg.tile_overlap,
            int(cfg.batch_size),
            mask_threshold=mask_threshold,
            # A pre-filter only: Inference applies each class's own threshold after merging.
            score_threshold=lowest_threshold(score_threshold),
        )
    log.info(
        "Predicting %d image(s) from %s with %s (classes %s) on %s.",
        len(files),
        cfg.input,
        source,
        list(categories.names),
        inference.backend.device,
    )
    summary = PredictSummary(output, output / PREDICTIONS_FILE, output / IMAGES_FILE)
    results, images = predict_files(
        inference, categories, files, image_ids, cfg, (names if cfg.draw else None), summary
    )
    write_json_atomically(results, summary.predictions_path)
    info = {
        "description": "mrcnn predict: image ids of predictions.json",
        "model": source,
        "input": str(cfg.input),
        "score_threshold": (
            {categories.name(k): v for k, v in score_threshold.items()}
            if isinstance(score_threshold, dict)
            else score_threshold
        ),
        "mask_threshold": mask_threshold,
        "mask_format": cfg.mask_format,
        "tile_size": cfg.tile_size,
        "tile_overlap": cfg.tile_overlap if cfg.tile_size is not None else None,
        "skipped": [
            {"file_name": path.name, "id": image_ids[files.index(path)], "error": error}
            for path, error in summary.skipped
        ],
    }
    write_json_atomically(images_json(info, images, categories), summary.images_path)
    log_summary(summary, results, score_threshold, cfg.mask_format)
    return summary


def predict_files(
    inference: Inference,
    categories: Categories,
    files: list[Path],
    image_ids: list[int],
    cfg: DictConfig,
    drawn: list[str] | None,
    summary: PredictSummary,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO results and COCO ``images`` entries of every readable file, drawn as ``drawn``
    names (None: not drawn); ``summary`` counts what was done and skipped."""
    loader = DataLoader(
        ImageFiles(files),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        collate_fn=_as_list,
    )
    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    evaluation = cfg.evaluation
    with tqdm(total=len(files), unit="image", desc="predict", dynamic_ncols=True) as progress:
        for batch in loader:
            progress.update(len(batch))
            readable = []
            for item in batch:
                if item["image"] is None:
                    path = files[item["index"]]
                    log.warning("Skipping unreadable image %s (%s).", path, item["error"])
                    summary.skipped.append((path, item["error"]))
                else:
                    readable.append(item)
            if not readable:
                continue
            detections = inference([item["image"] for item in readable])
            ids = [image_ids[item["index"]] for item in readable]
            results += detections_to_coco_results(
                detections,
                ids,
                categories,
                float(evaluation.mask_threshold),
                cfg.mask_format,
                float(cfg.polygon_tolerance),
            )
            for item, image_id, detection in zip(readable, ids, detections, strict=True):
                index, image = item["index"], item["image"]
                height, width = int(image.shape[1]), int(image.shape[2])
                name = files[index].name
                images.append({"id": image_id, "file_name": name, "height": height, "width": width})
                summary.num_detections += len(detection["scores"])
                if drawn is not None:
                    picture = draw_prediction(
                        image,
                        detection,
                        categories,
                        inference.score_threshold,
                        float(evaluation.mask_threshold),
                    )
                    path = summary.output_dir / drawn[index]
                    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
                    summary.drawn.append(path)
    summary.num_images = len(images)
    return results, images


def images_json(
    info: dict[str, Any], images: list[dict[str, Any]], categories: Categories
) -> dict[str, Any]:
    """``images.json``: the image ids of ``predictions.json``, as a COCO ground-truth skeleton."""
    return {
        "info": info,
        "images": images,
        "categories": [
            {"id": categories.dataset_id(label), "name": categories.name(label)}
            for label in range(1, categories.num_classes)
        ],
        "annotations": [],
    }


def log_summary(
    summary: PredictSummary,
    results: list[dict],
    score_threshold: float | dict[int, float],
    mask_format: str,
) -> None:
    """The closing lines: what was written where, masks kept as RLE, files skipped."""
    log.info(
        "Predicted %d image(s): %d detection(s) with score >= %s in %s; ids in %s%s.",
        summary.num_images,
        summary.num_detections,
        "each class's calibrated threshold"
        if isinstance(score_threshold, dict)
        else f"{score_threshold:g}",
        summary.predictions_path,
        summary.images_path,
        f"; drawn PNGs in {summary.output_dir}" if summary.drawn else "",
    )
    as_rle = sum(isinstance(r.get("segmentation"), dict) for r in results)
    if mask_format == "polygon" and as_rle:
        log.info(
            "%d of %d mask(s) written as RLE: no polygon of 3+ points, or holes a polygon "
            "cannot cut.",
            as_rle,
            len(results),
        )
    if summary.skipped:
        log.warning(
            "%d image(s) skipped (unreadable): %s",
            len(summary.skipped),
            ", ".join(str(path) for path, _ in summary.skipped),
        )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
@command(COMMAND)
def main(cfg: DictConfig) -> None:
    """``mrcnn predict`` (see module doc)."""
    predict(cfg)


def cli() -> None:
    """``mrcnn predict``, ``mrcnn-predict`` and ``python -m mrcnn.predict``."""
    prepare_command_line("predict")
    main()


if __name__ == "__main__":
    cli()
