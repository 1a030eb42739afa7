"""A run that is told to stop (SIGUSR1, SIGTERM, as SLURM sends them) or that fails half-way
leaves a checkpoint of its last completed step, says how to continue, and continues from it to
exactly the losses and weights of a run never stopped."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mrcnn.config import compose_config
from mrcnn.model.module import NonFiniteLossError
from mrcnn.train import train
from tests.data.tmp_data import coco_json, square, write_image
from tests.events import series
from tests.tiny import TINY, assert_one_message, checkout_env, run_train, train_command

# 12 training images (6 steps an epoch), 2 validation images; 5 steps, validated at step 4 and
# at the end. No periodic checkpoint before the end: the one a stopped run has is the stop's.
RUN = [
    "data=coco",
    "data.train.images=train",
    "data.train.annotations=train.json",
    "data.val.images=val",
    "data.val.annotations=val.json",
    "data.num_workers=0",
    "data.image_size=128",
    "data.max_image_size=128",
    "data.batch_size=2",
    "trainer.precision=32",
    "trainer.max_steps=5",
    "trainer.val_check_interval=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "evaluation.image_panels=1",
    "callbacks.last_checkpoint.every_n_train_steps=100",
]
TRAINING_TAGS = ("train/loss_step", "train/loss_mask_step", "train/lr")
# A SLURM batch job as Lightning detects it (SLURMEnvironment), one task.
SLURM_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}


def write_split(folder: Path, name: str, count: int, seed: int) -> None:
    """``folder/<name>/`` with ``count`` 128 px images of two squares each (two classes), and
    ``folder/<name>.json``."""
    (folder / name).mkdir()
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(count):
        write_image(folder / name / f"{i}.png", 128, 128, seed=seed * 100 + i)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 128, "width": 128})
        for category in (3, 7):
            x, y = (float(v) for v in rng.integers(5, 80, 2))
            size = float(rng.integers(16, 40))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentation": [square(x, y, size)],
                    "bbox": [x, y, size, size],
                    "area": size * size,
                }
            )
    (folder / f"{name}.json").write_text(json.dumps(coco_json(images, annotations)))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("coco")
    write_split(folder, "train", 12, seed=1)
    write_split(folder, "val", 2, seed=2)
    return folder


@pytest.fixture(scope="module")
def whole(data) -> Path:
    """The run never stopped."""
    run_train(*RUN, "hydra.run.dir=whole", cwd=data)
    return data / "whole"


def waiting_at(step: int, control: Path) -> list[str]:
    """Overrides that hold a fresh run after ``step`` until ``control/go`` exists."""
    return [
        "+callbacks.wait._target_=tests.rank_weights.WaitAtStep",
        f"+callbacks.wait.step={step}",
        f"+callbacks.wait.dirpath={control}",
    ]


def held_run(
    args: list[str], cwd: Path, control: Path, act, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m mrcnn.train <args>`` in ``cwd``, held by :func:`waiting_at`: once it waits,
    ``act(process)`` runs (send a signal, break files), then the run goes on to its end."""
    out, err = cwd / f"{control.name}.out", cwd / f"{control.name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            train_command(*args), cwd=cwd, env=checkout_env(env), stdout=stdout, stderr=stderr
        )
        try:
            deadline = time.monotonic() + 600
            while not (control / "waiting").exists() and time.monotonic() < deadline:
                assert process.poll() is None, err.read_text()[-3000:]
                time.sleep(0.1)
            assert (control / "waiting").exists(), "the run never reached its step"
            act(process)
            (control / "go").touch()
            process.wait(timeout=600)
        finally:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(args, process.returncode, out.read_text(), err.read_text())


def assert_same_training(run_dir: Path, whole: Path) -> None:
    """Every step's losses and learning rate, and the final weights, as in the run never
    stopped."""
    for tag in TRAINING_TAGS:
        expected = series(whole, tag)
        assert sorted(expected) == list(range(5)), tag
        assert series(run_dir, tag) == expected, tag
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    uninterrupted = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(last["state_dict"][key], value), key


