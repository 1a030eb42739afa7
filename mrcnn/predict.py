"""`python -m mrcnn.predict ckpt_path=FILE input=IMAGE_OR_DIR output=DIR`: detections for images.

``model=model.onnx`` (or ``.pt``; the config key is ``model_path``) instead of ``ckpt_path=`` runs
a model from ``mrcnn.export`` and writes the same files.

Writes to ``output``:

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

Images are read as training reads them (:mod:`mrcnn.data.images`): turned upright by their EXIF
orientation, so boxes, masks and ``images.json`` sizes are in the frame the model was trained
and annotated in. The model runs through :mod:`mrcnn.inference`, as in ``mrcnn.evaluate``; with
``tile_size`` set, its back end is wrapped in :class:`mrcnn.tiling.TiledBackend` (sliced
inference on images larger than a tile).

``score_threshold`` filters what is drawn AND what is written; ``mask_threshold`` binarises mask
probabilities for both. Unreadable images are skipped with a warning naming them, and counted in
the closing summary; the rest are still predicted (exit status 0). The two JSON files are written
last, each atomically (temporary file, then rename), and stale ones are removed at the start: if
they exist, the run that wrote them finished.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mrcnn.config import CONFIG_DIR
from mrcnn.data.errors import DataError
from mrcnn.data.images import IMAGE_EXTENSIONS, read_image
from mrcnn.errors import UserError
from mrcnn.evaluation.coco import check_mask_format, detections_to_coco_results
from mrcnn.io import write_json_atomically
from mrcnn.runner import command, configured_inference, exported_model_alias
from mrcnn.tiling import TiledBackend, check_tiling
from mrcnn.visualize import draw_prediction

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"


class PredictError(UserError, ValueError):
    """Bad input or output for ``predict``; the message says what to change."""


@dataclass
class PredictSummary:
    """What a ``predict`` run wrote, and what it could not read."""

    output_dir: Path
    predictions_path: Path
    images_path: Path
    num_images: int
    num_detections: int
    drawn: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def find_images(input_path: str | Path) -> list[Path]:
    """One image file, or a folder's image files (not sub-folders, not hidden) sorted by name."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise PredictError(f"input={input_path}: no such file or folder.")
    images = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise PredictError(
            f"input={input_path}: no images in this folder (looked for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}, any case, not in sub-folders)."
        )
    return images


def drawn_names(files: list[Path]) -> list[str]:
    """PNG name per input: ``<stem>.png``, or ``<file name>.png`` where two inputs share a stem."""
    stems = [f.stem for f in files]
    return [f"{f.stem if stems.count(f.stem) == 1 else f.name}.png" for f in files]


def image_ids_for(files: list[Path], annotations: str | Path | None) -> list[int]:
    """1..N in file order, or the ids a COCO annotation file gives these file names."""
    if annotations is None:
        return list(range(1, len(files) + 1))
    try:
        with open(annotations) as handle:
            images = json.load(handle)["images"]
        by_name = {Path(image["file_name"]).name: int(image["id"]) for image in images}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PredictError(
            f"image_ids_from={annotations}: not a readable COCO annotation file ({error})."
        ) from error
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise PredictError(
            f"image_ids_from={annotations} has no image named {shown}. Give the images that "
            "file describes, or drop image_ids_from to number the images 1..N."
        )
    return [by_name[f.name] for f in files]


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


