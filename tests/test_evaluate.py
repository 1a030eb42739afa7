"""`mrcnn evaluate`: model and results-file modes, end to end, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrcnn.config import compose_config
from mrcnn.evaluate import evaluate
from mrcnn.evaluation import STAT_NAMES, ResultsError, evaluate_coco
from mrcnn.model.checkpoint import CheckpointError, ClassesMismatchError
from tests.evaluation.coco_fakes import results_from_ground_truth
from tests.tiny import TINY_EVAL_DATA as EVAL_DATA
from tests.tiny import coco128_as_validation as coco_overrides
from tests.tiny import run_command

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_checkpoint_on_synthetic_prints_table_and_writes_json(tmp_path, tiny_checkpoint):
    done = run_command("mrcnn.evaluate", f"model_path={tiny_checkpoint}", *EVAL_DATA, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == list(STAT_NAMES))
    assert lines[header + 1].split()[0] == "bbox" and lines[header + 2].split()[0] == "segm"
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Box, mask and Boundary AP (evaluation.boundary_dilation, 0.02 by default).
    types = ("bbox", "segm", "boundary")
    assert set(written["metrics"]) == {f"{t}_{n}" for t in types for n in STAT_NAMES}
    assert written["num_images"] == 2 and written["model_path"] == str(tiny_checkpoint)
    assert all(-1 <= v <= 1 for v in written["metrics"].values())


def test_results_file_on_coco128_equals_pycocotools(tmp_path, coco128_dir, coco_gt, coco_gt_path):
    results = results_from_ground_truth(coco_gt)
    results_path = tmp_path / "detections.json"
    results_path.write_text(json.dumps(results))

    output = tmp_path / "out" / "metrics.json"
    cfg = compose_config(
        [*coco_overrides(coco128_dir), f"results={results_path}", f"output={output}"],
        output_dir=tmp_path,
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    expected = evaluate_coco(coco_gt_path, results, backend="pycocotools")
    boundary = {f"boundary_{n}" for n in STAT_NAMES}  # beside them (faster-coco-eval's)
    assert metrics.keys() == expected.keys() | boundary
    for key, value in expected.items():
        assert np.isclose(metrics[key], value, rtol=0, atol=1e-6), key
    assert json.loads(output.read_text())["metrics"] == metrics


def test_per_class_ap_is_printed_and_written(tmp_path, coco128_dir, coco_gt, coco_gt_path, capsys):
    results_path = tmp_path / "detections.json"
    results_path.write_text(json.dumps(results_from_ground_truth(coco_gt)))
    output = tmp_path / "metrics.json"
    cfg = compose_config(
        [*coco_overrides(coco128_dir), f"results={results_path}", f"output={output}"],
        output_dir=tmp_path,
        config_name="evaluate",
    )
    evaluate(cfg)
    printed = capsys.readouterr().out
    written = json.loads(output.read_text())["per_class"]
    names = {c["name"] for c in coco_gt["categories"]}
    assert set(written["segm"]) == names and set(written["bbox"]) == names
    person = written["segm"]["person"]
    assert 0 < person["AP"] < person["AP50"] <= 1
    assert "Per class (%), weakest first:" in printed
    assert f"person{' ' * 10}" in printed and f"{100 * person['AP']:.2f}" in printed


def test_box_only_results_evaluate_bbox(tmp_path, coco128_dir, coco_gt):
    ann = next(a for a in coco_gt["annotations"] if not a["iscrowd"])
    results = [{k: ann[k] for k in ("image_id", "category_id", "bbox")} | {"score": 0.9}]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(results))
    cfg = compose_config(
        [*coco_overrides(coco128_dir), f"results={path}"],
        output_dir=tmp_path,
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    assert set(metrics) == {f"bbox_{n}" for n in STAT_NAMES} and metrics["bbox_AP"] > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid json"),
        ('{"images": [], "annotations": []}', "looks like a COCO ground-truth file"),
        ('[{"image_id": 1}]', "entry 0 is"),
        ('[{"image_id": 424242, "category_id": 1, "score": 1, "bbox": [0, 0, 1, 1]}]', "image ids"),
    ],
)
def test_bad_results_files_are_named_and_write_nothing(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    cfg = compose_config(
        [*EVAL_DATA, f"results={path}"], output_dir=tmp_path, config_name="evaluate"
    )
    with pytest.raises(ResultsError, match=message):
        evaluate(cfg)
    assert not (tmp_path / "metrics.json").exists()


def test_unknown_category_ids_in_results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('[{"image_id": 0, "category_id": 0, "score": 1, "bbox": [0, 0, 1, 1]}]')
    cfg = compose_config(
        [*EVAL_DATA, f"results={path}"], output_dir=tmp_path, config_name="evaluate"
    )
    with pytest.raises(ResultsError, match=r"category ids \[0\].*data set's own category ids"):
        evaluate(cfg)


def test_classes_mismatch_is_refused_before_inference(tmp_path, tiny_checkpoint, coco128_dir):
    cfg = compose_config(
        [*coco_overrides(coco128_dir), f"model_path={tiny_checkpoint}"],
        output_dir=tmp_path,
        config_name="evaluate",
    )
    with pytest.raises(ClassesMismatchError, match=r"(?s)checkpoint \(3\).*data\s+\(80\)"):
        evaluate(cfg)
    assert not (tmp_path / "metrics.json").exists()


def test_command_line_errors_are_one_clear_line(tmp_path):
    text = tmp_path / "model.ckpt"
    text.write_text("not a checkpoint\n")
    done = run_command("mrcnn.evaluate", f"model_path={text}", *EVAL_DATA, cwd=tmp_path)
    assert done.returncode == 1
    assert "error: " in done.stderr and "is a text file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_command_line_reports_a_class_mismatch_in_one_message(
    tmp_path, tiny_checkpoint, coco128_dir
):
    done = run_command(
        "mrcnn.evaluate",
        *coco_overrides(coco128_dir),
        f"model_path={tiny_checkpoint}",
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "mrcnn evaluate: error: The checkpoint's classes do not match" in done.stderr
    assert "Traceback" not in done.stderr and "only in checkpoint" in done.stderr


def test_exactly_one_source_is_required(tmp_path):
    cfg = compose_config(EVAL_DATA, output_dir=tmp_path, config_name="evaluate")
    with pytest.raises(ValueError, match="exactly one of model=FILE"):
        evaluate(cfg)
    with pytest.raises(CheckpointError):
        evaluate(
            compose_config(
                [*EVAL_DATA, f"model_path={tmp_path}"], output_dir=tmp_path, config_name="evaluate"
            )
        )
