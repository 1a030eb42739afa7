"""All figures in one go: ``python -m benchmarks.run [--quick] [--only NAME ...]``.

Runs every figure module's ``run(args)`` with its own defaults (or its smallest variant with
``--quick``), prints one table and writes every row, with the machine, to
``benchmarks/results/latest.json``. Figure modules that are absent (e.g. ``precision`` and
``learning_speed`` before they exist) are skipped with a note.

``--collect`` runs nothing: it merges the rows that the figure scripts last wrote
(``benchmarks/results/<name>.json``, e.g. from figures run one by one or side by side) into one
table and ``latest.json``, keeping each script's command and machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    add_common_args,
    check_rows,
    format_table,
    setup,
    write_rows,
)

# In figure order; each is benchmarks/<name>.py with run(args) and main().
FIGURES = (
    "training",
    "hardware",
    "cpu_levers",
    "validation",
    "data_pipeline",
    "evaluation",
    "inference",
    "scale",
    "precision",
    "learning_speed",
    "export",
)


def _figure_args(module: Any, name: str, args: argparse.Namespace) -> argparse.Namespace:
    """The module's own defaults, with the shared options of this run."""
    argv = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    if name == "scale" and args.scale_images is not None:
        argv += ["--images", str(args.scale_images)]
    parser = argparse.ArgumentParser()
    add_common_args(parser, name)
    extra = getattr(module, "add_arguments", None)
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    add_common_args(parser, "latest")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    parser.add_argument(
        "--scale-images",
        type=int,
        default=None,
        help="images of figure 6's generated file (default: its own, COCO train2017's 118287)",
    )
    parser.add_argument(
        "--collect", action="store_true", help="merge the figures' last JSON files, run nothing"
    )
    args = parser.parse_args(argv)
    if args.collect:
        return collect(args.only or FIGURES, args.json)
    setup(args)
    command = " ".join(["python -m benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    rows: list[dict[str, Any]] = []
    for name in args.only or FIGURES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"benchmarks.{name}":
                raise
            print(f"[{name}] not present, skipped")
            continue
        start = time.perf_counter()
        figure_rows = module.run(_figure_args(module, name, args))
        check_rows(figure_rows)
        rows += figure_rows
        print(f"[{name}] {len(figure_rows)} row(s) in {time.perf_counter() - start:.0f} s")
        write_rows(rows, args.json, command)  # partial results survive an interrupted run
    print(format_table(rows))
    print(f"\nWrote {args.json}")
    return rows


def collect(names: Sequence[str], path: Any) -> list[dict[str, Any]]:
    """One table and JSON from ``benchmarks/results/<name>.json`` of each figure present."""
    rows, sources = [], {}
    for name in names:
        source = RESULTS_DIR / f"{name}.json"
        if not source.exists():
            print(f"[{name}] no {source}, skipped")
            continue
        payload = json.loads(source.read_text())
        check_rows(payload["rows"])
        rows += payload["rows"]
        sources[name] = {"command": payload["command"], "machine": payload["machine"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"collected_from": sources, "rows": rows}, indent=2) + "\n")
    print(format_table(rows))
    print(f"\nWrote {path}")
    return rows


if __name__ == "__main__":
    main()

__all__ = ["FIGURES", "collect", "main"]
