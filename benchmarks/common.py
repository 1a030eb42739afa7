"""Shared benchmark machinery: thread pinning, alternating A/B timing, result rows, table, JSON.

Every figure module has ``run(args) -> list[dict]`` and ``main()``; a row is made by
:func:`make_row` and looks like::

    {"figure": 1, "what": "...", "measured": 3.41, "baseline": 3.36, "unit": "s/step",
     "ratio": 1.015, "target": "<= 1.03", "met": true, "threads": 2, "notes": "..."}

``measured`` is mrcnn's number, ``baseline`` the plain-library one, ``ratio`` their quotient.
The machine is shared and noisy, so candidates are timed in alternation inside one process
(:func:`alternate`) and medians are compared, never single runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_THREADS = 1


def add_common_args(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """``--quick``, ``--threads`` and ``--json`` for every figure (and ``benchmarks.run``)."""
    parser.add_argument(
        "--quick", action="store_true", help="smallest sizes: a smoke run of a few seconds each"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch.set_num_threads for the measuring process (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / f"{name}.json",
        help=f"where to write the rows (default benchmarks/results/{name}.json)",
    )
    return parser


def setup(args: argparse.Namespace) -> None:
    """Pin torch's threads, seed, and silence the logs and warnings that would drown the table."""
    import torch

    torch.set_num_threads(int(args.threads))
    torch.manual_seed(0)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mrcnn").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.*")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow stdout/stderr (progress bars, COCOeval prints) inside a measured block."""
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took (after a garbage collection, so none falls inside)."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    candidates: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each candidate ``rounds`` times, A B A B ..., after ``warmup`` untimed rounds.

    A candidate returning a list of floats reports its own timings (e.g. per training step);
    otherwise its wall time is taken. Alternation spreads the machine's load changes over all
    candidates alike. Returns the timings per candidate.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + rounds):
        for name, fn in candidates.items():
            gc.collect()
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            if round_index < warmup:
                continue
            if isinstance(result, list):
                times[name].extend(float(t) for t in result)
            else:
                times[name].append(elapsed)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``median [min-max] (n)`` for notes."""
    return f"{median(values):.4g} [{min(values):.4g}-{max(values):.4g}] (n={len(values)})"


def make_row(
    figure: int | str,
    what: str,
    measured: float,
    baseline: float,
    unit: str,
    target: float | None,
    higher_is_better: bool = False,
    threads: int | None = None,
    notes: str = "",
    ratio: float | None = None,
) -> dict[str, Any]:
    """One result row; ``ratio = measured / baseline`` unless given, ``met`` against ``target``.

    ``target`` None means "reported, no target" (``met`` is then None).
    """
    if ratio is None:
        ratio = measured / baseline if baseline else float("nan")
    if target is None:
        met, target_text = None, "-"
    elif higher_is_better:
        met, target_text = bool(ratio >= target), f">= {target:g}"
    else:
        met, target_text = bool(ratio <= target), f"<= {target:g}"
    return {
        "figure": figure,
        "what": what,
        "measured": round(float(measured), 6),
        "baseline": round(float(baseline), 6),
        "unit": unit,
        "ratio": round(float(ratio), 4),
        "target": target_text,
        "met": met,
        "threads": threads,
        "notes": notes,
    }


ROW_KEYS = ("figure", "what", "measured", "baseline", "unit", "ratio", "target", "met")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows (what ``docs/benchmarks.md`` shows)."""
    header = "| fig | what | mrcnn | baseline | unit | ratio | target | met |"
    lines = [header, "|---|---|---:|---:|---|---:|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(
            f"| {row['figure']} | {row['what']} | {row['measured']:.4g} | {row['baseline']:.4g} "
            f"| {row['unit']} | {row['ratio']:.3f} | {row['target']} | {met} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def write_rows(rows: list[dict[str, Any]], path: Path, command: str | None = None) -> None:
    """The rows with the machine and the command, as JSON at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def check_rows(rows: list[dict[str, Any]]) -> None:
    """Raise if a row lacks a key or has a non-finite ratio (a broken measurement)."""
    for row in rows:
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"benchmark row {row} lacks {missing}")


def main_for(name: str, description: str, run: Callable, extra_args: Callable | None = None):
    """The ``main()`` of a figure module: parse, set up, run, print the table, write JSON."""

    def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
        parser = argparse.ArgumentParser(
            prog=f"python -m benchmarks.{name}", description=description
        )
        add_common_args(parser, name)
        if extra_args is not None:
            extra_args(parser)
        args = parser.parse_args(argv)
        setup(args)
        rows = run(args)
        check_rows(rows)
        print(format_table(rows))
        arguments = sys.argv[1:] if argv is None else list(argv)
        write_rows(rows, args.json, " ".join(["python -m", f"benchmarks.{name}", *arguments]))
        print(f"\nWrote {args.json}")
        return rows

    return main


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MiB."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20
