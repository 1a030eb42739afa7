"""Test-time augmentation: what it changes in AP and what it costs, against no TTA, on the same
model and validation split in the same process (one after the other, so the load is similar).

Each variant is ``mrcnn evaluate model=FILE tta=...`` (in-process, the thresholds not stored):
box, mask and Boundary AP, and the wall time of the whole evaluation (prediction dominates) with
the load average before and after. The machine may be shared: compare the variants of one run,
not runs of different days.

    python -m benchmarks.tta --model RUN_DIR/checkpoints/last.ckpt           # the default data
    python -m benchmarks.tta --model FILE --data data=pennfudan               # a real data set
    python -m benchmarks.tta --quick        # trains a 4-step model first, 4 images (~2 min)

Rows go to ``benchmarks/results/tta.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "none": "false",
    "flip": "true",
    "flip_scales": "[identity,hflip,0.8,1.2]",
}
# A 4-step model of the synthetic shapes, for --quick (what tests/tiny.py trains, by hand).
QUICK_RUN = [
    "trainer.max_steps=4",
    "trainer.limit_val_batches=0",
    "data.train.num_images=8",
    "data.val.num_images=4",
    "data.num_workers=0",
    "trainer.precision=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def quick_checkpoint(work_dir: Path) -> Path:
    """A real but barely trained checkpoint (``mrcnn train``, 4 steps), for the smoke runs."""
    run_dir = work_dir / "quick_model"
    command = [sys.executable, "-m", "mrcnn.train", f"hydra.run.dir={run_dir}", *QUICK_RUN]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return run_dir / "checkpoints" / "last.ckpt"


def measure(model: Path, data: list[str], variant: str, output: Path) -> dict[str, Any]:
    from mrcnn.config import compose_config
    from mrcnn.evaluate import evaluate

    overrides = [f"model_path={model}", f"output={output}", "store_calibration=false", *data]
    cfg = compose_config([*overrides, f"tta={VARIANTS[variant]}"], config_name="evaluate")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    metrics = evaluate(cfg)
    wall = time.perf_counter() - start
    return {
        "variant": variant,
        "tta": VARIANTS[variant],
        **{k: round(metrics.get(k, -1), 4) for k in ("bbox_AP", "segm_AP", "boundary_AP")},
        "wall_s": round(wall, 2),
        "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| tta | bbox AP | segm AP | boundary AP | wall s | x time | load before / after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['tta']}` | {r['bbox_AP']:.3f} | {r['segm_AP']:.3f} | {r['boundary_AP']:.3f} "
            f"| {r['wall_s']} | {r['wall_s'] / base['wall_s']:.2f} | "
            f"{r['load_before_after'][0]} / {r['load_before_after'][1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tta", description=__doc__)
    parser.add_argument("--model", type=Path, help="a checkpoint (scales need one) or export")
    parser.add_argument("--data", nargs="*", default=[], help="evaluate overrides: the data")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="a 4-step model on 4 images")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mrcnn-bench-tta"))
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "tta.json")
    args = parser.parse_args(argv)
    logging.getLogger("mrcnn").setLevel(logging.WARNING)
    if args.quick:
        args.model = quick_checkpoint(args.work_dir)
        args.data = [*args.data, "data.val.num_images=4"]
    if args.model is None:
        parser.error("give --model FILE (or --quick)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        measure(args.model, args.data, variant, args.work_dir / f"{variant}.json")
        for variant in args.variants
    ]
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": str(args.model), "data": args.data, "machine": machine()}
    args.json.write_text(json.dumps({**record, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
