"""COCO metrics and per-class AP as text tables (evaluate's printout, the validation log)."""

from __future__ import annotations

from collections.abc import Sequence

from mrcnn.evaluation.cocoeval import REPORTED_TYPES, STAT_NAMES, CocoReport
from mrcnn.evaluation.tide import ERROR_NAMES, MAIN_ERRORS, SPECIAL_ERRORS


def per_class_table(report: CocoReport) -> tuple[list[str], list[list[str | float | None]]]:
    """Per-class AP and AP50 (0..1) for each IoU type: the columns (``class``, ``bbox AP``,
    ``bbox AP50``, ``segm AP``, ...) and one row per class, worst first (by segm AP when there
    are masks); None where a class has no ground truth among the images evaluated."""
    types = [t for t in REPORTED_TYPES if t in report.per_class]
    names = list(next(iter(report.per_class.values()), {}))
    key = "segm" if "segm" in types else (types[-1] if types else None)
    names.sort(key=lambda n: report.per_class[key][n]["AP"] if key else 0)
    columns = ["class", *(f"{t} {stat}" for t in types for stat in ("AP", "AP50"))]
    rows: list[list[str | float | None]] = []
    for name in names:
        values = [report.per_class[t][name][stat] for t in types for stat in ("AP", "AP50")]
        rows.append([name, *(value if value >= 0 else None for value in values)])
    return columns, rows


def format_per_class_table(report: CocoReport) -> str:
    """Per-class AP and AP50 (percent) for each IoU type, one row per class, worst first."""
    columns, rows = per_class_table(report)
    width = max([len(str(row[0])) for row in rows] + [5])
    cells = [max(11, len(title) + 2) for title in columns[1:]]  # 'boundary AP50' needs 15
    titles = zip(columns[1:], cells, strict=True)
    header = f"{'class':<{width}}" + "".join(f"{title:>{w}}" for title, w in titles)
    lines = [header]
    for name, *values in rows:
        text = [
            f"{'-':>{w}}" if v is None else f"{100 * v:>{w}.2f}"
            for v, w in zip(values, cells, strict=True)
        ]
        lines.append(f"{name:<{width}}" + "".join(text))
    return "\n".join(lines)


def format_metrics_table(
    metrics: dict[str, float], iou_types: Sequence[str] = REPORTED_TYPES
) -> str:
    """A readable table: one row per IoU type, one column per COCO statistic (in percent)."""
    rows = [t for t in iou_types if any(k.startswith(f"{t}_") for k in metrics)]
    width = 7
    label = max([len(t) for t in rows] + [5]) + 1
    lines = [" " * label + "".join(f"{name:>{width}}" for name in STAT_NAMES)]
    for iou_type in rows:
        cells = []
        for name in STAT_NAMES:
            value = metrics.get(f"{iou_type}_{name}")
            cells.append(
                f"{'-':>{width}}" if value is None or value < 0 else f"{100 * value:>{width}.2f}"
            )
        lines.append(f"{iou_type:<{label}}" + "".join(cells))
    return "\n".join(lines)


def format_error_table(report: CocoReport) -> str:
    """TIDE's dAP per error type (rows) for each IoU type (columns), and the counts."""
    types = [t for t in report.errors]
    if not types:
        return ""
    lines = [f"{'error':<6}" + "".join(f"{t + ' dAP':>10}{'count':>7}" for t in types) + "  what"]
    for kind in MAIN_ERRORS:
        cells = "".join(
            f"{report.errors[t].main[kind]:>10.2f}{report.errors[t].counts[kind]:>7d}"
            for t in types
        )
        lines.append(f"{kind:<6}{cells}  {ERROR_NAMES[kind]}")
    for kind in SPECIAL_ERRORS:
        cells = "".join(f"{report.errors[t].special[kind]:>10.2f}{'':>7}" for t in types)
        fix = "all false positives scored 0" if kind == "FalsePos" else "every missed object found"
        lines.append(f"{kind[:6]:<6}{cells}  {fix}")
    ap = ", ".join(f"{t} {report.errors[t].ap:.2f}" for t in types)
    lines.append(f"(AP50 as TIDE computes it: {ap}; dAP: AP50 gained by fixing only those errors)")
    return "\n".join(lines)
