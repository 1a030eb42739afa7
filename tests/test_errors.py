"""One way to fail: every command reports a user error as one message, without a traceback, with
exit status 1, and HYDRA_FULL_ERROR=1 brings the traceback back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.tiny import TINY, TINY_RUN, assert_one_message, run_command


def missing_coco(tmp_path: Path) -> list[str]:
    return [
        "data=coco",
        f"data.train.images={tmp_path}",
        f"data.train.annotations={tmp_path / 'missing.json'}",
    ]


def test_train_names_a_missing_annotation_file(tmp_path):
    done = run_command("mrcnn.train", *missing_coco(tmp_path), cwd=tmp_path)
    assert_one_message(done, "mrcnn train", str(tmp_path / "missing.json"))


def test_train_lists_several_annotation_problems_one_per_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    annotations = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 2, 2], "area": 4},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4},
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(annotations))
    overrides = ["data=coco", f"data.train.images={tmp_path}", f"data.train.annotations={path}"]
    done = run_command("mrcnn.train", *overrides, cwd=tmp_path)
    message = assert_one_message(done, "mrcnn train")
    assert str(path) in message and len(message.strip().splitlines()) > 2, message


def test_train_reports_a_bad_config_value_by_its_key(tmp_path):
    done = run_command("mrcnn.train", *TINY, "trainer.precision=17", cwd=tmp_path)
    assert_one_message(done, "mrcnn train", "trainer.precision", "'17'")


def test_train_without_coco_metrics_names_the_monitor_to_change(tmp_path):
    """The best checkpoint watches val/segm_AP: without COCO metrics Lightning would stop after
    the first validation with a traceback; mrcnn says which keys to set."""
    done = run_command("mrcnn.train", *TINY, "evaluation.coco_metrics=false", cwd=tmp_path)
    assert_one_message(done, "mrcnn train", "monitor=val/segm_AP", "optimized_metric=val/loss")


@pytest.mark.slow  # a whole training run (about 10 s): the message itself is checked above
def test_the_keys_named_without_coco_metrics_make_the_run_work(tmp_path):
    fixed = [*TINY, "evaluation.coco_metrics=false", "optimized_metric=val/loss"]
    done = run_command("mrcnn.train", *fixed, "callbacks.model_checkpoint.mode=min", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))


def test_train_resuming_from_a_file_that_is_no_checkpoint_says_so(tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    done = run_command("mrcnn.train", *TINY, f"ckpt_path={notes}", cwd=tmp_path)
    assert_one_message(done, "mrcnn train", str(notes))


def test_train_reports_a_non_finite_loss_with_its_fix(tmp_path):
    overrides = [*TINY, "optimizer=sgd", "optimizer.lr=1e12", "trainer.gradient_clip_val=null"]
    overrides += ["trainer.max_steps=8", "trainer.val_check_interval=8", "trainer.precision=32"]
    done = run_command("mrcnn.train", *overrides, cwd=tmp_path)
    assert_one_message(done, "mrcnn train", "Non-finite loss at step", "Lower optimizer.lr")
    assert "Non-finite loss" in (tmp_path / "run" / "train.log").read_text()  # the log has it


def test_check_names_a_missing_annotation_file(tmp_path):
    done = run_command("mrcnn.data.check", *missing_coco(tmp_path), cwd=tmp_path)
    assert_one_message(done, "mrcnn check", str(tmp_path / "missing.json"))


def test_predict_names_a_missing_input(tmp_path):
    overrides = ["model=x.ckpt", f"input={tmp_path / 'nothing'}", f"output={tmp_path / 'o'}"]
    done = run_command("mrcnn.predict", *overrides, cwd=tmp_path)
    assert_one_message(done, "mrcnn predict", str(tmp_path / "nothing"))


def test_predict_names_a_required_key_left_unset(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    output = tmp_path / "out"
    done = run_command("mrcnn.predict", f"input={tmp_path}", f"output={output}", cwd=tmp_path)
    assert_one_message(done, "mrcnn predict", "model=FILE.ckpt", "model_path")


def test_evaluate_names_a_missing_checkpoint(tmp_path):
    done = run_command("mrcnn.evaluate", f"model={tmp_path / 'gone.ckpt'}", cwd=tmp_path)
    assert_one_message(done, "mrcnn evaluate", str(tmp_path / "gone.ckpt"))


@pytest.mark.parametrize("module", ["mrcnn.data.check", "mrcnn.train"])
def test_hydra_full_error_shows_the_traceback(module, tmp_path):
    done = run_command(module, *missing_coco(tmp_path), cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert done.returncode != 0 and "Traceback" in done.stderr


def coco_with_files(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """A COCO json of ``count`` 40x60 images with one square each, its images written."""
    from tests.data.tmp_data import coco_json, square, write_image

    images = tmp_path / "images"
    images.mkdir()
    entries, annotations = [], []
    for index in range(count):
        write_image(images / f"{index}.png", 40, 60, seed=index)
        entries.append({"id": index + 1, "file_name": f"{index}.png", "height": 40, "width": 60})
        annotations.append(
            {
                "id": index + 1,
                "image_id": index + 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [square(5, 5, 20)],
            }
        )
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco_json(entries, annotations)))
    return images, path


def coco_train(images: Path, annotations: Path) -> list[str]:
    return [
        *TINY_RUN,
        "data=coco",
        f"data.train.images={images}",
        f"data.train.annotations={annotations}",
        "data.val_fraction=0.25",
        "data.image_size=64",
        "data.max_image_size=64",
        "data.num_workers=0",
        "logger=none",
    ]


def test_train_stops_before_the_first_step_when_an_image_file_is_missing(tmp_path):
    images, annotations = coco_with_files(tmp_path, 8)
    (images / "5.png").unlink()
    done = run_command("mrcnn.train", *coco_train(images, annotations), cwd=tmp_path)
    message = assert_one_message(done, "mrcnn train", str(images / "5.png"), "does not exist")
    assert "image files do not exist" in message and "mrcnn check" in message
    assert not (tmp_path / "run" / "checkpoints").exists(), "no step may run"
    # mrcnn check says the same of that file.
    data = [o for o in coco_train(images, annotations) if o.startswith("data")]
    done = run_command("mrcnn.data.check", *data, cwd=tmp_path)
    assert f"image file {images / '5.png'} does not exist" in done.stdout + done.stderr


def test_an_error_in_a_loader_worker_is_the_same_one_message(tmp_path):
    """A file that exists but cannot be decoded fails in a data loader worker: the user sees the
    reader's message, as from the main process, not the worker's traceback."""
    images, annotations = coco_with_files(tmp_path, 8)
    for index in range(8):  # whichever the first batch holds
        (images / f"{index}.png").write_bytes(b"not a png")
    overrides = [*coco_train(images, annotations), "data.num_workers=1"]
    done = run_command("mrcnn.train", *overrides, cwd=tmp_path)
    message = assert_one_message(done, "mrcnn train", str(images), "as an image")
    assert "DataLoader worker" not in message and "Original Traceback" not in message


def test_a_device_that_is_not_there_is_named_with_its_key(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    done = run_command("mrcnn.train", *TINY, "trainer.accelerator=gpu", cwd=tmp_path)
    assert_one_message(done, "mrcnn train", "trainer.accelerator=gpu", "trainer.accelerator=cpu")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    overrides = ["model=x.ckpt", f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'o'}"]
    done = run_command("mrcnn.predict", *overrides, "device=cuda", cwd=tmp_path)
    assert_one_message(done, "mrcnn predict", "device=cuda", "device=cpu")
