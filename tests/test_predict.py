"""`python -m mrcnn.predict`: drawn PNGs and COCO results from real files, and clear failures."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import nn

import mrcnn.evaluate
import mrcnn.inference
import mrcnn.inference.loading
import mrcnn.predict
from mrcnn.config import compose_config
from mrcnn.data import ShapesDataset
from mrcnn.data.image_files import ImageFilesError
from mrcnn.data.images import read_image
from mrcnn.errors import ConfigError
from mrcnn.evaluation.cocoeval import evaluate_coco
from mrcnn.evaluation.ground_truth import ground_truth_for
from mrcnn.model.checkpoint import CheckpointError
from mrcnn.predict import PredictError, drawn_names, predict

REPO = Path(__file__).resolve().parents[1]
# A command run here imports this checkout's mrcnn (a git worktree's too), not the installed one.
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def save(image: torch.Tensor, path: Path) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def predict_config(**options) -> dict:
    overrides = [f"{key}={value}" for key, value in {"num_workers": 0, **options}.items()]
    return compose_config(overrides, config_name="predict")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Synthetic images as PNG and JPEG, one unreadable file, and files predict must ignore."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    dataset = ShapesDataset(num_images=3, image_size=128, seed=7)
    for index, name in enumerate(["b.png", "c.jpg", "a.PNG"]):
        save(dataset[index][0], folder / name)
    (folder / "broken.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    save(dataset[0][0], folder / ".hidden.png")
    save(dataset[0][0], folder / "sub" / "nested.png")
    return folder


def test_cli_predicts_every_readable_image_and_names_the_unreadable_one(
    tiny_checkpoint, image_folder, tmp_path
):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "mrcnn.predict",
        f"model_path={tiny_checkpoint}",
        f"input={image_folder}",
        f"output={out}",
        "evaluation.score_threshold=0.1",
        "batch_size=2",
        "num_workers=1",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=CHECKOUT_ENV, capture_output=True, text=True, timeout=300
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Skipping unreadable image" in log and "broken.jpg" in log
    assert "1 image(s) skipped" in log

    # Sorted file names (case-sensitive): a.PNG=1, b.png=2, broken.jpg=3 (skipped), c.jpg=4.
    index = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in index["images"]] == [
        (1, "a.PNG"),
        (2, "b.png"),
        (4, "c.jpg"),
    ]
    assert [(s["id"], s["file_name"]) for s in index["info"]["skipped"]] == [(3, "broken.jpg")]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    for image in index["images"]:
        drawn = Image.open(out / (Path(image["file_name"]).stem + ".png"))
        assert drawn.size == (image["width"], image["height"]) and drawn.mode == "RGB"

    results = json.loads((out / "predictions.json").read_text())
    assert results, "a 2-step model should still give detections above score 0.1"
    assert {r["image_id"] for r in results} <= {1, 2, 4}
    assert all(r["score"] >= 0.1 and r["category_id"] in (1, 2, 3) for r in results)
    gt = COCO(str(out / "images.json"))  # images.json is a ground-truth skeleton ...
    loaded = gt.loadRes(str(out / "predictions.json"))  # ... that the results load against
    assert len(loaded.getAnnIds()) == len(results)
    first = results[0]
    height = next(i["height"] for i in index["images"] if i["id"] == first["image_id"])
    assert isinstance(first["segmentation"]["counts"], str)
    assert first["segmentation"]["size"][0] == height and len(first["bbox"]) == 4
    assert not list(out.glob(".*.tmp")), "temporary JSON files left behind"


class GroundTruthModel(nn.Module):
    """Stands in for a trained model: returns each image's ground truth as detections (bf16,
    scores 0.9) plus one wrong low-score detection, so the written results are known exactly."""

    def __init__(self, dataset: ShapesDataset) -> None:
        super().__init__()
        self.categories = dataset.categories
        self.by_image = {}
        for index in range(len(dataset)):
            image, target = dataset[index]
            self.by_image[hashlib.sha1(image.numpy().tobytes()).hexdigest()] = target
        self.calls = []

    def forward(self, images):
        self.calls.append(len(images))
        outputs = []
        for image in images:
            key = hashlib.sha1((image * 255).round().byte().numpy().tobytes()).hexdigest()
            target = self.by_image[key]
            height, width = image.shape[-2:]
            masks = target["masks"].as_subclass(torch.Tensor).float()[:, None] * 0.8
            noise = torch.zeros(1, 1, height, width)
            noise[..., : height // 2, : width // 2] = 0.9
            boxes = torch.tensor([[0.0, 0, width // 2, height // 2]])
            outputs.append(
                {
                    "boxes": torch.cat([target["boxes"].as_subclass(torch.Tensor), boxes]),
                    "labels": torch.cat([target["labels"], torch.tensor([1])]),
                    "scores": torch.tensor([0.9] * len(target["labels"]) + [0.3]),
                    "masks": torch.cat([masks, noise]).bfloat16(),
                }
            )
        return outputs


def test_written_results_score_perfectly_against_the_ground_truth_they_came_from(
    tmp_path, monkeypatch
):
    dataset = ShapesDataset(num_images=5, image_size=96, seed=11, empty_fraction=0.2)
    folder = tmp_path / "images"
    folder.mkdir()
    samples = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        save(image, folder / f"shape_{index}.png")
        samples.append((image, {**target, "image_id": 100 + index}))
    targets = [target for _, target in samples]
    ground_truth = ground_truth_for(samples, dataset.categories)
    for image in ground_truth["images"]:
        image["file_name"] = f"shape_{image['id'] - 100}.png"
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(ground_truth))
    model = GroundTruthModel(dataset)
    loaded = SimpleNamespace(model=model, categories=dataset.categories)
    loaded.eval = lambda: loaded
    monkeypatch.setattr(mrcnn.inference.loading, "load_module", lambda path, map_location: loaded)
    monkeypatch.setattr(
        mrcnn.inference.core, "detect", lambda model, images, precision: model(images)
    )

    out = tmp_path / "out"
    summary = predict(
        predict_config(
            model_path="unused.ckpt",
            input=folder,
            output=out,
            batch_size=2,
            image_ids_from=annotations,
        )
    )

    assert model.calls == [2, 2, 1]  # batched
    results = json.loads((out / "predictions.json").read_text())
    num_instances = sum(len(t["labels"]) for t in targets)
    assert len(results) == summary.num_detections == num_instances  # score 0.3 dropped
    assert {r["image_id"] for r in results} <= set(range(100, 105))
    metrics = evaluate_coco(ground_truth, results)
    assert metrics["bbox_AP"] == pytest.approx(1.0) and metrics["segm_AP"] == pytest.approx(1.0)

    # The drawing shows the kept detections and not the dropped one.
    first = next(i for i, t in enumerate(targets) if len(t["labels"]))
    image, target = dataset[first]
    drawn = torch.from_numpy(np.array(Image.open(out / f"shape_{first}.png")))
    changed = (drawn.permute(2, 0, 1) != image).any(dim=0)
    covered = target["masks"].as_subclass(torch.Tensor).bool().any(dim=0)
    assert changed[covered].float().mean() > 0.9
    quarter = torch.zeros_like(covered)
    quarter[: covered.shape[0] // 2, : covered.shape[1] // 2] = True
    assert changed[quarter & ~covered].float().mean() < 0.7  # the 0.3 detection is not drawn


def test_bf16_predictions_keep_float32_box_coordinates(tiny_checkpoint, image_folder, tmp_path):
    # Decoded in bf16, every coordinate from 16 to 128 px would be a multiple of 1/8.
    results = {}
    for precision in ("32", "bf16"):
        out = tmp_path / precision
        predict(
            predict_config(
                model_path=tiny_checkpoint,
                input=image_folder / "b.png",
                output=out,
                **{"evaluation.score_threshold": 0.1},
                precision=precision,
                draw=False,
            )
        )
        results[precision] = json.loads((out / "predictions.json").read_text())
        assert not list(out.glob("*.png"))  # draw=false
    coords = torch.tensor([r["bbox"][:2] for r in results["bf16"]]).flatten()
    coords = coords[(coords >= 16) & (coords < 128)]
    assert len(coords) > 0 and (coords * 8 != (coords * 8).round()).any()
    assert len(results["bf16"]) > 0 and len(results["32"]) > 0


def test_drawn_names_keep_stems_unless_two_inputs_share_one():
    files = [Path("x/a.jpg"), Path("x/a.png"), Path("x/b.tif")]
    assert drawn_names(files) == ["a.jpg.png", "a.png.png", "b.png"]


def test_folder_without_images_names_the_extensions_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ImageFilesError, match=r"no images in this folder.*\.jpg.*\.png"):
        predict(
            predict_config(model_path="x.ckpt", input=tmp_path / "empty", output=tmp_path / "o")
        )
    with pytest.raises(ImageFilesError, match="no such file or folder"):
        predict(predict_config(model_path="x.ckpt", input=tmp_path / "nope", output=tmp_path / "o"))


def test_missing_or_non_checkpoint_file_fails_clearly_and_removes_stale_results(
    image_folder, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text("[]")  # from an earlier run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict(
            predict_config(model_path=tmp_path / "missing.ckpt", input=image_folder, output=out)
        )
    assert not (out / "predictions.json").exists(), "stale results would look complete"
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="text file"):
        predict(predict_config(model_path=text, input=image_folder, output=out))


def test_a_setting_typo_keeps_the_last_results(tiny_checkpoint, image_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text("[]")  # from an earlier run
    for typo in ({"mask_format": "polygons"}, {"tile_size": 8}):
        with pytest.raises(ConfigError):
            predict(
                predict_config(model_path=tiny_checkpoint, input=image_folder, output=out, **typo)
            )
        assert (out / "predictions.json").read_text() == "[]"


def test_unwritable_output_and_output_over_inputs_are_refused(image_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PredictError, match="not a writable folder"):
        predict(predict_config(model_path="x.ckpt", input=image_folder, output=blocker / "out"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(PredictError, match="not a writable folder"):
            predict(predict_config(model_path="x.ckpt", input=image_folder, output=locked))
    with pytest.raises(PredictError, match="would overwrite input images"):
        predict(predict_config(model_path="x.ckpt", input=image_folder, output=image_folder))


def test_image_ids_from_must_name_every_input(image_folder, tmp_path):
    annotations = tmp_path / "gt.json"
    annotations.write_text(json.dumps({"images": [{"id": 7, "file_name": "dir/b.png"}]}))
    with pytest.raises(ImageFilesError, match=r"has no image named a\.PNG, broken\.jpg, c\.jpg"):
        predict(
            predict_config(
                model_path="x.ckpt",
                input=image_folder,
                output=tmp_path / "o",
                image_ids_from=annotations,
            )
        )


def test_cli_reports_a_bad_checkpoint_in_one_line_with_exit_status_1(image_folder, tmp_path):
    command = [
        sys.executable,
        "-m",
        "mrcnn.predict",
        f"model_path={tmp_path / 'missing.ckpt'}",
        f"input={image_folder}",
        f"output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    done = subprocess.run(
        command, cwd=REPO, env=CHECKOUT_ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "mrcnn predict: error: Checkpoint" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_exif_rotated_jpeg_is_predicted_and_evaluated_upright(
    tiny_checkpoint, coco128_dir, tmp_path, monkeypatch
):
    """A phone photo stores sideways pixels and an EXIF orientation; training reads it upright
    (mrcnn.data.images), so predict and evaluate must too: same detections, upright masks."""
    source = coco128_dir / "val2017" / "000000000009.jpg"
    if not source.is_file():
        pytest.skip(f"{source} not found (set MRCNN_DATA_DIR)")
    upright = np.array(Image.open(source).convert("RGB"))  # 480 x 640 (H x W), no EXIF
    folder = tmp_path / "images"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show": the raw pixels lie sideways
    sideways = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    assert sideways.size == (480, 640)  # W x H as stored
    sideways.save(folder / "exif.jpg", exif=exif, quality=95)
    shown = read_image(folder / "exif.jpg", "test")  # upright, as training reads it
    assert shown.shape == upright.shape
    assert np.abs(shown.astype(int) - upright).mean() < 4  # JPEG noise, not another rotation
    Image.fromarray(shown).save(folder / "upright.png")  # the same pixels, no EXIF
    height, width = upright.shape[:2]

    out = tmp_path / "out"
    predict(
        predict_config(
            model_path=tiny_checkpoint,
            input=folder,
            output=out,
            **{"evaluation.score_threshold": 0.0},
            batch_size=1,
            draw=False,
        )
    )
    index = json.loads((out / "images.json").read_text())
    assert [(i["file_name"], i["height"], i["width"]) for i in index["images"]] == [
        ("exif.jpg", height, width),
        ("upright.png", height, width),
    ]
    predicted = json.loads((out / "predictions.json").read_text())
    by_file = {
        name: [r for r in predicted if r["image_id"] == image_id]
        for image_id, name in ((1, "exif.jpg"), (2, "upright.png"))
    }
    assert by_file["exif.jpg"], "the 2-step model should detect something at score >= 0"
    assert all(r["segmentation"]["size"] == [height, width] for r in predicted)
    assert_same_detections(by_file["exif.jpg"], by_file["upright.png"])

    # mrcnn.evaluate on a COCO json naming the EXIF file, with the checkpoint's classes.
    annotations = tmp_path / "instances.json"
    annotations.write_text(
        json.dumps(
            {
                "images": [{"id": 9, "file_name": "exif.jpg", "height": height, "width": width}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 9,
                        "category_id": 1,
                        "segmentation": [[100, 100, 300, 100, 300, 300, 100, 300]],
                        "area": 40000,
                        "bbox": [100, 100, 200, 200],
                        "iscrowd": 0,
                    }
                ],
                "categories": [
                    {"id": i + 1, "name": name}
                    for i, name in enumerate(ShapesDataset(num_images=1).categories.names)
                ],
            }
        )
    )
    scored = []

    def recording_coco_report(ground_truth, results, **options):
        scored.extend(results)
        return real_coco_report(ground_truth, results, **options)

    real_coco_report = mrcnn.evaluate.coco_report
    monkeypatch.setattr(mrcnn.evaluate, "coco_report", recording_coco_report)
    split = [f"images={folder}", f"annotations={annotations}"]
    mrcnn.evaluate.evaluate(
        compose_config(
            [
                "data=coco",
                *(f"data.{part}.{item}" for part in ("train", "val") for item in split),
                "data.num_workers=0",
                "batch_size=1",
                f"model_path={tiny_checkpoint}",
                f"output={tmp_path / 'metrics.json'}",
            ],
            output_dir=tmp_path,
            config_name="evaluate",
        )
    )
    assert {r["image_id"] for r in scored} == {9}
    assert all(r["segmentation"]["size"] == [height, width] for r in scored)
    assert_same_detections(scored, by_file["exif.jpg"])


def assert_same_detections(ours: list[dict], theirs: list[dict]) -> None:
    """The same detections in the same order, whatever image ids they were written under."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["category_id"] == b["category_id"]
        assert a["segmentation"] == b["segmentation"]
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
