"""Train, evaluate, predict: the three commands chained as a user would run them."""

import json
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from mrcnn.config import compose_config
from mrcnn.train import train
from tests.tiny import TINY, TINY_RUN, run_module

STAT_KEYS = {f"{kind}_{stat}" for kind in ("bbox", "segm") for stat in ("AP", "AP50", "AR100")}


def command(module: str, *args: str, cwd: Path) -> str:
    result = run_module(module, *args, cwd=cwd, timeout=600)
    return result.stdout + result.stderr


# coco128 is slow: 40 s alone (the 128 real COCO images, 81 classes); the default suite stays
# under 15 min.
@pytest.mark.parametrize("data", ["synthetic", pytest.param("coco128", marks=pytest.mark.slow)])
def test_train_then_evaluate_then_predict(data, data_dir, tmp_path):
    data_args = [
        f"data={data}",
        f"paths.data_dir={data_dir}",
        "data.image_size=128",
        "data.max_image_size=128",
        "data.num_workers=0",
        "data.batch_size=2",
    ]
    tiny = TINY if data == "synthetic" else TINY_RUN
    # An untrained 81-class model scores ~1/81 per class: keep every detection it makes.
    keep_all = "model.detector.box_score_thresh=0.0"
    train(compose_config([*tiny, *data_args, keep_all, "logger=none"], output_dir=tmp_path / "run"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"

    metrics_file = tmp_path / "metrics.json"
    table = command(
        "mrcnn.evaluate",
        f"model_path={checkpoint}",
        *data_args,
        f"output={metrics_file}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert "segm" in table and "bbox" in table
    metrics = json.loads(metrics_file.read_text())["metrics"]
    assert set(metrics) >= STAT_KEYS

    images = tmp_path / "images"
    if data == "coco128":
        annotations = data_dir / "coco128" / "annotations" / "instances_val2017.json"
        images.mkdir()
        for path in sorted((data_dir / "coco128" / "val2017").glob("*.jpg"))[:3]:
            shutil.copy(path, images / path.name)
        id_args = [f"image_ids_from={annotations}"]
    else:
        from torchvision.io import write_png

        from mrcnn.data import ShapesDataset

        images.mkdir()
        for index in range(3):
            write_png(ShapesDataset(3, 128, seed=5)[index][0], str(images / f"shape{index}.png"))
        id_args = []
    out = tmp_path / "predicted"
    command(
        "mrcnn.predict",
        f"model_path={checkpoint}",
        f"input={images}",
        f"output={out}",
        "evaluation.score_threshold=0.0",
        *id_args,
        f"hydra.run.dir={tmp_path / 'pred'}",
        cwd=tmp_path,
    )
    assert len(list(out.glob("*.png"))) == 3
    ground_truth = COCO(str(annotations if data == "coco128" else out / "images.json"))
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions, "with both score thresholds at 0, even a 2-step model detects"
    reloaded = ground_truth.loadRes(str(out / "predictions.json"))
    assert {r["category_id"] for r in predictions} <= set(ground_truth.getCatIds())
    assert set(reloaded.getImgIds()) <= set(ground_truth.getImgIds())
