"""One prepared script for the first GPU: ``python -m benchmarks.gpu`` (``--tiny`` on a CPU).

Runs, in order, each section timed and none stopping the others:

- ``training`` (G1, :mod:`benchmarks.gpu_training`): R50-FPN training images/s at 800 px,
  batch 8, in 16-mixed and bf16-mixed, with and without channels-last, mrcnn against a plain
  torchvision loop, and peak GPU memory;
- ``predict`` (G2, :mod:`benchmarks.gpu_inference`): ``mrcnn predict`` images/s against a plain
  eval loop;
- ``commands`` (G3 and the checks, :mod:`benchmarks.gpu_commands`): ``mrcnn train trainer=gpu``
  end to end, its resume, ``mrcnn evaluate`` on the GPU and the CPU, ``mrcnn export`` to ONNX
  read by ONNX Runtime on the CPU, ``trainer=ddp trainer.devices=1``.

It prints the rows as the Markdown table of docs/benchmarks.md and the checks, and writes both,
with the machine and its GPU, to one JSON (``benchmarks/results/gpu.json``; ``gpu_tiny.json``
with ``--tiny``). It exits 1 when a check failed or a section raised (targets missed are
reported, not failures). Sized to stay under 8 minutes on one H100 (not yet run on one);
``--tiny`` (64 px, batch 2, a step or two, the CPU) took 8-14 minutes on a busy 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import gpu_commands, gpu_inference, gpu_training
from benchmarks.common import RESULTS_DIR, check_rows, format_table, machine, setup

SECTIONS = ("training", "predict", "commands")


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run of the script: full (a GPU) or ``--tiny`` (a CPU)."""

    image_size: int
    batch_size: int
    steps: int
    warmup: int
    rounds: int
    batches_in_memory: int
    predict_images: int
    predict_batch: int
    commands: gpu_commands.Plan


FULL = Sizes(
    image_size=800,
    batch_size=8,
    steps=20,
    warmup=3,
    rounds=2,
    batches_in_memory=4,
    predict_images=32,
    predict_batch=8,
    commands=gpu_commands.FULL,
)
# The smallest run that still takes every path (both precisions and layouts, both sides, every
# command): on a busy 2-core CPU an R50-FPN step at 128 px took 17-30 s in bf16.
TINY = Sizes(
    image_size=64,
    batch_size=2,
    steps=1,
    warmup=1,
    rounds=1,
    batches_in_memory=1,
    predict_images=2,
    predict_batch=2,
    commands=gpu_commands.TINY,
)


def gpu_info() -> dict[str, Any]:
    """The GPU the numbers come from (empty without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    index = torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    info: dict[str, Any] = {
        "name": properties.name,
        "capability": list(torch.cuda.get_device_capability(index)),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["driver"] = driver.stdout.strip().splitlines()[0] if driver.stdout else None
    except (OSError, subprocess.SubprocessError):
        info["driver"] = None
    return info


def format_checks(checks: list[dict[str, Any]]) -> str:
    """The checks as a Markdown table."""
    lines = ["| check | ok | s | detail |", "|---|---|---:|---|"]
    for check in checks:
        detail = check["detail"].replace("\n", " ").replace("|", "/")
        ok = "yes" if check["ok"] else "**no**"
        lines.append(f"| {check['name']} | {ok} | {check['seconds']:.1f} | {detail} |")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="64 px, batch 2, a step or two: the whole script in minutes, on a CPU if no GPU",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the runs, checkpoints and logs here (default: a temporary folder)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if not args.tiny and not torch.cuda.is_available():
        print(
            "python -m benchmarks.gpu: error: no CUDA GPU visible to torch "
            f"{torch.__version__}. Run it with --tiny to check the script on a CPU.",
            file=sys.stderr,
        )
        return 2
    sizes = TINY if args.tiny else FULL
    path = args.json or RESULTS_DIR / ("gpu_tiny.json" if args.tiny else "gpu.json")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setup(argparse.Namespace(threads=args.threads or torch.get_num_threads()))
    started = time.perf_counter()
    command = " ".join(["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)])
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mrcnn-gpu-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        for section in args.only or SECTIONS:
            begin = time.perf_counter()
            try:
                if section == "training":
                    rows += gpu_training.run(
                        device,
                        sizes.image_size,
                        sizes.batch_size,
                        sizes.steps,
                        sizes.warmup,
                        sizes.rounds,
                        sizes.batches_in_memory,
                        workdir / "training",
                    )
                elif section == "predict":
                    rows += gpu_inference.run(
                        device,
                        sizes.image_size,
                        sizes.predict_images,
                        sizes.predict_batch,
                        sizes.rounds,
                        workdir / "predict",
                    )
                else:
                    found_rows, found = gpu_commands.run(
                        device, sizes.commands, workdir / "commands"
                    )
                    rows += found_rows
                    checks += [check.as_dict() for check in found]
            except Exception as error:  # one section's failure is reported; the others run
                checks.append(
                    gpu_commands.Check(
                        f"section {section} ran",
                        False,
                        time.perf_counter() - begin,
                        f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=-4)}",
                    ).as_dict()
                )
            seconds[section] = round(time.perf_counter() - begin, 1)
            print(f"[{section}] {seconds[section]:.0f} s", flush=True)
            payload = {
                "command": command,
                "tiny": args.tiny,
                "machine": machine() | {"gpu": gpu_info(), "device": device.type},
                "seconds": seconds | {"total": round(time.perf_counter() - started, 1)},
                "rows": rows,
                "checks": checks,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload, indent=2) + "\n")  # partial results survive
    check_rows(rows)
    print(format_table(rows))
    print()
    print(format_checks(checks))
    print(f"\n{time.perf_counter() - started:.0f} s in all; wrote {path}")
    return 0 if all(check["ok"] for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
