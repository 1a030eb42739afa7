"""Figure 1b, using the hardware: a training step of the default model in mrcnn / the same model
in a plain float32 eager loop with torchvision's operators.

mrcnn's side is the real default run (``build_module`` and ``build_trainer``: Lightning, the
default callbacks and logger, ``trainer.precision=auto``, mrcnn's parallel CPU RoIAlign, the
config's optimizer), on the default run's in-memory batches, validation off. The plain side is
the same model, from the same initial weights, with torchvision's ``MultiScaleRoIAlign``,
contiguous (NCHW) weights, float32 and ``torch.optim.AdamW`` as torch configures it by default:
``for batch: loss = sum(model(images, targets).values()); backward; clip; step``. A second row
pins mrcnn to float32 (what a CPU without bf16 hardware runs).

Blocks of steps alternate between the sides; the first step of each block is dropped.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import batch_loader, batches_from, compose, mrcnn_module
from benchmarks.training import StepClock, _step_times
from mrcnn.builders import build_trainer
from mrcnn.model.roi_align import torchvision_poolers
from mrcnn.model.schedule import warmup_schedule
from mrcnn.precision import cpu_has_native_bf16

TARGETS = {"auto": 0.5, "32": 0.8}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    # Without bf16 hardware auto is float32: the second row is then the one that applies.
    precisions = ("auto", "32") if cpu_has_native_bf16() else ("32",)
    return [_row(args, precision) for precision in precisions]


def _row(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    steps = 2 if args.quick else args.steps
    rounds = 2 if args.quick else args.rounds
    quick = ["data.image_size=64", "data.max_image_size=64", "data.batch_size=2"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            *(quick if args.quick else []),
            "trainer.limit_val_batches=0",
            f"trainer.max_steps={steps + 1}",
            "trainer.accelerator=cpu",
            f"trainer.precision={precision}",
            "lr_reference_batch=null",  # no DataModule here to read the batch size from
        ]
        cfg = compose(overrides, tmp)
        datamodule, batches = batches_from(cfg, steps + 1)
        module = mrcnn_module(cfg, datamodule)
        plain = torchvision_poolers(copy.deepcopy(module.model))
        plain = plain.to(memory_format=torch.contiguous_format)
        clip = float(cfg.trainer.gradient_clip_val or 0)

        def mrcnn_block() -> list[float]:
            clock = StepClock()
            with quiet():
                trainer = build_trainer(cfg, module=module)
                trainer.callbacks.append(clock)
                trainer.fit(module, train_dataloaders=batch_loader(batches, 100 * (steps + 1)))
            return _step_times(clock.starts)

        def plain_block() -> list[float]:
            plain.train()
            params = [p for p in plain.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(
                params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
            )
            scheduler = warmup_schedule(optimizer, steps + 1, warmup_steps=0)
            starts = []
            for images, targets in batch_loader(batches, steps + 1):
                starts.append(time.perf_counter())
                loss = sum(plain(images, targets).values())
                optimizer.zero_grad()
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                scheduler.step()
            starts.append(time.perf_counter())
            return _step_times(starts)

        times = alternate({"mrcnn": mrcnn_block, "plain": plain_block}, rounds, warmup=0)
    notes = (
        f"default model, {cfg.data.image_size} px, batch {cfg.data.batch_size}; mrcnn "
        f"trainer.precision={precision}; s/step mrcnn {spread(times['mrcnn'])}, plain "
        f"float32 {spread(times['plain'])}"
    )
    return make_row(
        "1b",
        f"training step, mrcnn (precision={precision}) / plain float32 loop",
        median(times["mrcnn"]),
        median(times["plain"]),
        "s/step",
        TARGETS[precision],
        threads=torch.get_num_threads(),
        notes=notes,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=6, help="timed steps per block (default 6)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per side (default 4)")


main = main_for("hardware", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
