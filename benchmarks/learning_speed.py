"""Learning speed on CPU: the default ``python -m mrcnn.train`` against a plain torchvision loop.

The built-in synthetic set is what a newcomer trains first, from random initialisation. This
runs the default command as a user would (a subprocess, nothing overridden but the output
folder), times it from start to exit and reads its validation mask AP curve back from its
TensorBoard events. Then, one after the other (never at the same time), a plain torchvision
loop trains on the same ShapesDataset images for the same wall-clock budget, as a user writing
one would: ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)`` at the
same image size, SGD lr 0.02, momentum 0.9, weight decay 1e-4, 100 warm-up steps, gradient
clipping at 10, batches of 4. Its clock stops while it is evaluated.

Reported: segm AP of both at 2.5, 5 and 10 minutes (mrcnn: its last validation by then,
start-up included) and their ratios (target >= 3 at each point), and the default run's wall
time and final AP against the targets (<= 10 minutes, segm AP >= 0.8, AP50 >= 0.9).
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

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.transforms.v2 import functional as F

from benchmarks.common import main_for, make_row
from mrcnn.config import compose_config
from mrcnn.data.datamodule import collate
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.evaluation.evaluator import CocoEvaluator
from mrcnn.evaluation.ground_truth import ground_truth_for

BUDGET_S = 600.0
POINTS = (0.25, 0.5, 1.0)  # fractions of the budget: 2.5, 5 and 10 minutes
TARGET_AP50 = 0.9
TARGET_AP = 0.8
TARGET_RATIO = 3.0
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
    command = [sys.executable, "-m", "mrcnn.train", f"hydra.run.dir={run_dir}", *overrides]
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
    return {"wall_s": wall, **read_curve(run_dir, start)}


def read_curve(run_dir: Path, start: float) -> dict[str, Any]:
    """A finished run's validation curve from its TensorBoard events; seconds from ``start``."""
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
        "steps": steps,
        "segm_AP50": curve[-1][2],
        "segm_AP": curve[-1][3],
        "curve": curve,
    }


def ap_at(curve: list[list[float]], seconds: float) -> float:
    """segm AP of the last validation finished within ``seconds`` (0 before the first)."""
    done = [point[3] for point in curve if point[1] <= seconds]
    return done[-1] if done else 0.0


def plain_loop(overrides: Sequence[str], budget_s: float) -> list[list[float]]:
    """A plain torchvision training loop on the default run's ShapesDataset images.

    Trains for ``budget_s`` seconds of its own wall time (data, forward, backward, step),
    evaluating segm AP on the default validation set at each fraction in ``POINTS``. Returns
    ``[step, training seconds, segm AP50, segm AP]`` per evaluation.
    """
    cfg = compose_config(list(overrides))
    size, batch_size = int(cfg.data.image_size), int(cfg.data.batch_size)
    settings = {
        key: value for key, value in cfg.data.train.items() if key not in ("_target_", "seed")
    }
    train = ShapesDataset(**{**settings, "seed": cfg.data.train.seed})
    val_settings = {k: v for k, v in cfg.data.val.items() if k != "_target_"}
    val = ShapesDataset(**val_settings)
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=size, max_size=size
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, 0.001 + step / 100 * (1 - 0.001))
    )
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate)
    evaluator = CocoEvaluator(ground_truth_for(val), train.categories)

    def evaluate() -> tuple[float, float]:
        model.eval()
        evaluator.reset()
        with torch.inference_mode():
            for index in range(0, len(val), batch_size):
                samples = [val[i] for i in range(index, min(index + batch_size, len(val)))]
                images = [F.to_dtype(image, torch.float32, scale=True) for image, _ in samples]
                evaluator.update(model(images), [target["image_id"] for _, target in samples])
        model.train()
        metrics = evaluator.compute()
        return metrics["segm_AP50"], metrics["segm_AP"]

    curve: list[list[float]] = []
    marks = [fraction * budget_s for fraction in POINTS]
    trained, step = 0.0, 0
    model.train()
    while marks:
        start = time.perf_counter()
        for images, targets in loader:
            images = [F.to_dtype(image, torch.float32, scale=True) for image in images]
            targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            warmup.step()
            step += 1
            if trained + time.perf_counter() - start >= marks[0]:
                break
        trained += time.perf_counter() - start
        while marks and trained >= marks[0]:
            marks.pop(0)
            ap50, ap = evaluate()
            curve.append([step, round(trained, 1), round(ap50, 4), round(ap, 4)])
            print(f"plain loop: step {step}, {trained:.0f} s, segm AP50 {ap50:.3f} AP {ap:.3f}")
    return curve


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    overrides = [*(QUICK if args.quick else []), *args.override]
    budget = 10.0 if args.quick else args.budget
    if args.run_dir is not None:
        result = train_and_read_curve(args.run_dir.resolve(), overrides)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = train_and_read_curve(Path(tmp) / "run", overrides)
    print("mrcnn curve (step, seconds, segm AP50, segm AP):")
    for point in result["curve"]:
        print("  ", point)
    plain = plain_loop(overrides, budget)
    wall, ap50, ap = result["wall_s"], result["segm_AP50"], result["segm_AP"]
    shown = " ".join(overrides) or "(none)"
    curve = "; ".join(
        f"step {s}: {t:.0f} s AP50 {a50:.3f} AP {a:.3f}" for s, t, a50, a in result["curve"]
    )
    plain_curve = "; ".join(
        f"step {s}: {t:.0f} s AP50 {a50:.3f} AP {a:.3f}" for s, t, a50, a in plain
    )
    rows = [
        make_row(
            "LS",
            "default run: wall time / 10 min",
            wall,
            BUDGET_S,
            "s",
            1.0,
            notes=f"overrides: {shown}; {result['steps']} steps; curve: {curve}",
        ),
        make_row("LS", "default run: segm AP50 / 0.9", ap50, TARGET_AP50, "AP50", 1.0, True),
        make_row("LS", "default run: segm AP / 0.8", ap, TARGET_AP, "AP", 1.0, True),
    ]
    for fraction, (step, seconds, _, plain_ap) in zip(POINTS, plain, strict=True):
        mine = ap_at(result["curve"], fraction * budget)
        rows.append(
            make_row(
                "LS",
                f"segm AP at {fraction * budget / 60:g} min: mrcnn / plain torchvision loop",
                mine,
                plain_ap,
                "AP",
                TARGET_RATIO,
                higher_is_better=True,
                # A plain AP of 0 gives no finite ratio; it counts as 0.001.
                ratio=mine / max(plain_ap, 1e-3),
                notes=f"plain loop: {step} steps in {seconds:.0f} s; plain curve: {plain_curve}",
            )
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for both runs (repeatable), e.g. --override seed=1",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep the mrcnn run's folder here (checkpoints, TensorBoard); default: a "
        "temporary folder",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET_S,
        help=f"the plain loop's training seconds (default {BUDGET_S:g}); evaluated at 1/4, "
        "1/2 and all of it",
    )


main = main_for("learning_speed", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
