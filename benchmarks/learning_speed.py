"""Learning speed on CPU: what the default ``python -m mrcnn.train`` reaches, and how fast.

The built-in synthetic set is what a newcomer trains first, from random initialisation. This
runs the default command as a user would (a subprocess, nothing overridden but the output
folder and the progress bar), measures its wall time from start to exit, and reads the
validation mask AP curve back from its TensorBoard events. Targets (issue "Benchmarks"): segm
AP50 >= 0.9 and segm AP >= 0.8 within 10 minutes on a 2-core CPU, and at least the AP per
minute of a hand-written torchvision loop measured on a similar shapes set (segm AP 0.83 in
19 minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.common import main_for, make_row

BUDGET_S = 600.0
TARGET_AP50 = 0.9
TARGET_AP = 0.8
# A hand-written torchvision loop on a similar shapes set: segm AP 0.83 after 19 minutes.
REFERENCE_AP_PER_MINUTE = 0.83 / 19
QUICK = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.train.num_images=8",
    "data.val.num_images=4",
    "data.image_size=96",
    "data.max_image_size=96",
    "data.num_workers=0",
]


def train_and_read_curve(run_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``python -m mrcnn.train`` into ``run_dir``; its wall time and validation curve.

    The curve is ``[step, seconds since the command started, segm AP50, segm AP]`` per
    validation; the result's ``segm_AP``/``segm_AP50`` are the last point's.
    """
    command = [
        sys.executable,
        "-m",
        "mrcnn.train",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    start = time.time()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    wall = time.time() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    ap50 = {e.step: (e.wall_time, e.value) for e in events.Scalars("val/segm_AP50")}
    ap = {e.step: e.value for e in events.Scalars("val/segm_AP")}
    curve = [
        [step, round(wall_time - start, 1), round(value, 4), round(ap[step], 4)]
        for step, (wall_time, value) in sorted(ap50.items())
    ]
    steps = curve[-1][0] + 1  # train() validates the final weights: the last point is the end
    return {
        "wall_s": wall,
        "steps": steps,
        "segm_AP50": curve[-1][2],
        "segm_AP": curve[-1][3],
        "curve": curve,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    overrides = [*(QUICK if args.quick else []), *args.override]
    with tempfile.TemporaryDirectory() as tmp:
        result = train_and_read_curve(Path(tmp) / "run", overrides)
    wall, ap50, ap = result["wall_s"], result["segm_AP50"], result["segm_AP"]
    shown = " ".join(overrides) or "(none)"
    curve = "; ".join(
        f"step {s}: {t:.0f} s AP50 {a50:.3f} AP {a:.3f}" for s, t, a50, a in result["curve"]
    )
    notes = f"overrides: {shown}; {result['steps']} steps; curve: {curve}"
    print("curve (step, seconds, segm AP50, segm AP):")
    for point in result["curve"]:
        print("  ", point)
    return [
        make_row("LS", "default run: wall time / 10 min", wall, BUDGET_S, "s", 1.0, notes=notes),
        make_row(
            "LS",
            "default run: segm AP50 / 0.9",
            ap50,
            TARGET_AP50,
            "AP50",
            1.0,
            higher_is_better=True,
        ),
        make_row(
            "LS", "default run: segm AP / 0.8", ap, TARGET_AP, "AP", 1.0, higher_is_better=True
        ),
        make_row(
            "LS",
            "segm AP per minute / hand-written loop (0.83 in 19 min)",
            ap / (wall / 60),
            REFERENCE_AP_PER_MINUTE,
            "AP/min",
            1.0,
            higher_is_better=True,
        ),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the run (repeatable), e.g. --override trainer.max_steps=600",
    )


main = main_for("learning_speed", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