class ImageFiles(Dataset):
    """Image files as uint8 RGB [3,H,W], read as training reads them (upright by their EXIF
    orientation, :func:`mrcnn.data.images.read_image`); an unreadable file yields its error."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            array = read_image(self.files[index], "predict input")
            return {"index": index, "image": torch.from_numpy(array).permute(2, 0, 1).contiguous()}
        except DataError as error:  # the reader's message names the file and what is wrong
            return {"index": index, "image": None, "error": str(error)}
        except Exception as error:  # any other decoder failure also means "skip it, say why"
            return {"index": index, "image": None, "error": f"{type(error).__name__}: {error}"}


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def batches(loader: DataLoader, progress: tqdm) -> Iterator[list[dict[str, Any]]]:
    for batch in loader:
        yield batch
        progress.update(len(batch))


def predict(cfg: DictConfig) -> PredictSummary:
    """Run the checkpoint on the input images and write PNGs and COCO JSON (see module doc)."""
    score_threshold, mask_threshold = float(cfg.score_threshold), float(cfg.mask_threshold)
    files = find_images(cfg.input)
    names = drawn_names(files)
    image_ids = image_ids_for(files, cfg.get("image_ids_from"))
    check_mask_format(cfg.mask_format)
    if cfg.tile_size is not None:
        check_tiling(cfg.tile_size, cfg.tile_overlap)
    # Settings first: a typo must not cost the last run's results. A bad output folder fails
    # before the model loads; a model that fails to load leaves no stale results behind.
    output = prepare_output(cfg.output, files, names, bool(cfg.draw))
    inference, categories, source = configured_inference(cfg, score_threshold, mask_threshold)
    if cfg.tile_size is not None:  # sliced inference: the same contract, tile by tile
        inference.backend = TiledBackend(
            inference.backend,
            cfg.tile_size,
            cfg.tile_overlap,
            int(cfg.batch_size),
            mask_threshold=mask_threshold,
            score_threshold=score_threshold,
        )
    log.info(
        "Predicting %d image(s) from %s with %s (classes %s) on %s.",
        len(files),
        cfg.input,
        source,
        list(categories.names),
        inference.backend.device,
    )

    loader = DataLoader(
        ImageFiles(files),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        collate_fn=_as_list,
    )
    results: list[dict[str, Any]] = []
    images_info: list[dict[str, Any]] = []
    summary = PredictSummary(output, output / PREDICTIONS_FILE, output / IMAGES_FILE, 0, 0)
    with tqdm(total=len(files), unit="image", desc="predict", dynamic_ncols=True) as progress:
        for batch in batches(loader, progress):
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
            results.extend(
                detections_to_coco_results(
                    detections,
                    ids,
                    categories,
                    mask_threshold,
                    cfg.mask_format,
                    float(cfg.polygon_tolerance),
                )
            )
            for item, image_id, detection in zip(readable, ids, detections, strict=True):
                index, image = item["index"], item["image"]
                images_info.append(
                    {
                        "id": image_id,
                        "file_name": files[index].name,
                        "height": int(image.shape[1]),
                        "width": int(image.shape[2]),
                    }
                )
                summary.num_detections += len(detection["scores"])
                if cfg.draw:
                    drawn = draw_prediction(
                        image, detection, categories, score_threshold, mask_threshold
                    )
                    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(output / names[index])
                    summary.drawn.append(output / names[index])
    summary.num_images = len(images_info)

    write_json_atomically(results, summary.predictions_path)
    write_json_atomically(
        {
            "info": {
                "description": "mrcnn.predict: image ids of predictions.json",
                "checkpoint": source,
                "input": str(cfg.input),
                "score_threshold": score_threshold,
                "mask_threshold": mask_threshold,
                "mask_format": cfg.mask_format,
                "tile_size": cfg.tile_size,
                "tile_overlap": cfg.tile_overlap if cfg.tile_size is not None else None,
                "skipped": [
                    {"file_name": path.name, "id": image_ids[files.index(path)], "error": error}
                    for path, error in summary.skipped
                ],
            },
            "images": images_info,
            "categories": [
                {"id": categories.dataset_id(label), "name": categories.name(label)}
                for label in range(1, categories.num_classes)
            ],
            "annotations": [],
        },
        summary.images_path,
    )
    log.info(
        "Predicted %d image(s): %d detection(s) with score >= %g in %s; ids in %s%s.",
        summary.num_images,
        summary.num_detections,
        score_threshold,
        summary.predictions_path,
        summary.images_path,
        f"; drawn PNGs in {output}" if cfg.draw else "",
    )
    as_rle = sum(isinstance(r.get("segmentation"), dict) for r in results)
    if cfg.mask_format == "polygon" and as_rle:
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
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
@command("mrcnn.predict")
def main(cfg: DictConfig) -> None:
    """``python -m mrcnn.predict``."""
    predict(cfg)


def cli() -> None:
    """``python -m mrcnn.predict`` and the ``mrcnn-predict`` script: ``model=FILE`` on the command
    line names an exported model (:func:`~mrcnn.runner.exported_model_alias`)."""
    sys.argv = exported_model_alias(sys.argv)
    main()


if __name__ == "__main__":
    cli()
