"""Figure 1, training overhead: mrcnn's Lightning training step / a plain torchvision loop.

Both sides train the same Mask R-CNN (same initial weights, sizes, optimizer, warm-up schedule
and gradient clipping at ``trainer.gradient_clip_val``) on the very same in-memory batches of the
default synthetic run. mrcnn's side is the real thing: ``build_module`` and ``build_trainer`` from
``mrcnn.builders`` with the default callbacks, TensorBoard logger and progress bar (validation off).
The plain side is ``for batch: loss = sum(model(images, targets).values()); backward; clip; step``.

A step is the time between the starts of two consecutive steps (data fetch, forward, backward,
optimizer, logging and callbacks all included). Blocks of steps alternate between the two sides;
the first step of each block is dropped (warm-up).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate

from benchmarks.common import alternate, main_for, make_row, median, quiet, spread
from benchmarks.setups import (
    batch_loader,
    batches_from,
    compose,
    mrcnn_module,
    plain_torchvision_model,
    synthetic_overrides,
)
from mrcnn.builders import build_trainer, plain

TARGET = 1.03


class StepClock(L.Callback):
    """Timestamps at the start of every training batch, and at the end of the last one.

    The last timestamp is the last batch's end, not the end of training: the checkpoint that
    ``save_last`` writes when training ends (0.2-0.3 s, a whole step of the default model) is a
    cost of the run, not of a step, and the plain loop has none."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self._last_end: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, *args: Any) -> None:
        self._last_end = time.perf_counter()

    def on_train_end(self, *args: Any) -> None:
        if self._last_end is not None:
            self.starts.append(self._last_end)


def _step_times(starts: list[float]) -> list[float]:
    """Durations of all but the first step (warm-up)."""
    return [b - a for a, b in itertools.pairwise(starts[1:])]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = 2 if args.quick else args.steps
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            *synthetic_overrides(args.quick),
            "trainer.limit_val_batches=0",
            f"trainer.max_steps={steps + 1}",
            "trainer.accelerator=cpu",
            # torchvision's reference optimizer, which the plain loop can take as it is, and
            # float32 on both sides (precision=auto would pick bf16 on a CPU with bf16 hardware).
            "optimizer=sgd",
            "trainer.precision=32",
            # Both sides use optimizer.lr as given: the batches come without a DataModule,
            # which the per-16-images scaling reads the batch size from.
            "lr_reference_batch=null",
        ]
        cfg = compose(overrides, tmp)
        datamodule, batches = batches_from(cfg, steps + 1)
        module = mrcnn_module(cfg, datamodule)
        model = plain_torchvision_model(cfg, datamodule.categories.num_classes, module.model)
        clip = float(cfg.trainer.gradient_clip_val or 0)

        def lightning_block() -> list[float]:
            clock = StepClock()
            with quiet():
                trainer = build_trainer(cfg)
                trainer.callbacks.append(clock)
                # A long epoch: max_steps stops mid-epoch, as in a real run, so the last timed
                # step does not include the end-of-epoch work (which real runs amortise).
                trainer.fit(module, train_dataloaders=batch_loader(batches, 100 * (steps + 1)))
            return _step_times(clock.starts)

        def plain_block() -> list[float]:
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = instantiate(plain(cfg.optimizer), params=params)
            schedule = plain(cfg.scheduler)
            scheduler = instantiate(schedule, optimizer=optimizer, total_steps=steps + 1)
            starts = []
            for images, targets in batch_loader(batches, steps + 1):
                starts.append(time.perf_counter())
                losses = model(images, targets)
                loss = sum(losses.values())
                optimizer.zero_grad()
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                scheduler.step()
            starts.append(time.perf_counter())
            return _step_times(starts)

        times = alternate({"mrcnn": lightning_block, "plain": plain_block}, rounds, warmup=0)
    size = cfg.data.image_size
    notes = (
        f"{size} px, batch {cfg.data.batch_size}, model=fast, R50-FPN, fp32, clip "
        f"{clip:g}; s/step mrcnn {spread(times['mrcnn'])}, plain {spread(times['plain'])}"
    )
    return [
        make_row(
            1,
            "training step: Lightning / plain torchvision loop",
            median(times["mrcnn"]),
            median(times["plain"]),
            "s/step",
            TARGET,
            threads=torch.get_num_threads(),
            notes=notes,
        )
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per side (default 4)")


main = main_for("training", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
