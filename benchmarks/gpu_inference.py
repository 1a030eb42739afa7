"""GPU figure G2: ``mrcnn predict`` images/s / a plain torchvision eval loop, on the device.

The model is torchvision's R50-FPN (``model=default``) with random weights and
``box_score_thresh=0``, so every image yields ``box_detections_per_img`` (100) detections and
the mask head, mask pasting and encoding run at their heaviest; the images are synthetic PNGs of
``image_size`` px. mrcnn's side is ``mrcnn.predict.predict`` with ``draw=false`` (decode,
batches, the model, masks thresholded on the device, COCO RLE, ``predictions.json``); the plain
side decodes with PIL, runs ``model(images)`` in ``inference_mode`` (autocast as asked),
thresholds the masks on the device and RLE-encodes them with pycocotools: what any loop that
keeps its results does. Passes alternate; each covers every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.models.detection import maskrcnn_resnet50_fpn

from benchmarks.common import alternate, make_row, median, quiet, spread
from benchmarks.gpu_training import AUTOCAST_DTYPES, synchronizer
from benchmarks.setups import compose, mrcnn_module, torchvision_kwargs
from mrcnn.builders import plain
from mrcnn.config import compose_config
from mrcnn.data import ShapesDataset
from mrcnn.data.image_files import find_images
from mrcnn.precision import resolve_precision
from mrcnn.predict import predict

TARGET = 0.95  # figure 5's, on the CPU


def write_model(path: Path, image_size: int, workdir: Path) -> dict[str, Any]:
    """An mrcnn checkpoint of a fresh R50-FPN that keeps every detection; torchvision's
    keyword arguments for the same model."""
    cfg = compose(
        [
            "model=default",
            "backbone=resnet50",
            "backbone.returned_layers=[1,2,3,4]",
            f"data.image_size={image_size}",
            f"data.max_image_size={image_size}",
            "model.detector.box_score_thresh=0.0",
        ],
        workdir,
    )
    datamodule = instantiate(cfg.data)
    module = mrcnn_module(cfg, datamodule)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return torchvision_kwargs(plain(cfg.model.detector))


def write_images(folder: Path, count: int, image_size: int) -> list[Path]:
    """``count`` synthetic validation images as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = ShapesDataset(num_images=count, image_size=image_size, seed=1)
    for index in range(count):
        Image.fromarray(shapes.load_raw(index).image).save(folder / f"{index:04d}.png")
    return find_images(folder)


def plain_predict(
    model: torch.nn.Module,
    files: list[Path],
    batch_size: int,
    device: torch.device,
    precision: str,
) -> int:
    """Decode, predict, threshold masks on the device, RLE-encode; the detections made."""
    dtype = AUTOCAST_DTYPES.get(precision)
    count = 0
    for start in range(0, len(files), batch_size):
        images = []
        for file in files[start : start + batch_size]:
            with Image.open(file) as image:
                array = np.array(image.convert("RGB"))
            images.append(torch.from_numpy(array).permute(2, 0, 1).to(device).float() / 255)
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
        ):
            outputs = model(images)
        for output in outputs:
            masks = (output["masks"][:, 0].float() > 0.5).cpu().numpy()
            mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            output["boxes"].float().cpu(), output["scores"].float().cpu(), output["labels"].cpu()
            count += len(masks)
    return count


def run(
    device: torch.device,
    image_size: int,
    images: int,
    batch_size: int,
    rounds: int,
    workdir: Path,
) -> list[dict[str, Any]]:
    """G2 rows: images/s of predict / the plain loop, per precision (32, and 16 on a GPU)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / "random_r50.ckpt"
    kwargs = write_model(ckpt, image_size, workdir)
    files = write_images(workdir / "images", images, image_size)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    num_classes = len(state["hyper_parameters"]["categories"]["names"]) + 1
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
    )
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    model.to(device).eval()
    sync = synchronizer(device)
    rows = []
    for precision in ("32", "16") if device.type == "cuda" else ("32",):
        chosen = resolve_precision(precision, device.type)
        cfg = compose_config(
            [
                f"model_path={ckpt}",
                f"input={workdir / 'images'}",
                f"output={workdir / 'predicted'}",
                "draw=false",
                "evaluation.score_threshold=0.0",
                f"device={device.type}",
                f"precision={precision}",
                f"batch_size={batch_size}",
            ],
            config_name="predict",
        )
        detections: dict[str, int] = {}

        def ours(cfg=cfg, detections=detections) -> None:
            with quiet():
                summary = predict(cfg)
            sync()
            detections["mrcnn"] = summary.num_detections

        def theirs(chosen=chosen, detections=detections) -> None:
            detections["plain"] = plain_predict(model, files, batch_size, device, chosen)
            sync()

        times = alternate({"mrcnn": ours, "plain": theirs}, rounds)
        row = make_row(
            "G2",
            f"predict {precision} (ran {chosen}) / plain eval loop, RLE kept, drawing off",
            images / median(times["mrcnn"]),
            images / median(times["plain"]),
            "images/s",
            TARGET,
            higher_is_better=True,
            threads=torch.get_num_threads(),
            notes=(
                f"{device.type}, {images} images of {image_size} px, batch {batch_size}, "
                f"R50-FPN, {detections['mrcnn']} / {detections['plain']} detections; s per "
                f"pass mrcnn {spread(times['mrcnn'])}, plain {spread(times['plain'])}"
            ),
        )
        rows.append(row | {"device": device.type, "precision": chosen})
    model.to("cpu")
    return rows
