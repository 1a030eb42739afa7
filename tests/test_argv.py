"""The command line before Hydra reads it: model=FILE, old spellings read under their new names
with a notice, and one message when an override needs an extra that is not installed."""

import subprocess
import sys

from omegaconf import OmegaConf

from mrcnn import argv
from tests.tiny import checkout_env


def test_model_is_a_file_in_evaluate_predict_and_export_and_a_group_in_train():
    for command in ("evaluate", "predict", "export"):
        assert argv.rewrite(command, ["model=m.onnx"]) == (["model_path=m.onnx"], [])
    assert argv.rewrite("train", ["model=light"]) == (["model=light"], [])


def test_old_spellings_are_read_under_the_shared_keys_with_a_notice():
    args, notices = argv.rewrite(
        "evaluate", ["ckpt_path=a.ckpt", "max_detections=300", "worst=2", "backend=pycocotools"]
    )
    assert args == [
        "model_path=a.ckpt",
        "evaluation.max_detections=300",
        "worst=2",
        "evaluation.backend=pycocotools",
    ]
    assert len(notices) == 3
    assert "ckpt_path= is now model=" in notices[0]
    assert "max_detections= is now evaluation.max_detections=" in notices[1]
    args, notices = argv.rewrite("predict", ["score_threshold=0.3", "mask_threshold=0.4"])
    assert args == ["evaluation.score_threshold=0.3", "evaluation.mask_threshold=0.4"]
    args, _ = argv.rewrite("train", ["evaluation.panel_score_threshold=0.7", "ckpt_path=last"])
    assert args == ["evaluation.score_threshold=0.7", "ckpt_path=last"]  # train resumes


def test_an_old_spelling_on_the_command_line_composes_the_new_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mrcnn", "evaluate", "max_detections=300", "--cfg", "job"],
        cwd=tmp_path,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "max_detections= is now evaluation.max_detections=" in done.stderr
    assert OmegaConf.create(done.stdout).evaluation.max_detections == 300


def test_an_override_that_needs_a_missing_plugin_is_named_with_the_extra(monkeypatch):
    monkeypatch.setitem(argv.PLUGINS, "hydra/launcher=slurm", "hydra_plugins.not_installed_here")
    assert argv.missing_extras(["a=1", "hydra/launcher=slurm"]) == [
        ("hydra/launcher=slurm", "hydra_plugins.not_installed_here")
    ]
    assert argv.missing_extras(["hparams_search=optuna"]) == []  # the dev install has it
