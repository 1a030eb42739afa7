"""One way to fail: every command reports a user error as one message, without a traceback, with
exit status 1, and HYDRA_FULL_ERROR=1 brings the traceback back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mrcnn.errors import EXIT_USER_ERROR
from tests.tiny import PROJECT_ROOT, TINY


def run_command(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user types it; its exit status is not checked."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(PYTHONPATH=str(PROJECT_ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", module, *args, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_message(done: subprocess.CompletedProcess, command: str, *expected: str) -> str:
    """The run failed the documented way: exit status 1, ``<command>: error: ...`` on stderr
    naming ``expected``, no traceback and none of Hydra's wrapping around the message."""
    printed = done.stdout + done.stderr
    assert done.returncode == EXIT_USER_ERROR, printed[-3000:]
    assert f"{command}: error: " in done.stderr, printed[-3000:]
    message = done.stderr[done.stderr.index(f"{command}: error: ") :]
    for text in expected:
        assert text in message, message
    for noise in ("Traceback", "Error executing job", "Error in call to target", "\\n"):
        assert noise not in printed, printed[-3000:]
    return message


def missing_coco(tmp_path: Path) -> list[str]:
    return [
        "data=coco",
        f"data.train.images={tmp_path}",
        f"data.train.annotations={tmp_path / 'missing.json'}",
    ]


def test_train_names_a_missing_annotation_file(tmp_path):
    done = run_command("mrcnn.train", *missing_coco(tmp_path), cwd=tmp_path)
    assert_one_message(done, "mrcnn.train", str(tmp_path / "missing.json"))


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
    message = assert_one_message(done, "mrcnn.train")
    assert str(path) in message and len(message.strip().splitlines()) > 2, message


def test_train_reports_a_bad_config_value_by_its_key(tmp_path):
    done = run_command("mrcnn.train", *TINY, "trainer.precision=17", cwd=tmp_path)
    assert_one_message(done, "mrcnn.train", "trainer.precision", "'17'")


def test_train_without_coco_metrics_names_the_monitor_to_change(tmp_path):
    """The best checkpoint watches val/segm_AP: without COCO metrics Lightning would stop after
    the first validation with a traceback; mrcnn says which keys to set, and they work."""
    done = run_command("mrcnn.train", *TINY, "evaluation.coco_metrics=false", cwd=tmp_path)
    assert_one_message(done, "mrcnn.train", "monitor=val/segm_AP", "optimized_metric=val/loss")
    fixed = [*TINY, "evaluation.coco_metrics=false", "optimized_metric=val/loss"]
    done = run_command("mrcnn.train", *fixed, "callbacks.model_checkpoint.mode=min", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))


def test_train_resuming_from_a_file_that_is_no_checkpoint_says_so(tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    done = run_command("mrcnn.train", *TINY, f"ckpt_path={notes}", cwd=tmp_path)
    assert_one_message(done, "mrcnn.train", str(notes))


def test_train_reports_a_non_finite_loss_with_its_fix(tmp_path):
    overrides = [*TINY, "optimizer=sgd", "optimizer.lr=1e12", "trainer.gradient_clip_val=null"]
    overrides += ["trainer.max_steps=8", "trainer.val_check_interval=8", "trainer.precision=32"]
    done = run_command("mrcnn.train", *overrides, cwd=tmp_path)
    assert_one_message(done, "mrcnn.train", "Non-finite loss at step", "Lower optimizer.lr")
    assert "Non-finite loss" in (tmp_path / "run" / "train.log").read_text()  # the log has it


def test_check_names_a_missing_annotation_file(tmp_path):
    done = run_command("mrcnn.data.check", *missing_coco(tmp_path), cwd=tmp_path)
    assert_one_message(done, "mrcnn.data.check", str(tmp_path / "missing.json"))


def test_predict_names_a_missing_input(tmp_path):
    overrides = ["ckpt_path=x.ckpt", f"input={tmp_path / 'nothing'}", f"output={tmp_path / 'o'}"]
    done = run_command("mrcnn.predict", *overrides, cwd=tmp_path)
    assert_one_message(done, "mrcnn.predict", str(tmp_path / "nothing"))


def test_predict_names_a_required_key_left_unset(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    output = tmp_path / "out"
    done = run_command("mrcnn.predict", f"input={tmp_path}", f"output={output}", cwd=tmp_path)
    assert_one_message(done, "mrcnn.predict", "ckpt_path")


def test_evaluate_names_a_missing_checkpoint(tmp_path):
    done = run_command("mrcnn.evaluate", f"ckpt_path={tmp_path / 'gone.ckpt'}", cwd=tmp_path)
    assert_one_message(done, "mrcnn.evaluate", str(tmp_path / "gone.ckpt"))


@pytest.mark.parametrize("module", ["mrcnn.data.check", "mrcnn.train"])
def test_hydra_full_error_shows_the_traceback(module, tmp_path):
    done = run_command(module, *missing_coco(tmp_path), cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert done.returncode != 0 and "Traceback" in done.stderr
