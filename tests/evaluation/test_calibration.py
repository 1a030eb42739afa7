"""Calibrated thresholds: fitted per class for a stated goal, stored with the model by training,
evaluate and export, and applied by predict on every back end and with tiles."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from mrcnn.config import compose_config
from mrcnn.errors import ConfigError
from mrcnn.evaluate import evaluate
from mrcnn.evaluation.calibration import (
    CHECKPOINT_KEY,
    Calibration,
    CalibrationError,
    ClassThreshold,
    fit_class,
    fit_thresholds,
    store_in_checkpoint,
)
from mrcnn.predict import predict
from mrcnn.train import train
from tests.events import events
from tests.tiny import TINY, TINY_EVAL_DATA, assert_one_message, run_command

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Five detections of one class with 4 objects: at each cut, precision / recall / F1 are
# 1/.25/.4, 1/.5/.667, .667/.5/.571, .75/.75/.75, .6/.75/.667.
POINTS = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.3, False)]


def test_f1_goal_takes_the_threshold_with_the_best_f1():
    assert fit_class(POINTS, 4, "f1") == pytest.approx((0.6, 0.75, 0.75, 0.75, True))


def test_precision_goal_takes_the_lowest_threshold_reaching_it():
    assert fit_class(POINTS, 4, "precision", 0.9)[:3] == pytest.approx((0.8, 1.0, 0.5))
    assert fit_class(POINTS, 4, "precision", 0.7)[:3] == pytest.approx((0.6, 0.75, 0.75))
    # Equal scores are kept or dropped together.
    tied = [(0.9, True), (0.5, False), (0.5, True), (0.2, True)]
    assert fit_class(tied, 3, "precision", 0.9)[0] == 0.9


def test_classes_without_a_fit_keep_the_fallback():
    calibration = fit_thresholds(
        {1: POINTS, 2: [(0.4, False)]}, {1: 4, 2: 3}, {1: "a", 2: "b", 3: "c"}, "segm"
    )
    a, b, c = calibration.classes
    assert (a.threshold, a.fitted) == (0.6, True)
    assert (b.threshold, b.fitted, b.num_gt) == (0.5, False, 3)  # no correct detection
    assert (c.threshold, c.fitted, c.num_gt) == (0.5, False, 0)  # no object in the split
    assert Calibration.from_dict(calibration.to_dict()) == calibration


@pytest.mark.slow  # a real training run with two validations (~35 s)
def test_training_stores_thresholds_and_logs_boundary_ap_and_the_error_breakdown(tmp_path):
    overrides = [
        *TINY,
        "trainer.max_steps=3",  # validated at step 2; step 3 validated after fit
        "evaluation.score_threshold=calibrated",
        "evaluation.error_plots=[bbox,segm]",
    ]
    train(compose_config(overrides, output_dir=tmp_path))
    stored = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    calibration = Calibration.from_dict(stored[CHECKPOINT_KEY])
    assert [c.name for c in calibration.classes] == ["circle", "square", "triangle"]
    assert calibration.goal == "f1" and calibration.iou_type == "segm"
    logged = events(tmp_path)
    assert {"val/boundary_AP", "val/boundary_AP50"} <= set(logged.Tags()["scalars"])
    assert "val/error_breakdown" in logged.Tags()["images"]
    assert "val/ground_truth_vs_prediction" in logged.Tags()["images"]


def predict_labels(model: Path, images: Path, out: Path, **options) -> Counter:
    overrides = [f"model_path={model}", f"input={images}", f"output={out}", "num_workers=0"]
    overrides += [f"{k}={v}" for k, v in options.items()]
    predict(compose_config(overrides, config_name="predict"))
    results = json.loads((out / "predictions.json").read_text())
    return Counter(r["category_id"] for r in results), results


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny checkpoint whose stored thresholds keep every circle and triangle
    and drop every square, and a folder of images (the validation images)."""
    folder = tmp_path_factory.mktemp("calibrated")
    model = folder / "model.ckpt"
    shutil.copy(tiny_checkpoint, model)
    classes = [
        ClassThreshold("circle", 1, 0.0, 1, 1, 1, 1),
        ClassThreshold("square", 2, 1.0, 1, 1, 1, 1),
        ClassThreshold("triangle", 3, 0.0, 1, 1, 1, 1),
    ]
    store_in_checkpoint(model, Calibration("f1", "segm", classes))
    from PIL import Image

    from mrcnn.data import ShapesDataset

    images = folder / "images"
    images.mkdir()
    for index in range(3):
        image = ShapesDataset(3, 128, seed=5)[index][0]
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / f"{index}.png")
    return model, images


