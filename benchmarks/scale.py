"""Figure 6, scale: a COCO-train2017-sized annotation file, CocoDataset / pycocotools ``COCO()``.

On a generated annotation file the size of COCO train2017 (``--images 118287``, 7.3 polygon
instances per image: 860k instances; written once under /tmp/mrcnn-bench-coco, never in the
repository):

- start-up time: ``mrcnn.data.CocoDataset(images, json)`` / ``pycocotools.coco.COCO(json)``;
- start-up memory: the peak resident memory each adds over the process before it starts
  (``ru_maxrss`` minus the resident memory after imports), and what stays resident after;
- dataloader workers: the resident (RSS) and private (USS) memory of each worker of the
  DataModule's training loader (2 workers, shuffled) after 2,000 items / after 100: growth means
  copy-on-read of Python objects. The mean over the workers is the ratio (one worker's private
  memory moves by a few MiB either way with the allocator); each worker is listed in the notes.

Each measurement runs in its own fresh subprocess (so none inherits another's memory), and the
two start-ups alternate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.coco_gen import CACHE_DIR, annotation_file
from benchmarks.common import main_for, make_row, median, spread

COCO_TRAIN_IMAGES = 118_287
TARGET_TIME, TARGET_MEMORY, TARGET_WORKER = 1.2, 1.5, 1.05

STARTUP = r"""
import contextlib, gc, io, json, resource, sys, time
import psutil
kind, path, images, threads = sys.argv[1:5]
if kind == "pycocotools":
    from pycocotools.coco import COCO
else:
    import torch
    torch.set_num_threads(int(threads))
    from mrcnn.data.coco import CocoDataset
gc.collect()
process = psutil.Process()
before = process.memory_info().rss
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    loaded = COCO(path) if kind == "pycocotools" else CocoDataset(images, path)
elapsed = time.perf_counter() - start
gc.collect()
after = process.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": elapsed, "peak_added": peak - before, "kept": after - before}))
"""

WORKERS = r"""
import json, sys
import psutil, torch
path, images, threads, first, last = sys.argv[1:6]
torch.set_num_threads(int(threads))
from mrcnn.data import CocoDataset, DetectionDataModule
datamodule = DetectionDataModule(CocoDataset(images, path), batch_size=2, num_workers=2)
loader = iter(datamodule.train_dataloader())
marks, seen = {}, 0
for images_, _ in loader:
    seen += len(images_)
    for mark in (int(first), int(last)):
        if mark not in marks and seen >= mark:
            marks[mark] = [
                (p.memory_info().rss, p.memory_full_info().uss)
                for p in (psutil.Process(w.pid) for w in loader._workers)
            ]
    if seen >= int(last):
        break
print(json.dumps({str(k): v for k, v in marks.items()}))
"""


def _child(code: str, *argv: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = 2000 if args.quick else args.images
    rounds = 1 if args.quick else args.rounds
    path = annotation_file(size)
    images = CACHE_DIR / "images"
    threads = torch.get_num_threads()
    runs: dict[str, list[dict]] = {"mrcnn": [], "pycocotools": []}
    for _ in range(rounds):
        for kind in runs:
            runs[kind].append(_child(STARTUP, kind, path, images, threads))

    def med(kind: str, key: str) -> float:
        return median([r[key] for r in runs[kind]])

    mib = 2**20
    described = f"{size} images, {path.stat().st_size / mib:.0f} MiB json, {rounds} run(s) each"
    rows = [
        make_row(
            6,
            "start-up time: CocoDataset / COCO()",
            med("mrcnn", "seconds"),
            med("pycocotools", "seconds"),
            "s",
            TARGET_TIME,
            threads=threads,
            notes=f"{described}; s mrcnn {spread([r['seconds'] for r in runs['mrcnn']])}, "
            f"pycocotools {spread([r['seconds'] for r in runs['pycocotools']])}",
        ),
        make_row(
            6,
            "start-up peak memory: CocoDataset / COCO()",
            med("mrcnn", "peak_added") / mib,
            med("pycocotools", "peak_added") / mib,
            "MiB",
            TARGET_MEMORY,
            threads=threads,
            notes=f"{described}; peak RSS added over the process after imports",
        ),
        make_row(
            6,
            "memory kept after start-up: CocoDataset / COCO()",
            med("mrcnn", "kept") / mib,
            med("pycocotools", "kept") / mib,
            "MiB",
            None,
            threads=threads,
            notes=f"{described}; RSS after construction minus before",
        ),
    ]
    first, last = (20, 200) if args.quick else (100, 2000)
    marks = _child(WORKERS, path, images, threads, first, last)
    for index, name in ((0, "RSS"), (1, "USS")):
        early = [w[index] / mib for w in marks[str(first)]]
        late = [w[index] / mib for w in marks[str(last)]]
        rows.append(
            make_row(
                6,
                f"worker {name} after {last} items / after {first}",
                sum(late) / len(late),
                sum(early) / len(early),
                "MiB per worker",
                TARGET_WORKER,
                threads=threads,
                notes=f"{described}; 2 workers, batch 2, shuffled; per worker (MiB) after {first}: "
                + ", ".join(f"{m:.0f}" for m in early)
                + f"; after {last}: "
                + ", ".join(f"{m:.0f}" for m in late),
            )
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=int,
        default=COCO_TRAIN_IMAGES,
        help=f"images in the generated file (default {COCO_TRAIN_IMAGES}, COCO train2017)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="start-ups per side (default 2)")


main = main_for("scale", __doc__.splitlines()[0], run, add_arguments)

if __name__ == "__main__":
    main()
