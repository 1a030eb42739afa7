"""The CPU levers of "Use the hardware", one at a time: a bare training step of the default
run's model (forward, backward, AdamW step; no Lightning, no loader) with each lever / without.

Candidates, all from the same initial weights on the same in-memory batches, blocks of steps in
alternation (the first step of each block dropped):

- ``torchvision``: torchvision's serial CPU RoIAlign, NCHW weights (what mrcnn ran before);
- ``roi_align``: mrcnn's parallel RoIAlign (:mod:`mrcnn.model.roi_align`), NCHW;
- ``channels_last``: mrcnn's RoIAlign and the weights in channels_last (what
  ``'callbacks=[default,channels_last]'`` does);
- ``fused``: as ``channels_last`` with ``optimizer.fused=true`` (PyTorch's fused AdamW);
- ``compile`` (with ``--compile``): as ``fused`` with the backbone and FPN compiled by
  ``torch.compile`` (Inductor; the RoI heads stay eager). Its first block, which compiles, is
  timed apart and printed;
- ``mkldnn_bf16`` (float32 only): as ``fused`` with oneDNN computing float32 convolutions in
  bf16 (``torch.backends.mkldnn.conv.fp32_precision = "bf16"``), the alternative to autocast:
  weights, activations and the other ops stay float32.

Each runs in float32 and, on a CPU with bf16 hardware, in bf16 autocast (what
``trainer.precision=auto`` picks there). A row is a lever's step time / the ``torchvision``
step of the same precision, so a ratio under 1 is a gain.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import alternate, main_for, make_row, median, spread
from benchmarks.setups import batches_from, compose, mrcnn_module
from mrcnn.model.roi_align import torchvision_poolers
from mrcnn.precision import cpu_has_native_bf16

LEVERS = ("roi_align", "channels_last", "fused")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = 2 if args.quick else args.steps
    rounds = 1 if args.quick else args.rounds
    quick = ["data.image_size=64", "data.max_image_size=64", "data.batch_size=2"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*(quick if args.quick else []), "lr_reference_batch=null"], tmp)
        datamodule, batches = batches_from(cfg, steps + 1)
        model = mrcnn_module(cfg, datamodule).model
    models = {
        "torchvision": torchvision_poolers(copy.deepcopy(model)),
        "roi_align": copy.deepcopy(model),
        "channels_last": copy.deepcopy(model).to(memory_format=torch.channels_last),
        "fused": copy.deepcopy(model).to(memory_format=torch.channels_last),
    }
    levers = LEVERS
    if args.compile:
        models["compile"] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        models["compile"].backbone = torch.compile(models["compile"].backbone)
        levers = (*LEVERS, "compile")
    precisions = ("32", "bf16") if cpu_has_native_bf16() else ("32",)
    rows = []
    for precision in precisions:
        steppers = {
            name: _stepper(
                net, batches, cfg.optimizer, name in ("fused", "compile"), precision == "bf16"
            )
            for name, net in models.items()
        }
        if precision == "32":
            # Its own copy of the fused model: one optimizer per model, as for every lever.
            bf16_convs = copy.deepcopy(models["fused"])
            fused = _stepper(bf16_convs, batches, cfg.optimizer, True, False)
            steppers["mkldnn_bf16"] = _with_bf16_convolutions(fused)
        if args.compile:  # its first block compiles: timed apart
            start = time.perf_counter()
            steppers["compile"]()
            print(f"torch.compile ({precision}): first block {time.perf_counter() - start:.0f} s")
        times = alternate(steppers, rounds, warmup=1)
        base = median(times["torchvision"])
        for lever in (*levers, "mkldnn_bf16") if precision == "32" else levers:
            rows.append(
                make_row(
                    "levers",
                    f"training step with {lever} / torchvision's RoIAlign, NCHW ({precision})",
                    median(times[lever]),
                    base,
                    "s/step",
                    None,
                    threads=torch.get_num_threads(),
                    notes=(
                        f"default run's model, {cfg.data.image_size} px, batch "
                        f"{cfg.data.batch_size}; s/step {lever} {spread(times[lever])}, "
                        f"torchvision {spread(times['torchvision'])}"
                    ),
                )
            )
    return rows


def _stepper(
    model: torch.nn.Module, batches: list, optimizer_cfg: Any, fused: bool, bf16: bool
) -> Callable[[], list[float]]:
    """A block of training steps of ``model`` over ``batches``, returning each step's time."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=float(optimizer_cfg.lr),
        weight_decay=float(optimizer_cfg.weight_decay),
        fused=fused or None,
    )

    def block() -> list[float]:
        starts = []
        for images, targets in batches:
            starts.append(time.perf_counter())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses = model(images, targets)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
        starts.append(time.perf_counter())
        return [b - a for a, b in itertools.pairwise(starts)][1:]

    return block


def _with_bf16_convolutions(block: Callable[[], list[float]]) -> Callable[[], list[float]]:
    """``block`` run with oneDNN's float32 convolutions computed in bf16, then set back."""

    def run_block() -> list[float]:
        conv = torch.backends.mkldnn.conv
        previous, conv.fp32_precision = conv.fp32_precision, "bf16"
        try:
            return block()
        finally:
            conv.fp32_precision = previous

    return run_block


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=6, help="timed steps per block (default 6)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per lever (default 4)")
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile the backbone and FPN"
    )


main = main_for("cpu_levers", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