@pytest.mark.parametrize(
    "tiles", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["whole", "tiled"]
)
def test_predict_applies_the_calibrated_thresholds(calibrated, tmp_path, tiles):
    model, images = calibrated
    options = {"tile_size": 64} if tiles else {}
    every, _ = predict_labels(
        model, images, tmp_path / "all", **options, **{"evaluation.score_threshold": 0}
    )
    assert every[2] > 0 and every[1] + every[3] > 0  # the weak model detects every class
    kept, _ = predict_labels(
        model, images, tmp_path / "cal", **options, **{"evaluation.score_threshold": "calibrated"}
    )
    assert kept[2] == 0  # squares need a score of 1
    assert kept[1] == every[1] and kept[3] == every[3]  # circles and triangles all kept
    info = json.loads((tmp_path / "cal" / "images.json").read_text())["info"]
    assert info["score_threshold"] == {"circle": 0.0, "square": 1.0, "triangle": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_models_carry_and_apply_the_thresholds(calibrated, tmp_path, fmt):
    pytest.importorskip("onnxruntime")
    from mrcnn.deploy.exporter import export_model

    model, images = calibrated
    exported = export_model(model, fmt, tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}")
    sidecar = json.loads(exported.sidecar.read_text())
    assert sidecar["calibration"]["classes"][1]["threshold"] == 1.0
    every, _ = predict_labels(
        exported.output, images, tmp_path / "all", **{"evaluation.score_threshold": 0}
    )
    kept, _ = predict_labels(
        exported.output, images, tmp_path / "cal", **{"evaluation.score_threshold": "calibrated"}
    )
    assert every[2] > 0 and kept[2] == 0
    assert kept[1] == every[1] and kept[3] == every[3]
    # Test-time augmentation (flip) runs on the exported model too, thresholds and all.
    flipped, _ = predict_labels(
        exported.output,
        images,
        tmp_path / "tta",
        tta="true",
        **{"evaluation.score_threshold": "calibrated"},
    )
    assert flipped[2] == 0 and flipped[1] + flipped[3] > 0


def test_evaluate_fits_prints_and_stores_the_thresholds(tiny_checkpoint, tmp_path, capsys):
    model = tmp_path / "model.ckpt"
    shutil.copy(tiny_checkpoint, model)
    before = torch.load(model, weights_only=True)
    assert CHECKPOINT_KEY not in before  # the tiny run never validated
    output = tmp_path / "metrics.json"
    cfg = compose_config(
        [
            f"model_path={model}",
            f"output={output}",
            "evaluation.calibration.goal=precision",
            "evaluation.calibration.precision=0.8",
            *TINY_EVAL_DATA,
        ],
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    printed = capsys.readouterr().out
    assert "Calibrated score thresholds (lowest threshold with precision >= 0.8" in printed
    assert "boundary" in printed and "Which errors cost the AP (TIDE" in printed
    written = json.loads(output.read_text())
    assert "boundary_AP" in metrics and written["boundary_dilation"] == 0.02
    assert set(written["errors"]) == {"bbox", "segm"}
    assert set(written["errors"]["segm"]["dAP"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"}
    assert written["calibration"]["goal"] == "precision"
    after = torch.load(model, weights_only=True)
    assert after[CHECKPOINT_KEY] == written["calibration"]  # stored in the checkpoint
    assert torch.equal(
        after["state_dict"][next(iter(before["state_dict"]))],
        before["state_dict"][next(iter(before["state_dict"]))],
    )
    assert (tmp_path / "error_breakdown.png").is_file()


def test_calibrated_without_thresholds_names_the_fix(tiny_checkpoint, tmp_path, calibrated):
    _, images = calibrated
    with pytest.raises(CalibrationError, match="mrcnn evaluate model="):
        predict_labels(
            tiny_checkpoint,
            images,
            tmp_path / "out",
            **{"evaluation.score_threshold": "calibrated"},
        )
    with pytest.raises(ConfigError, match=r"evaluation\.score_threshold"):
        predict_labels(
            tiny_checkpoint, images, tmp_path / "out", **{"evaluation.score_threshold": "high"}
        )


def test_predict_names_the_fix_in_one_line(tiny_checkpoint, calibrated, tmp_path):
    _, images = calibrated
    common = [f"model_path={tiny_checkpoint}", f"input={images}", f"output={tmp_path / 'out'}"]
    done = run_command(
        "mrcnn.predict", *common, "evaluation.score_threshold=calibrated", cwd=tmp_path
    )
    assert_one_message(done, "mrcnn predict", "no calibrated thresholds", "mrcnn evaluate model=")


def test_tide_false_skips_the_breakdown_and_the_fit(tiny_checkpoint, tmp_path):
    before = tiny_checkpoint.read_bytes()
    output = tmp_path / "metrics.json"
    overrides = [f"model_path={tiny_checkpoint}", f"output={output}", *TINY_EVAL_DATA]
    metrics = evaluate(
        compose_config([*overrides, "evaluation.tide=false"], config_name="evaluate")
    )
    written = json.loads(output.read_text())
    assert written["errors"] == {} and written["calibration"] is None
    assert "segm_AP" in metrics and "boundary_AP" in metrics  # the metrics themselves stay
    assert not (tmp_path / "error_breakdown.png").exists()
    assert tiny_checkpoint.read_bytes() == before  # nothing fitted, nothing stored
    calibrated = [*overrides, "evaluation.tide=false", "evaluation.score_threshold=calibrated"]
    with pytest.raises(ConfigError, match=r"needs evaluation\.tide=true"):
        evaluate(compose_config(calibrated, config_name="evaluate"))
