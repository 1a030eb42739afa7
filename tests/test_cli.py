"""The commands a user types, run as they would type them (in a scratch working directory)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from mrcnn.config import CONFIG_DIR, compose_config
from tests.tiny import TINY, run_train

GROUPS = ["backbone", "data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"]


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, p.stem) for group in GROUPS for p in sorted((CONFIG_DIR / group).glob("*.yaml"))],
)
def test_every_config_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    # Every interpolation resolves (values a user must fill in, ???, may stay missing).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.paths.output_dir == str(tmp_path.resolve())


def test_unknown_backbone_names_the_choices(tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)Could not find.*resnet101.*resnet50"):
        compose_config(["backbone=resnet19"], output_dir=tmp_path)


def test_design_card_command_trains_and_writes_the_outputs_layout(tmp_path):
    result = run_train(
        *TINY,
        "backbone=resnet101",
        "trainer.precision=16",
        "seed=3",
        "trainer.limit_val_batches=1",
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    # bf16 autocast where the CPU has bf16 hardware, float32 where bf16 would be emulated
    chosen = "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"
    assert f"trainer.precision=16 on CPU -> {chosen}" in output
    (run_dir,) = (tmp_path / "outputs").glob("????-??-??/??-??-??")
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.backbone.name == "resnet101" and saved.seed == 3
    assert "${" not in (run_dir / "config.yaml").read_text(), "config.yaml must be resolved"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert last["hyper_parameters"]["backbone"]["name"] == "resnet101"


def test_multirun_writes_one_directory_per_job(tmp_path):
    run_train(
        "-m",
        "optimizer.lr=0.01,0.02",
        "trainer.max_steps=2",
        *TINY,
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    assert [OmegaConf.load(p / "config.yaml").optimizer.lr for p in jobs] == [0.01, 0.02]
    for job in jobs:
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), job


def test_help_lists_config_groups_and_cfg_job_prints_config(tmp_path):
    help_text = run_train("--help", cwd=tmp_path).stdout
    assert "backbone: resnet101, resnet18, resnet34, resnet50, resnet50_v2" in help_text
    assert "python -m mrcnn.train backbone=resnet101 trainer.precision=16" in help_text
    job = OmegaConf.create(run_train("--cfg", "job", cwd=tmp_path).stdout)
    assert job.backbone.name == "resnet18" and job.data.image_size == 128
    assert not (tmp_path / "outputs").exists(), "--help/--cfg must not start a run"


def test_installed_scripts_find_their_config(tmp_path):
    """``mrcnn-train`` and ``mrcnn-predict`` (``[project.scripts]``) work as ``python -m`` does,
    ``model=FILE`` included (they failed with "Primary config module 'conf' not found")."""
    from PIL import Image

    from tests.test_errors import assert_one_message

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name(name)), *args, f"hydra.run.dir={tmp_path}/run"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = script("mrcnn-train", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backbone: resnet101, resnet18" in done.stdout
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    done = script("mrcnn-predict", f"model={tmp_path}/m.onnx", f"input={tmp_path}", "output=o")
    assert_one_message(done, "mrcnn.predict", "m.onnx: no such file")


def test_tuned_settings_specialise_only_their_data_and_optimizer_pair():
    tuned = OmegaConf.load(CONFIG_DIR / "tuned" / "synthetic_adamw.yaml")
    tuned_sgd = OmegaConf.load(CONFIG_DIR / "tuned" / "synthetic_sgd.yaml")
    sgd = OmegaConf.load(CONFIG_DIR / "optimizer" / "sgd.yaml")
    adamw = OmegaConf.load(CONFIG_DIR / "optimizer" / "adamw.yaml")
    assert tuned.optimizer.lr != adamw.lr  # otherwise this test proves nothing
    assert compose_config().optimizer.lr == tuned.optimizer.lr  # the default run
    assert compose_config(["trainer=cpu"]).trainer.max_steps == tuned.trainer.max_steps
    assert compose_config(["optimizer=sgd"]).optimizer.lr == tuned_sgd.optimizer.lr
    assert compose_config(["data=coco128"]).optimizer.lr == adamw.lr
    assert compose_config(["data=coco128", "optimizer=sgd"]).optimizer.lr == sgd.lr
    assert compose_config(["optimizer.lr=0.005"]).optimizer.lr == 0.005  # the command line wins
