"""Figure 7, mixed precision on CPU: bf16 autocast step time / float32, and the AP each reaches.

Whether bf16 pays on a CPU depends on the CPU. With bf16 hardware (AVX512-BF16 or AMX) bf16
autocast trains faster than float32; without it (AVX2 only) oneDNN emulates bf16 and every
convolution is many times slower. ``trainer.precision=16`` on a CPU follows this figure:
:func:`mrcnn.precision.cpu_has_native_bf16` picks bf16 autocast or float32.

It times training steps of the default run's model on the same batches, blocks of float32 and
of bf16 autocast (what Lightning's ``bf16-mixed`` does) in alternation. What AP each precision
reaches in the same time follows from this ratio and the default run's AP curve
(``benchmarks.learning_speed``): bf16 gets through 1/ratio of float32's steps.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, spread
from benchmarks.setups import batches_from, compose, mrcnn_module
from mrcnn.precision import cpu_has_native_bf16


def _step_time_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = 1 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        # The default run's own settings (128 px, model=small): the figure decides its precision.
        quick = ["data.image_size=64", "data.max_image_size=64", "data.batch_size=2"]
        cfg = compose([*(quick if args.quick else []), "trainer.accelerator=cpu"], tmp)
        datamodule, batches = batches_from(cfg, steps)
        model = mrcnn_module(cfg, datamodule).model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def block(bf16: bool) -> list[float]:
        starts = []
        for images, targets in batches:
            starts.append(time.perf_counter())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        starts.append(time.perf_counter())
        return [b - a for a, b in itertools.pairwise(starts)]

    times = alternate(
        {"fp32": lambda: block(False), "bf16": lambda: block(True)}, args.rounds, warmup=1
    )
    native = cpu_has_native_bf16()
    notes = (
        f"{cfg.data.image_size} px, batch {cfg.data.batch_size}, default run's model "
        f"(head_channels {cfg.model.detector.get('head_channels', 256)}); bf16 hardware: "
        f"{'yes' if native else 'no (emulated)'}; s/step fp32 {spread(times['fp32'])}, "
        f"bf16 {spread(times['bf16'])}"
    )
    return [
        make_row(
            7,
            "training step: bf16 autocast / float32 (CPU)",
            median(times["bf16"]),
            median(times["fp32"]),
            "s/step",
            None,
            threads=torch.get_num_threads(),
            notes=notes,
        )
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    return _step_time_rows(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per side (default 2)")


main = main_for("precision", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
