"""Overrides that make a real training run take seconds on a 2-core CPU, and the ways the tests
run a command as a user types it and check how it failed (shared by the tests)."""

import os
import subprocess
import sys
from pathlib import Path

from mrcnn.errors import EXIT_USER_ERROR

# The checkout under test: a subprocess must import its mrcnn, not the installed one (a git
# worktree's tests would otherwise run the main checkout's code).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Any data set: a few steps, one validation, quiet. In float32 on every CPU: `auto` picks bf16
# on CPUs with bf16 hardware (AMX, AVX512-BF16) and float32 elsewhere, and the tests check
# behaviour, not the precision probe (tests/test_schedule_precision.py does that).
TINY_RUN = [
    "trainer.precision=32",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "evaluation.image_panels=2",
]
# The synthetic set: few, small images.
TINY_DATA = [
    "data.num_workers=0",
    "data.train.num_images=8",
    "data.val.num_images=2",
    "data.image_size=128",
    "data.max_image_size=128",
    "data.batch_size=2",
]
TINY = TINY_DATA + TINY_RUN
# The same data for `mrcnn evaluate` (the validation split the tiny runs hold out).
TINY_EVAL_DATA = list(TINY_DATA)
# A 2-step run: a real checkpoint with weak but real detections (tests/conftest.py:
# tiny_checkpoint).
TINY_CHECKPOINT_RUN = [*TINY, "logger=none", "trainer.limit_val_batches=0"]


def checkout_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with this checkout first on ``PYTHONPATH``: a
    subprocess imports its mrcnn, and its ``tests`` package (test callbacks)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd``, as a user runs it (with this checkout's mrcnn
    first on the path); the test fails with the output's tail when the command fails."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=checkout_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def train_command(*args: str) -> list[str]:
    """``python -m mrcnn.train <args>`` as an argument list (for ``subprocess.Popen``)."""
    return [sys.executable, "-m", "mrcnn.train", *args]


def run_train(*args: str, cwd: Path, **options) -> subprocess.CompletedProcess:
    """``python -m mrcnn.train <args>`` (see :func:`run_module`)."""
    return run_module("mrcnn.train", *args, cwd=cwd, **options)


# A light model trained long enough to find the shapes (segm AP about 0.4-0.55 on 128 px
# validation images), for the tests that need a model that really detects: export parity and
# tiling. float32 and two threads, so that the model is much the same on every CPU kind;
# box_score_thresh=0 so that every image has detections (up to 20) to compare. About 2.5 minutes
# on a 2-core CPU; trained once per test session (tests/conftest.py: trained_checkpoint).
TRAINED_RUN = [
    *TINY_DATA,
    "data.train.num_images=400",
    "data.val.num_images=4",
    "data.batch_size=4",
    "model=light",
    "model.detector.box_score_thresh=0.0",
    "logger=none",
    "trainer.precision=32",
    "trainer.max_steps=600",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
]
TRAINED_THREADS = 2


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


def coco128_as_validation(coco_dir: Path) -> list[str]:
    """All of coco128 as the validation set (its own json, crowd regions and ids included)."""
    images, annotations = coco_dir / "val2017", coco_dir / "annotations/instances_val2017.json"
    return [
        "data=coco",
        f"data.train.images={images}",
        f"data.train.annotations={annotations}",
        f"data.val.images={images}",
        f"data.val.annotations={annotations}",
        "data.num_workers=0",
    ]
