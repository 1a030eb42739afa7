"""Figure 7, mixed precision on CPU: bf16 autocast step time / float32, and the AP each reaches.

Whether bf16 pays on a CPU depends on the CPU. With bf16 hardware (AVX512-BF16 or AMX) bf16
autocast trains faster than float32; without it (AVX2 only) oneDNN emulates bf16 and every
convolution is many times slower. ``trainer.precision=16`` on a CPU follows this figure:
:func:`mrcnn.precision.cpu_has_native_bf16` picks bf16 autocast or float32.

Part 1 times training steps of the same model on the same batches, blocks of float32 and of
bf16 autocast (what Lightning's ``bf16-mixed`` does) in alternation. Part 2 (``--ap-budget``
seconds, 0 skips it) trains two real ``python -m mrcnn.train`` runs on the synthetic set, one per
precision, each stopped by the same wall-clock budget (``trainer.max_time``), and reports the
mask AP each reached.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, spread
from benchmarks.learning_speed import train_and_read_curve
from benchmarks.setups import batches_from, compose, mrcnn_module, synthetic_overrides
from mrcnn.precision import cpu_has_native_bf16


def _step_time_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = 1 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*synthetic_overrides(args.quick), "trainer.accelerator=cpu"], tmp)
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
        f"{cfg.data.image_size} px, batch {cfg.data.batch_size}, model=fast; bf16 hardware: "
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


def _ap_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    budget = int(args.ap_budget)
    reached = {}
    for precision in ("32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            run = train_and_read_curve(
                Path(tmp),
                [
                    f"trainer.precision={precision}",
                    f"+trainer.max_time={{seconds: {budget}}}",
                ],
            )
        reached[precision] = run
    fp32, bf16 = reached["32"], reached["bf16"]
    notes = (
        f"same wall-clock budget {budget} s each (trainer.max_time), default synthetic run; "
        f"steps done: fp32 {fp32['steps']}, bf16 {bf16['steps']}"
    )
    return [
        make_row(
            7,
            f"segm AP after {budget} s: bf16 / float32",
            bf16["segm_AP"],
            fp32["segm_AP"],
            "AP",
            None,
            higher_is_better=True,
            notes=notes,
            ratio=bf16["segm_AP"] / fp32["segm_AP"] if fp32["segm_AP"] > 0 else float("nan"),
        )
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = _step_time_rows(args)
    if args.ap_budget > 0 and not args.quick:
        rows += _ap_rows(args)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per side (default 2)")
    parser.add_argument(
        "--ap-budget",
        type=float,
        default=0,
        help="seconds of training per precision for the AP comparison (default 0: skipped)",
    )


main = main_for("precision", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
