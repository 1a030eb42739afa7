"""Learning curves of candidate recipes: segm AP against wall-clock minutes on the shapes set.

The default recipe of ``python -m mrcnn.train`` is chosen from these curves. Each candidate is
a real ``python -m mrcnn.train`` run with the candidate's overrides (a subprocess, timed from
start to exit, start-up and validation included), run one after another and never beside each
other; its validation curve is read back from its TensorBoard events. Every candidate runs in
float32 (``trainer.precision=32``): the target is a 2-core CPU without bf16 hardware.

Each candidate's result is written to ``benchmarks/results/curves/<name>.json`` with the
machine and its load average, so candidates measured in separate commands can be compared;
``--plot`` draws every saved candidate into ``docs/images/learning_curves.png`` and prints the
Markdown table of docs/benchmarks.md.

    python -m benchmarks.learning_curves --candidates r18_light64 r18_light128
    python -m benchmarks.learning_curves --plot
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine
from benchmarks.learning_speed import TARGET_AP, TARGET_AP50, train_and_read_curve

CURVES_DIR = RESULTS_DIR / "curves"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "learning_curves.png"
BUDGET_MIN = 10.0

# name -> (what it is, overrides of `python -m mrcnn.train`). Every setting that tells the
# candidates apart is named, so a later change of the defaults does not change a candidate.
R18_LIGHT = {
    "backbone": "resnet18",
    "model": "light",
    "optimizer": "adamw",
    "scheduler": "linear",
    "backbone.returned_layers": "[1,2,3]",
    "model.detector.head_channels": 128,
    "model.detector.box_head_size": 256,
    "model.detector.box_batch_size_per_image": 64,
    "model.detector.roi_sampling_ratio": 2,
    "model.detector.mask_head_convs": 2,
    "optimizer.lr": 0.004,
    "trainer.max_steps": 1200,
    "data.train.num_images": 512,
}
ROI32 = {"model.detector.box_batch_size_per_image": 32, "model.detector.roi_sampling_ratio": 1}
LIGHT64 = {**ROI32, "model.detector.head_channels": 64, "model.detector.box_head_size": 128}


def _overrides(settings: dict[str, object]) -> list[str]:
    return [f"{key}={value}" for key, value in settings.items()]


def _default_recipe_in(steps: int, settings: dict[str, object] | None = None) -> list[str]:
    """The default recipe (``r18_light64_roi32_fresh_mask4``) ending at ``steps``, on as many
    generated images as it sees (batch 4: each seen once), with ``settings`` changed."""
    return _overrides(
        {
            **R18_LIGHT,
            **LIGHT64,
            "model.detector.mask_head_convs": 4,
            "trainer.max_steps": steps,
            "data.train.num_images": 4 * steps,
            **(settings or {}),
        }
    )


CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "r50_small_sgd": (
        "the earlier default: R50 FPN, 64-channel heads without norm (model=small), SGD 0.08/16 "
        "img, multistep, 600 steps",
        _overrides(
            {
                "backbone": "resnet50",
                "model": "small",
                "optimizer": "sgd",
                "scheduler": "multistep",
                "data.train.num_images": 512,
            }
        ),
    ),
    "r18_light128": (
        "R18 layers 1-3, 128-channel BatchNorm heads (model=light), AdamW 0.004/16 img, "
        "linear, 1200 steps",
        _overrides(R18_LIGHT),
    ),
    "r18_light128_roi32": (
        "r18_light128 with 32 RoIs per image (box_batch_size_per_image) and 1 RoIAlign sample "
        "per bin side: a step about 1.8x cheaper; 1500 steps",
        _overrides({**R18_LIGHT, **ROI32, "trainer.max_steps": 1500}),
    ),
    "r18_light64_roi32": (
        "r18_light128_roi32 with 64-channel FPN, RPN and mask head and a 128-wide box head; "
        "2400 steps",
        _overrides({**R18_LIGHT, **LIGHT64, "trainer.max_steps": 2400}),
    ),
    "r18_light64_roi32_3000": (
        "r18_light64_roi32 for 3000 steps on the 512 training images (23 epochs)",
        _overrides({**R18_LIGHT, **LIGHT64, "trainer.max_steps": 3000}),
    ),
    "r18_light64_roi32_fresh": (
        "r18_light64_roi32 for 3000 steps on 12,000 generated training images (each seen once) "
        "instead of 512 (25 epochs); the same validation set",
        _overrides(
            {**R18_LIGHT, **LIGHT64, "trainer.max_steps": 3000, "data.train.num_images": 12000}
        ),
    ),
    "r18_light64_roi32_fresh_mask4": (
        "r18_light64_roi32_fresh with 4 convolutions in the mask head instead of 2 "
        "(torchvision's count): box AP ran 0.08 ahead of mask AP",
        _overrides(
            {
                **R18_LIGHT,
                **LIGHT64,
                "model.detector.mask_head_convs": 4,
                "trainer.max_steps": 3000,
                "data.train.num_images": 12000,
            }
        ),
    ),
    "r18_light64_roi32_fresh_mask4_2000": (
        "the default recipe (r18_light64_roi32_fresh_mask4) in 2000 steps on 8,000 generated "
        "images, the linear schedule ending at step 2000: a third less time",
        _overrides(
            {
                **R18_LIGHT,
                **LIGHT64,
                "model.detector.mask_head_convs": 4,
                "trainer.max_steps": 2000,
                "data.train.num_images": 8000,
            }
        ),
    ),
    "r18_light64_roi32_fresh_mask4_1500": (
        "the default recipe in 1500 steps on 6,000 generated images: half the time",
        _default_recipe_in(1500),
    ),
    "r18_light64_roi32_fresh_mask4_1500_lr2x": (
        "the default recipe in 1500 steps with twice the learning rate (AdamW 0.008 per 16 images)",
        _default_recipe_in(1500, {"optimizer.lr": 0.008}),
    ),
    "r18_light64_roi32_fresh_mask4_1500_lr4x": (
        "the default recipe in 1500 steps with four times the learning rate (AdamW 0.016 per 16 "
        "images)",
        _default_recipe_in(1500, {"optimizer.lr": 0.016}),
    ),
    "r18_light64_roi32_fresh_mask4_2000_lr2x": (
        "the default recipe in 2000 steps on 8,000 generated images with twice the learning rate "
        "(AdamW 0.008 per 16 images)",
        _default_recipe_in(2000, {"optimizer.lr": 0.008}),
    ),
    "r18_light64_roi32_fresh_mask4_1500_ema": (
        "the default recipe in 1500 steps, validated on an average of the weights (EMA, decay "
        "0.995, from the end of the warm-up)",
        [
            *_default_recipe_in(1500),
            "callbacks=[default,ema]",
            "callbacks.ema.decay=0.995",
            "callbacks.ema.update_starting_at_step=75",
        ],
    ),
}


def run_candidate(name: str, extra: list[str]) -> dict[str, Any]:
    """Train one candidate in float32 and save its curve (returned too)."""
    what, overrides = CANDIDATES[name]
    overrides = [*overrides, "trainer.precision=32", "trainer.val_check_interval=300", *extra]
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        result = train_and_read_curve(Path(tmp) / "run", overrides)
    result.update(
        name=name,
        what=what,
        overrides=overrides,
        machine={**machine(), "load_average_before": load_before},
    )
    CURVES_DIR.mkdir(parents=True, exist_ok=True)
    (CURVES_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: {result['steps']} steps in {result['wall_s']:.0f} s; curve "
        "(step, s, segm AP50, segm AP):"
    )
    for point in result["curve"]:
        print("  ", point)
    return result


def saved_curves() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(CURVES_DIR.glob("*.json"))]


def table(results: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md's table: AP at each validation, wall time, machine load."""
    lines = [
        "| candidate | steps | segm AP (AP50) at each validation, minutes since start | "
        "wall time | final segm AP | final AP50 | load avg |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for result in results:
        points = ", ".join(
            f"{ap:.3f} ({ap50:.3f}) at {seconds / 60:.1f}"
            for _step, seconds, ap50, ap in result["curve"]
        )
        load = (
            result["machine"]["load_average_before"][0],
            result["machine"]["load_average_1_5_15"][0],
        )
        lines.append(
            f"| `{result['name']}`: {result['what']} | {result['steps']} | {points} | "
            f"{result['wall_s'] / 60:.1f} min | {result['segm_AP']:.3f} | "
            f"{result['segm_AP50']:.3f} | {load[0]:.2f} / {load[1]:.2f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path = PLOT) -> Path:
    """segm AP and AP50 against minutes since the command started, one line per candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for result in results:
        minutes = [0.0] + [seconds / 60 for _step, seconds, _ap50, _ap in result["curve"]]
        for axis, index in ((axes[0], 3), (axes[1], 2)):
            values = [0.0] + [point[index] for point in result["curve"]]
            axis.plot(minutes, values, marker="o", markersize=3, label=result["name"])
    for axis, title, target in (
        (axes[0], "segm AP", TARGET_AP),
        (axes[1], "segm AP50", TARGET_AP50),
    ):
        axis.axhline(target, color="grey", linestyle="--", linewidth=1)
        axis.axvline(BUDGET_MIN, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{title} on the 64 validation shapes (target {target:g} by 10 min)")
        axis.set_xlabel("minutes since `python -m mrcnn.train` started (float32, 2-core CPU)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning_curves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        choices=sorted(CANDIDATES),
        help="candidates to train, one after another (each about 10 minutes)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra override for every candidate (repeatable)",
    )
    parser.add_argument(
        "--plot",
        action="store_true",
        help=f"draw every saved candidate into {PLOT} and print the table",
    )
    args = parser.parse_args(argv)
    if not args.candidates and not args.plot:
        parser.error("name --candidates to train, or --plot")
    for name in args.candidates:
        run_candidate(name, args.override)
    if args.plot:
        results = saved_curves()
        print(table(results))
        print(f"\nWrote {plot(results)}")


if __name__ == "__main__":
    main()
