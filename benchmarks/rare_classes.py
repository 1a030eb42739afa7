"""Rare classes: repeat-factor sampling and copy-paste against the default recipe, at equal steps.

The class-imbalanced shapes set is the default run's shapes set with triangles about 10x rarer
in the training images (``data.train.class_weights=[1,1,0.1]``; every other generator setting
unchanged); the validation set stays the default's balanced one, enlarged to 96 images so that
the rare class has enough instances to score. Each variant is a real ``mrcnn train`` subprocess
with the default recipe (model, optimizer, schedule) shortened to ``--steps`` optimizer steps on
``--images`` training images, the same schedule for every variant, for each seed in ``--seeds``,
run one after the other. Reported per run: the rare class's (triangle) mask AP and AP50, the mean
mask AP, wall time, CPU minutes of the run (user + system of the subprocess) and the load
average. The seeds of a variant run side by side, one thread each (two seeds fill the two
cores); every variant runs the same way, so their CPU minutes compare.

    python -m benchmarks.rare_classes                       # 3 variants x 2 seeds (~30 min)
    python -m benchmarks.rare_classes --variants baseline repeat_factor --seeds 0
    python -m benchmarks.rare_classes --quick               # a smoke run of a few steps

Checkpoints stay in ``--work-dir`` (default ``/tmp/mrcnn-bench-rare``), never in the repository;
the rows go to ``benchmarks/results/rare_classes.json`` (one file per run in ``rare_classes/``,
so runs from separate commands add up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.common import RESULTS_DIR, machine

ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = RESULTS_DIR / "rare_classes"
RARE = "triangle"
IMBALANCED = ["data.train.class_weights=[1,1,0.1]", "data.val.num_images=96"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the default recipe (hflip, random order)", []),
    "repeat_factor": (
        "data.sampler=repeat_factor data.repeat_threshold=0.5 (triangle images ~2x)",
        ["data.sampler=repeat_factor", "data.repeat_threshold=0.5"],
    ),
    "copy_paste": ("data.augment=[hflip,copy_paste]", ["data.augment=[hflip,copy_paste]"]),
}
QUICK = ["data.val.num_images=4", "data.num_workers=0"]


def runs_dir(quick: bool) -> Path:
    """Where each run's row goes: smoke runs apart, so that they never mix with measurements."""
    return RUNS_DIR.with_name("rare_classes_quick") if quick else RUNS_DIR


def start_run(run_dir: Path, overrides: list[str], threads: int = 1) -> subprocess.Popen:
    """One ``mrcnn train`` subprocess (``threads`` torch threads), started and not waited for."""
    command = [sys.executable, "-m", "mrcnn.train", f"hydra.run.dir={run_dir}", *overrides]
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(run_dir / "stderr.log").open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)},
    )


def wait_run(process: subprocess.Popen, run_dir: Path, start: float) -> dict[str, Any]:
    """Wall time and CPU minutes (user + system, its loader workers included) of a run from
    :func:`start_run`; ``os.wait4`` keeps each run's CPU time apart from its neighbour's."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    if process.returncode != 0:
        stderr = (run_dir / "stderr.log").read_text()
        raise RuntimeError(f"{' '.join(process.args)} failed:\n{stderr[-3000:]}")
    return {
        "wall_min": round(wall / 60, 2),
        "cpu_min": round((usage.ru_utime + usage.ru_stime) / 60, 2),
    }


def final_metrics(run_dir: Path) -> dict[str, float]:
    """The last validation's scalars of a run (TensorBoard events)."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag.removeprefix("val/"): events.Scalars(tag)[-1].value
        for tag in events.Tags()["scalars"]
        if tag.startswith("val/")
    }


def overrides_for(variant: str, seed: int, args: argparse.Namespace) -> list[str]:
    steps = 4 if args.quick else args.steps
    return [
        *IMBALANCED,
        f"data.train.num_images={8 if args.quick else args.images}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.precision=32",
        "trainer.enable_progress_bar=false",
        "evaluation.image_panels=0",
        f"seed={seed}",
        *(QUICK if args.quick else []),
        *VARIANTS[variant][1],
    ]


def measure(variant: str, seeds: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The variant's runs, one per seed, side by side (one thread each: the machine's two cores
    run two seeds in the time of one)."""
    runs = {}
    load_before = os.getloadavg()[0]
    for seed in seeds:
        run_dir = args.work_dir / ("quick" if args.quick else "") / f"{variant}_s{seed}"
        if run_dir.exists():  # a rerun: an old run's events would mix into the new run's
            shutil.rmtree(run_dir)
        overrides = overrides_for(variant, seed, args)
        runs[seed] = (run_dir, overrides, start_run(run_dir, overrides, args.threads), time.time())
    rows = []
    for seed, (run_dir, overrides, process, start) in runs.items():
        timing = wait_run(process, run_dir, start)
        metrics = final_metrics(run_dir)
        row = {
            "variant": variant,
            "what": VARIANTS[variant][0],
            "seed": seed,
            "steps": 4 if args.quick else args.steps,
            "rare_segm_AP": round(metrics.get(f"segm_AP/{RARE}", -1), 4),
            "rare_segm_AP50": round(metrics.get(f"segm_AP50/{RARE}", -1), 4),
            "segm_AP": round(metrics.get("segm_AP", -1), 4),
            "per_class_segm_AP": {
                name.split("/", 1)[1]: round(value, 4)
                for name, value in metrics.items()
                if name.startswith("segm_AP/")
            },
            **timing,
            "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "side_by_side": len(seeds),
            "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
            "overrides": overrides,
            "machine": machine(),
        }
        out = runs_dir(args.quick)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{variant}_s{seed}.json").write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps({k: row[k] for k in list(row)[:11]}), flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: each run, then the mean over seeds per variant."""
    lines = [
        "| variant | seed | rare (triangle) segm AP | AP50 | mean segm AP | wall min | CPU min | "
        "load before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['seed']} | {row['rare_segm_AP']:.3f} | "
            f"{row['rare_segm_AP50']:.3f} | {row['segm_AP']:.3f} | {row['wall_min']} | "
            f"{row['cpu_min']} | {row['load_before_after'][0]} / {row['load_before_after'][1]} |"
        )
    for variant in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == variant]
        mean = {k: statistics.mean(r[k] for r in mine) for k in ("rare_segm_AP", "segm_AP")}
        lines.append(
            f"| **{variant}**, mean of {len(mine)} | | **{mean['rare_segm_AP']:.3f}** | | "
            f"**{mean['segm_AP']:.3f}** | | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rare_classes", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mrcnn-bench-rare"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each run (OMP_NUM_THREADS; 1: least contention on a shared CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="a few steps on a few images")
    parser.add_argument(
        "--json", type=Path, default=None, help="default: results/rare_classes.json"
    )
    parser.add_argument(
        "--collect", action="store_true", help="only tabulate the saved runs, train nothing"
    )
    args = parser.parse_args(argv)
    if args.json is None:
        args.json = RESULTS_DIR / ("rare_classes_quick.json" if args.quick else "rare_classes.json")
    if not args.collect:
        for variant in args.variants:
            measure(variant, args.seeds, args)
    rows = [json.loads(path.read_text()) for path in sorted(runs_dir(args.quick).glob("*.json"))]
    order = list(VARIANTS)
    rows.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    print(summary(rows))
    args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
