"""`mrcnn <command>`: the commands a user types, run as they would type them (in a scratch working
directory), through the ``mrcnn`` script, ``python -m mrcnn`` and the per-command scripts."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mrcnn.cli import COMMANDS
from mrcnn.precision import cpu_has_native_bf16
from tests.tiny import TINY, assert_one_message, checkout_env, run_module, run_train


def mrcnn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mrcnn <args>`` (this checkout's), its exit status not checked."""
    return subprocess.run(
        [sys.executable, "-m", "mrcnn", *args],
        cwd=cwd,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_every_command_and_version_is_the_installed_one(tmp_path):
    done = mrcnn("--help", cwd=tmp_path)
    assert done.returncode == 0
    for name in ("train", "evaluate", "predict", "export", "check"):
        assert f"  {name} " in done.stdout
    done = mrcnn("--version", cwd=tmp_path)
    assert done.stdout.strip() == f"mrcnn {metadata.version('mrcnn')}"


def test_a_reader_that_stops_early_ends_help_without_a_traceback(tmp_path):
    # `mrcnn train --help | head -1`: the pipe is closed before the help is written (the
    # command's imports take seconds), so every write and the final flush meet a closed pipe.
    child = subprocess.Popen(
        [sys.executable, "-m", "mrcnn", "train", "--help"],
        cwd=tmp_path,
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=300) == 1
    assert stderr == "", stderr[-2000:]


def test_an_unknown_command_names_the_choices(tmp_path):
    done = mrcnn("trian", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown command 'trian'" in done.stderr and "train, evaluate" in done.stderr


# slow: 72 s alone (a Python start per command and flag); the default suite stays under 15 min
@pytest.mark.slow
def test_every_command_keeps_hydras_help_and_cfg(tmp_path):
    for name in COMMANDS:
        done = mrcnn(name, "--help", cwd=tmp_path)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        done = mrcnn(name, "--cfg", "job", cwd=tmp_path)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        OmegaConf.create(done.stdout)  # the composed config, as YAML
    assert not (tmp_path / "outputs").exists(), "--help/--cfg must not start a run"


def test_design_card_command_trains_and_writes_the_outputs_layout(tmp_path):
    result = run_module(
        "mrcnn", "train", *TINY, "backbone=resnet101", "trainer.precision=16", "seed=3",
        "trainer.limit_val_batches=1", cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    # bf16 autocast where the CPU has bf16 hardware, float32 where bf16 would be emulated
    chosen = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert f"trainer.precision=16 on CPU -> {chosen}" in output
    assert "litlogger" not in output  # Lightning's advertisement at every start
    (run_dir,) = (tmp_path / "outputs").glob("????-??-??/??-??-??")
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.backbone.name == "resnet101" and saved.seed == 3
    assert "${" not in (run_dir / "config.yaml").read_text(), "config.yaml must be resolved"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert last["hyper_parameters"]["backbone"]["name"] == "resnet101"


def test_multirun_writes_one_directory_per_job(tmp_path):
    run_module(
        "mrcnn", "train", "-m", "optimizer.lr=0.01,0.02", *TINY, "trainer.max_steps=2",
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    assert [OmegaConf.load(p / "config.yaml").optimizer.lr for p in jobs] == [0.01, 0.02]
    for job in jobs:
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), job


def test_train_help_lists_config_groups_and_cfg_job_prints_config(tmp_path):
    help_text = run_train("--help", cwd=tmp_path).stdout
    assert "backbone: resnet101, resnet18, resnet34, resnet50, resnet50_v2" in help_text
    assert "mrcnn train backbone=resnet101 trainer.precision=16" in help_text
    job = OmegaConf.create(run_train("--cfg", "job", cwd=tmp_path).stdout)
    assert job.backbone.name == "resnet18" and job.data.image_size == 128
    assert not (tmp_path / "outputs").exists(), "--help/--cfg must not start a run"


# slow: 56 s alone (every installed script started); the default suite stays under 15 min
@pytest.mark.slow
def test_installed_scripts_find_their_config(tmp_path):
    """Every ``[project.scripts]`` entry works as ``python -m`` does, ``model=FILE`` included
    (scripts once failed with "Primary config module 'conf' not found")."""
    from PIL import Image

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name(name)), *args, f"hydra.run.dir={tmp_path}/run"],
            cwd=tmp_path,
            env=checkout_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    for name in ("mrcnn-train", "mrcnn-evaluate", "mrcnn-predict", "mrcnn-export", "mrcnn-check"):
        done = script(name, "--help")
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert f"mrcnn {name.removeprefix('mrcnn-')}" in done.stdout
    assert "backbone: resnet101, resnet18" in script("mrcnn-train", "--help").stdout
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    done = script("mrcnn-predict", f"model={tmp_path}/m.onnx", f"input={tmp_path}", "output=o")
    assert_one_message(done, "mrcnn predict", "m.onnx: no such file")
    done = script("mrcnn", "predict", f"model={tmp_path}/m.onnx", f"input={tmp_path}", "output=o")
    assert_one_message(done, "mrcnn predict", "m.onnx: no such file")