@pytest.mark.slow  # two training processes each (and the shared one): about 2 minutes
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_a_signalled_run_saves_its_step_and_resumes_to_the_same_losses(data, whole, signum):
    name = signal.Signals(signum).name
    run_dir, control = f"stopped-{name}", data / f"control-{name}"
    command = [*RUN, f"hydra.run.dir={run_dir}", *waiting_at(3, control)]
    env = None
    if signum == signal.SIGUSR1:
        # A SLURM batch job (--signal=USR1@90): the run requeues itself, with SLURM's
        # scontrol (here a stand-in that writes down how it was called).
        scontrol = data / "bin" / "scontrol"
        scontrol.parent.mkdir(exist_ok=True)
        scontrol.write_text(f'#!/bin/sh\necho "$@" >> {data / "scontrol.log"}\n')
        scontrol.chmod(0o755)
        env = {**os.environ, **SLURM_JOB, "PATH": f"{scontrol.parent}:{os.environ['PATH']}"}

    done = held_run(command, data, control, lambda process: process.send_signal(signum), env)

    # Signalled while it waited after step 3: it finishes that step (none began) and stops.
    assert done.returncode == 128 + signum, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (
        f"mrcnn train: Stopped by {name} after step 3. Step 3 is saved in "
        f"{run_dir}/checkpoints/last.ckpt. Continue with: mrcnn train ckpt_path=last "
        f"hydra.run.dir={run_dir}\n"
    ) in done.stderr
    saved = torch.load(data / run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3

    if signum == signal.SIGUSR1:
        assert (data / "scontrol.log").read_text() == "requeue 4242\n"
        # SLURM starts the requeued job: the same command, SLURM_RESTART_COUNT=1.
        requeued = {**env, "SLURM_RESTART_COUNT": "1"}
        result = run_train(*command, cwd=data, env=requeued)
        assert "SLURM restarted this job (SLURM_RESTART_COUNT=1): resuming from" in (
            result.stdout + result.stderr
        )
    else:
        run_train("ckpt_path=last", f"hydra.run.dir={run_dir}", cwd=data)
    assert_same_training(data / run_dir, whole)
    # The validation at step 4 came after the stop: it is the same too.
    assert series(data / run_dir, "val/loss") == series(whole, "val/loss")


def break_images(folder: Path) -> dict[Path, bytes]:
    """Make every image of ``folder`` unreadable (a disk or a network share that went away);
    return what they held."""
    kept = {path: path.read_bytes() for path in folder.glob("*.png")}
    for path in kept:
        path.write_bytes(b"not an image any more")
    return kept


@pytest.mark.slow  # two training processes each (and the shared one): about 2 minutes
@pytest.mark.parametrize(
    ("broken", "wait_step", "failed_step"),
    [("train", 2, 3), ("val", 3, 4)],
    ids=["in-training", "in-validation"],
)
def test_a_run_that_fails_resumes_from_its_last_step(data, whole, broken, wait_step, failed_step):
    run_dir, control = f"failed-{broken}", data / f"control-{broken}"
    kept: dict[Path, bytes] = {}

    def break_data(process: subprocess.Popen) -> None:
        kept.update(break_images(data / broken))

    try:
        done = held_run(
            [*RUN, f"hydra.run.dir={run_dir}", *waiting_at(wait_step, control)],
            data,
            control,
            break_data,
        )
    finally:
        for path, content in kept.items():
            path.write_bytes(content)
    # The images broke after step `wait_step`: the loader had read the next batch already (the
    # training data), or validation at step 4 read them (the validation data).
    assert_one_message(
        done,
        "mrcnn train",
        f"{broken}.json image id",
        "cannot read",
        f"Step {failed_step} is saved in {run_dir}/checkpoints/last.ckpt. Continue with: "
        f"mrcnn train ckpt_path=last hydra.run.dir={run_dir}",
    )
    saved = torch.load(data / run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == failed_step

    run_train("ckpt_path=last", f"hydra.run.dir={run_dir}", cwd=data)
    assert_same_training(data / run_dir, whole)


NAN = [
    *TINY,
    "optimizer.lr=1e12",  # the first step throws the weights far: the second loss is NaN
    "scheduler=constant",
    "scheduler.warmup_steps=0",
    "trainer.limit_val_batches=0",
    "on_nonfinite_loss=raise",
]


def test_a_non_finite_loss_leaves_the_step_before_it(tmp_path):
    with pytest.raises(NonFiniteLossError, match="Non-finite loss at step 1") as raised:
        train(compose_config([*NAN, "trainer.max_steps=3"], output_dir=tmp_path / "failed"))
    saved = tmp_path / "failed" / "checkpoints" / "last.ckpt"
    assert raised.value.__notes__ == [
        f"Step 1 is saved in {saved}. Continue with: mrcnn train ckpt_path=last "
        f"hydra.run.dir={tmp_path / 'failed'}"
    ]
    # Exactly the state after step 1: a run that ends there has the same weights and
    # BatchNorm statistics (the failed forward pass had moved them) and random state.
    train(compose_config([*NAN, "trainer.max_steps=1"], output_dir=tmp_path / "one_step"))
    failed = torch.load(saved, weights_only=True)
    one_step = torch.load(tmp_path / "one_step" / "checkpoints" / "last.ckpt", weights_only=True)
    assert failed["global_step"] == one_step["global_step"] == 1
    assert failed["state_dict"].keys() == one_step["state_dict"].keys()
    for key, value in one_step["state_dict"].items():
        assert torch.equal(failed["state_dict"][key], value), key
    assert torch.equal(failed["rng_states"][0]["torch"], one_step["rng_states"][0]["torch"])
