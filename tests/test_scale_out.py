"""Scaling out: two-process DDP, resume after a hard kill, same seed same run, the lr rule.

Every run is a real one: ``python -m mrcnn.train`` subprocesses (DDP, kill and resume) or
in-process Trainer runs on tiny synthetic images, read back from their TensorBoard files.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import mrcnn
from mrcnn.config import compose_config
from mrcnn.evaluate import evaluate
from mrcnn.model.builder import build_maskrcnn
from mrcnn.model.module import MaskRCNNModule
from mrcnn.model.schedule import scaled_lr
from mrcnn.runner import lightning_starts_the_ranks, plain, resolve_ckpt_path
from mrcnn.train import train
from tests.tiny import TINY, TINY_DATA, run_train

REPO = Path(mrcnn.__file__).resolve().parents[1]
# A constant learning rate: train/lr is then exactly the scaled lr.
CONSTANT_LR = ["scheduler=constant", "scheduler.warmup_steps=0"]


def command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "mrcnn.train", *overrides]


def environment() -> dict[str, str]:
    """This checkout first on the path of the subprocess: its mrcnn, and its ``tests`` package
    for the test callbacks (``tests.rank_weights``)."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_train(*overrides, cwd=cwd, env=environment(), timeout=600)


def series(run_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar, as TensorBoard shows it (a resumed run's rewritten steps win)."""
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return {}
    return {event.step: event.value for event in accumulator.Scalars(tag)}


@pytest.mark.slow  # two training processes and an evaluation: about 95 s on a busy 2-core CPU
def test_two_process_ddp_writes_one_run_and_keeps_ranks_identical(tmp_path):
    weights = tmp_path / "weights"
    run(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY,
        "data.val.num_images=3",  # 2 + 2 with one repeat: each image must still count once
        # Heads without BatchNorm (whose statistics are still random after 2 steps) and every
        # detection kept: AP must have something to compare after 2 steps.
        "model=fast",
        "model.detector.box_score_thresh=0.0",
        "trainer.precision=32",  # as mrcnn.evaluate below (auto would pick bf16 on some CPUs)
        *CONSTANT_LR,
        "+callbacks.rank_weights._target_=tests.rank_weights.SaveWeightsPerRank",
        f"+callbacks.rank_weights.dirpath={weights}",
        cwd=tmp_path,
    )
    # One run folder, outputs/<date>/<time> as Hydra names it: none per rank, nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "weights"]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".hydra",
        "checkpoints",
        "config.yaml",
        "tensorboard",
        "train.log",
    ]
    assert list(tmp_path.rglob(".hydra")) == [run_dir / ".hydra"]
    # One writer of TensorBoard events (event file names end in <host>.<pid>.<n>).
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events and {p.parent for p in events} == {run_dir / "tensorboard"}
    assert len({p.name.split(".")[-2] for p in events}) == 1
    log = (run_dir / "train.log").read_text()
    assert log.count("Learning rate:") == 1 and "x 2 devices" in log

    # The global batch is 2 images x 2 processes: optimizer.lr (per 16 images) * 4 / 16.
    lr = compose_config(TINY).optimizer.lr * 4 / 16
    assert series(run_dir, "train/lr") == {0: pytest.approx(lr), 1: pytest.approx(lr)}
    # DDP keeps the processes in step: the same weights on both after every optimizer step.
    # (BatchNorm statistics differ after a step, each process having normalised its own
    # images: DDP copies rank zero's into every process at the start of the next forward.)
    cfg = compose_config([*TINY, "model=fast"])
    model = build_maskrcnn(4, **plain(cfg.backbone), **plain(cfg.model.detector))
    parameters = len(list(model.parameters()))
    steps = {}
    for step in (1, 2):
        rank0 = torch.load(weights / f"step{step}-rank0.pt", weights_only=True)
        rank1 = torch.load(weights / f"step{step}-rank1.pt", weights_only=True)
        assert len(rank0["parameters"]) == parameters  # every parameter of the model
        for name, value in rank0["parameters"].items():
            assert torch.equal(value, rank1["parameters"][name]), (step, name)
        steps[step] = rank0["parameters"]
    name = "model.roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert not torch.equal(steps[1][name], steps[2][name])  # the step did change the weights
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    for name, value in {**rank0["parameters"], **rank0["buffers"]}.items():
        assert torch.equal(value, saved["state_dict"][name]), name

    # Validation at step 2 gathered both ranks' detections and evaluated the 3 images once:
    # the same numbers as one process evaluating the whole validation set with those weights.
    tags = ("bbox_AP", "bbox_AP50", "bbox_AR100", "segm_AP", "segm_AR100")
    logged = {tag: list(series(run_dir, f"val/{tag}").values()) for tag in tags}
    assert all(len(values) == 1 for values in logged.values())  # one validation, at the end
    single = evaluate(
        compose_config(
            [
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                *TINY_DATA,
                "data.val.num_images=3",
                f"output={tmp_path / 'metrics.json'}",
            ],
            output_dir=tmp_path,
            config_name="evaluate",
        )
    )
    assert single["bbox_AR100"] > 0  # the model finds something: the numbers can differ
    for tag, (value,) in logged.items():
        assert value == pytest.approx(single[tag], abs=1e-6), tag


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
    run(*RESUME, f"hydra.run.dir={whole}", cwd=tmp_path)

    process = subprocess.Popen(
        command(*RESUME, f"hydra.run.dir={killed}", *PAUSE_AFTER_STEP_4),
        cwd=tmp_path,
        env=environment(),
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
    run("ckpt_path=last", f"hydra.run.dir={killed}", cwd=tmp_path)

    for tag in ("train/loss_step", "train/loss_mask_step", "train/lr"):
        expected = series(whole, tag)
        assert sorted(expected) == list(range(5))
        assert series(killed, tag) == expected, tag
    resumed = MaskRCNNModule.load_from_checkpoint(last, load_weights=False, weights_only=True)
    assert torch.load(last, weights_only=True)["global_step"] == 5
    uninterrupted = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, uninterrupted["state_dict"][key]), key


def test_ddp_in_a_multirun_is_refused_with_the_way_out(tmp_path):
    result = subprocess.run(
        command("-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2"),
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "trainer=ddp inside a Hydra multirun (-m) is not supported" in result.stderr


def test_ddp_sweeps_are_allowed_where_the_cluster_starts_every_rank(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert lightning_starts_the_ranks()  # a plain machine: refused above
    monkeypatch.setenv("SLURM_NTASKS", "8")  # what srun sets for a submitit/SLURM job
    monkeypatch.setenv("SLURM_JOB_NAME", "mrcnn-sweep")
    assert not lightning_starts_the_ranks()


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


@pytest.mark.parametrize(
    ("batch", "world", "accumulate", "expected"),
    [
        (2, 8, 1, 0.02),  # torchvision's reference: 8 GPUs x 2 images at lr 0.02
        (4, 1, 1, 0.005),  # the default CPU run
        (4, 4 * 2, 1, 0.04),  # trainer.devices=4 trainer.num_nodes=2
        (2, 2, 4, 0.02),  # 2 processes, 4 accumulated batches
    ],
)
def test_lr_grows_linearly_with_the_global_batch(batch, world, accumulate, expected):
    assert scaled_lr(0.02, batch, world, accumulate, 16) == pytest.approx(expected)
