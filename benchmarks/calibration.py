"""Calibrated thresholds on a held-out split: per-class F1 at the thresholds fitted on one split,
against the global 0.5, measured on another split the fit never saw.

The model's detections on the *fit* split give each class its threshold (the best-F1 goal,
``evaluation.calibration.goal=f1``, as ``mrcnn evaluate`` fits it); its detections on the *test*
split then give each class's precision, recall and F1 at that threshold and at the global 0.5.
A detection is correct as the calibration counts it: a mask matching an object of its class at
IoU >= 0.5 (COCOeval's matching). On the synthetic shapes the two splits are two validation sets
drawn with different seeds (``data.val.seed``); ``--fit`` / ``--test`` take any other overrides.

    python -m benchmarks.calibration --model RUN_DIR/checkpoints/last.ckpt
    python -m benchmarks.calibration --model FILE --fit data.val.seed=1 --test data.val.seed=2
    python -m benchmarks.calibration --quick        # trains a 4-step model first (~2 min)

No timing: only the F1 table (and the load average, for the record). Rows go to
``benchmarks/results/calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine

GLOBAL = 0.5  # evaluation.score_threshold's default


def detections_by_class(model: Path, overrides: list[str]) -> tuple[dict, dict, dict]:
    """``(points, num_gt, names)`` of one split: per category id, every detection's (score,
    correct) at IoU 0.5 on masks, the object count, and the class name."""
    from mrcnn.builders import build_datamodule
    from mrcnn.config import compose_config
    from mrcnn.evaluation.cocoeval import IOU_TYPES, coco_report
    from mrcnn.evaluation.ground_truth import ground_truth_for
    from mrcnn.evaluation.predictions import predict_results
    from mrcnn.inference.loading import configured_inference

    cfg = compose_config([f"model_path={model}", *overrides], config_name="evaluate")
    inference, _, _ = configured_inference(cfg, 0.0, cfg.evaluation.mask_threshold)
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    categories = datamodule.categories
    ground_truth = ground_truth_for(datamodule.val_set, categories)
    results, image_ids = predict_results(inference, datamodule.val_set, categories)
    report = coco_report(
        ground_truth, results, iou_types=IOU_TYPES, image_ids=image_ids, calibration=("f1", None)
    )
    errors = report.errors["segm"]
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    return errors.points, errors.num_gt, names


def scores_at(points: list[tuple[float, bool]], num_gt: int, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of one class keeping the detections scored >= ``threshold``."""
    kept = [correct for score, correct in points if score >= threshold]
    true_positives = sum(kept)
    precision = true_positives / len(kept) if kept else 0.0
    recall = true_positives / num_gt if num_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def measure(model: Path, fit: list[str], test: list[str]) -> list[dict[str, Any]]:
    from mrcnn.evaluation.calibration import fit_thresholds

    points, num_gt, names = detections_by_class(model, fit)
    calibration = fit_thresholds(points, num_gt, names, "segm", goal="f1")
    thresholds = calibration.by_category_id()
    test_points, test_gt, _ = detections_by_class(model, test)
    rows = []
    for category_id, name in names.items():
        mine, count = test_points.get(category_id, []), test_gt.get(category_id, 0)
        rows.append(
            {
                "class": name,
                "threshold": round(thresholds[category_id], 4),
                "objects_fit": num_gt.get(category_id, 0),
                "objects_test": count,
                "at_0.5": scores_at(mine, count, GLOBAL),
                "calibrated": scores_at(mine, count, thresholds[category_id]),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| class | threshold | objects (fit / test) | F1 at 0.5 | F1 calibrated | P / R at 0.5 | "
        "P / R calibrated |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        a, c = r["at_0.5"], r["calibrated"]
        lines.append(
            f"| {r['class']} | {r['threshold']:.3f} | {r['objects_fit']} / {r['objects_test']} | "
            f"{a['f1']:.3f} | {c['f1']:.3f} | {a['precision']:.3f} / {a['recall']:.3f} | "
            f"{c['precision']:.3f} / {c['recall']:.3f} |"
        )
    mean = {k: sum(r[k]["f1"] for r in rows) / max(1, len(rows)) for k in ("at_0.5", "calibrated")}
    lines.append(f"| **mean** | | | **{mean['at_0.5']:.3f}** | **{mean['calibrated']:.3f}** | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration", description=__doc__)
    parser.add_argument("--model", type=Path, help="a checkpoint or exported model")
    parser.add_argument("--fit", nargs="*", default=["data.val.seed=1", "data.val.num_images=96"])
    parser.add_argument("--test", nargs="*", default=["data.val.seed=2", "data.val.num_images=96"])
    parser.add_argument("--quick", action="store_true", help="a 4-step model, 4-image splits")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mrcnn-bench-calibration"))
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "calibration.json")
    args = parser.parse_args(argv)
    logging.getLogger("mrcnn").setLevel(logging.WARNING)
    if args.quick:
        from benchmarks.tta import quick_checkpoint

        args.model = quick_checkpoint(args.work_dir)
        args.fit = ["data.val.seed=1", "data.val.num_images=4"]
        args.test = ["data.val.seed=2", "data.val.num_images=4"]
    if args.model is None:
        parser.error("give --model FILE (or --quick)")
    rows = measure(args.model, args.fit, args.test)
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": str(args.model), "fit": args.fit, "test": args.test, "machine": machine()}
    args.json.write_text(json.dumps({**record, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
