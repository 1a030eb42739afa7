"""Overrides that make a real training run take seconds on a 2-core CPU, and the one way the
tests run a command (shared by the tests)."""

import os
import subprocess
import sys
from pathlib import Path

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


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd``, as a user runs it (with this checkout's mrcnn
    first on the path); the test fails with the output's tail when the command fails."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


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
