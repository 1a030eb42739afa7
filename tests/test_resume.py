"""Resuming: a run killed hard resumes to the same steps as an uninterrupted one, ckpt_path=last
names what is missing, and the same seed gives the same losses step for step."""

import signal
import subprocess
import time

import pytest
import torch

from mrcnn.config import compose_config
from mrcnn.model.module import MaskRCNNModule
from mrcnn.resume import resolve_ckpt_path
from mrcnn.train import train
from tests.events import series
from tests.tiny import TINY, checkout_env, run_train, train_command

# A constant learning rate: train/lr is then exactly the scaled lr.
CONSTANT_LR = ["scheduler=constant", "scheduler.warmup_steps=0"]


RESUME = [
    *TINY,
    "data.train.num_images=6",  # 3 steps per epoch: the checkpoint at step 4 is mid-epoch 2
    "trainer.max_steps=5",
    "callbacks.last_checkpoint.every_n_train_steps=4",
    "trainer.limit_val_batches=0",
]


# The killed run waits after step 4 (its checkpoint written, its logs flushed) until it is
# killed; the resumed run comes back with these overrides but does not wait.
PAUSE_AFTER_STEP_4 = [
    "+callbacks.pause._target_=tests.rank_weights.PauseAfterStep",
    "+callbacks.pause.step=4",
]


@pytest.mark.slow  # three training processes: about 4 minutes on a busy 2-core CPU
def test_run_killed_hard_resumes_with_the_same_steps_as_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_train(*RESUME, f"hydra.run.dir={whole}", cwd=tmp_path)

    process = subprocess.Popen(
        train_command(*RESUME, f"hydra.run.dir={killed}", *PAUSE_AFTER_STEP_4),
        cwd=tmp_path,
        env=checkout_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 300
        # Killed once step 4 is saved and its losses are on disk (checkpoints flush the logs).
        while process.poll() is None and time.monotonic() < deadline:
            if last.exists() and 3 in series(killed, "train/loss_step"):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert torch.load(last, weights_only=True)["global_step"] == 4

    # The documented command: the overrides come back from the checkpoint.
    run_train("ckpt_path=last", f"hydra.run.dir={killed}", cwd=tmp_path)

    for tag in ("train/loss_step", "train/loss_mask_step", "train/lr"):
        expected = series(whole, tag)
        assert sorted(expected) == list(range(5))
        assert series(killed, tag) == expected, tag
    resumed = MaskRCNNModule.load_from_checkpoint(last, load_weights=False, weights_only=True)
    assert torch.load(last, weights_only=True)["global_step"] == 5
    uninterrupted = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, uninterrupted["state_dict"][key]), key


def test_ckpt_path_last_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoints" / "last.ckpt")):
        resolve_ckpt_path("last", tmp_path)


def test_same_seed_same_losses_step_for_step(tmp_path):
    def losses(folder: str) -> dict[str, dict[int, float]]:
        overrides = [*TINY, *CONSTANT_LR, "trainer.max_steps=3", "trainer.limit_val_batches=0"]
        overrides.append("callbacks=none")
        train(compose_config(overrides, output_dir=tmp_path / folder))
        return {tag: series(tmp_path / folder, tag) for tag in ("train/loss_step", "train/lr")}

    first, second = losses("a"), losses("b")
    assert len(first["train/loss_step"]) == 3
    assert first == second
    base_lr = compose_config(TINY).optimizer.lr  # per 16 images; TINY trains on batches of 2
    assert list(first["train/lr"].values()) == pytest.approx([base_lr * 2 / 16] * 3)
