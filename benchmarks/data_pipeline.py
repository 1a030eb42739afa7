"""Figure 3, data pipeline: images/s the DataModule delivers / images/s the R50 model trains at.

The DataModule is built from the ``data=pennfudan`` and ``data=coco128`` configs as they are
(default worker count, augmentation, sizes); its training loader is read to the end of
``--images`` images (decode, targets, augmentation, collate), timed from the first batch on so
that starting the workers is left out. The training rate is a plain forward, backward and SGD
step of the default model (``backbone=resnet50``, ``model=fast``) on batches of that loader.
Reading and training alternate; the ratio says how far ahead of the model the data stays.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch
from hydra.utils import instantiate

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import mrcnn_module
from mrcnn.config import compose_config

TARGET = 5.0
DATA_SETS = ("pennfudan", "coco128")


def _measure(name: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    overrides = [f"data={name}"]
    if args.quick:
        overrides += ["data.image_size=256", "data.max_image_size=384"]
    cfg = compose_config(overrides, output_dir=tmp)
    datamodule = instantiate(cfg.data)
    with quiet():
        datamodule.setup("fit")
    model = mrcnn_module(cfg, datamodule).model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    wanted = 8 if args.quick else args.images
    train_batches: list = []

    def read() -> list[float]:
        loader = datamodule.train_dataloader()
        count, start = 0, None
        for images, targets in loader:
            if start is None:  # workers started and the first batch is in
                start = time.perf_counter()
            else:
                count += len(images)
            if len(train_batches) < (1 if args.quick else 2):
                train_batches.append((images, targets))
            if count >= wanted:
                break
        elapsed = time.perf_counter() - start
        del loader  # stops the workers before training is timed
        return [elapsed / count]

    def train() -> list[float]:
        times = []
        for images, targets in train_batches:
            start = time.perf_counter()
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append((time.perf_counter() - start) / len(images))
        return times

    read()  # fills train_batches, warms the caches
    train()  # warm-up step
    times = alternate({"data": read, "train": train}, 1 if args.quick else args.rounds, warmup=0)
    data_rate, train_rate = 1 / median(times["data"]), 1 / median(times["train"])
    notes = (
        f"{cfg.data.num_workers} workers, batch {cfg.data.batch_size}, augment "
        f"{cfg.data.augment}, {cfg.data.image_size}/{cfg.data.max_image_size} px, {wanted} images "
        f"per read; s/image data {spread(times['data'])}, train {spread(times['train'])}"
    )
    return make_row(
        3,
        f"data pipeline ({name}) / R50 training",
        data_rate,
        train_rate,
        "images/s",
        TARGET,
        higher_is_better=True,
        threads=torch.get_num_threads(),
        notes=notes,
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [_measure(name, args, tmp) for name in args.data]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=48, help="images per read (default 48)")
    parser.add_argument("--rounds", type=int, default=2, help="reads and steps per side (2)")
    parser.add_argument("--data", nargs="+", default=list(DATA_SETS), choices=DATA_SETS)


main = main_for("data_pipeline", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
