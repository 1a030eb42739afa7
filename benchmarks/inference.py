"""Figure 5, inference: ``mrcnn.predict`` images/s / a plain torchvision eval loop, same images.

The checkpoint is a synthetic-set model (R50-FPN, ``model=fast``, 256 px) with
``box_score_thresh=0`` so that every image gets ``box_detections_per_img`` detections (a fresh
model would detect almost nothing); the images are coco128 JPEGs. Both sides load the weights,
decode the files and run the model in batches of ``batch_size``; a pass covers all images.

- drawing and writing excluded: ``predict(draw=false)`` (which still writes ``predictions.json``
  with RLE masks: the baseline does not) / ``model(images)`` with the outputs kept in memory;
- included: ``predict(draw=true)`` / the same loop plus torchvision's ``draw_segmentation_masks``
  and ``draw_bounding_boxes``, a PNG per image and a COCO results json (pycocotools RLE).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import (
    batches_from,
    compose,
    mrcnn_module,
    synthetic_overrides,
    torchvision_kwargs,
)
from mrcnn.builders import plain
from mrcnn.config import compose_config
from mrcnn.data.image_files import find_images
from mrcnn.predict import predict

TARGET_EXCLUDED = 0.95


def write_checkpoint(path: Path, tmp: str, quick: bool) -> dict:
    """An mrcnn checkpoint of a synthetic R50-FPN ``model=fast`` model (what ``mrcnn.train``
    saves), with heads torchvision's ``maskrcnn_resnet50_fpn`` can load."""
    cfg = compose([*synthetic_overrides(quick), "model.detector.box_score_thresh=0.0"], tmp)
    datamodule, _ = batches_from(cfg, 0)
    module = mrcnn_module(cfg, datamodule)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return torchvision_kwargs(plain(cfg.model.detector))


def plain_loop(
    ckpt: Path, detector: dict, files: list[Path], batch_size: int, out: Path | None
) -> int:
    """torchvision only: build, load, decode, predict (and optionally draw and write)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    num_classes = len(state["hyper_parameters"]["categories"]["names"]) + 1
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, **detector
    )
    model.load_state_dict(weights)
    model.eval()
    results, count = [], 0
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = []
        for file in chunk:
            with Image.open(file) as image:
                images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
        with torch.inference_mode():
            outputs = model([image.float() / 255 for image in images])
        count += sum(len(o["scores"]) for o in outputs)
        if out is None:
            continue
        for index, (file, image, output) in enumerate(zip(chunk, images, outputs, strict=True)):
            masks = output["masks"][:, 0] > 0.5
            drawn = draw_segmentation_masks(image, masks, alpha=0.5)
            drawn = draw_bounding_boxes(drawn, output["boxes"], width=2)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / f"{file.stem}.png")
            rles = mask_utils.encode(
                np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
            )
            boxes = output["boxes"].clone()
            boxes[:, 2:] -= boxes[:, :2]
            for box, score, label, rle in zip(
                boxes.tolist(),
                output["scores"].tolist(),
                output["labels"].tolist(),
                rles,
                strict=True,
            ):
                results.append(
                    {
                        "image_id": start + index + 1,
                        "category_id": label,
                        "bbox": box,
                        "score": score,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    }
                )
    if out is not None:
        (out / "predictions.json").write_text(json.dumps(results))
    return count


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    count = 4 if args.quick else args.images
    rounds = 1 if args.quick else args.rounds
    source = compose_config(["data=coco128"]).data.train.images
    files = find_images(source)[:count]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.ckpt"
        detector = write_checkpoint(ckpt, tmp, args.quick)
        base = [f"model_path={ckpt}", f"output={tmp}/predict", "evaluation.score_threshold=0.0"]
        with tempfile.TemporaryDirectory() as image_dir:
            for file in files:  # the input folder holds exactly these images
                Path(image_dir, file.name).symlink_to(file.resolve())
            for draw, target in ((False, TARGET_EXCLUDED), (True, None)):
                cfg = compose_config(
                    [*base, f"input={image_dir}", f"draw={draw}"], config_name="predict"
                )
                drawn = Path(tmp) / "plain"
                drawn.mkdir(exist_ok=True)

                def ours(cfg=cfg) -> None:
                    with quiet():
                        predict(cfg)

                def theirs(draw=draw, drawn=drawn, cfg=cfg) -> None:
                    plain_loop(ckpt, detector, files, int(cfg.batch_size), drawn if draw else None)

                times = alternate({"mrcnn": ours, "plain": theirs}, rounds)
                what = "included" if draw else "excluded"
                rows.append(
                    make_row(
                        5,
                        f"predict / plain eval loop, drawing+writing {what}",
                        count / median(times["mrcnn"]),
                        count / median(times["plain"]),
                        "images/s",
                        target,
                        higher_is_better=True,
                        threads=torch.get_num_threads(),
                        notes=(
                            f"{count} coco128 images, batch {cfg.batch_size}, predict "
                            f"num_workers={cfg.num_workers}, 256 px, 20 detections/image; s per "
                            f"pass mrcnn {spread(times['mrcnn'])}, plain {spread(times['plain'])}"
                        ),
                    )
                )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=16, help="images per pass (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per side (default 3)")


main = main_for("inference", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
