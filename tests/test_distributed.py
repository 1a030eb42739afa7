"""Distributed runs: two-process DDP writes one run with identical ranks; DDP inside a Hydra
multirun is refused where Lightning would start the ranks, allowed where the cluster starts them."""

import subprocess

import pytest
import torch

from mrcnn.builders import plain
from mrcnn.config import compose_config
from mrcnn.distributed import lightning_starts_the_ranks
from mrcnn.evaluate import evaluate
from mrcnn.model.builder import build_maskrcnn
from tests.events import series
from tests.tiny import TINY, TINY_DATA, checkout_env, run_train, train_command

# A constant learning rate: train/lr is then exactly the scaled lr.
CONSTANT_LR = ["scheduler=constant", "scheduler.warmup_steps=0"]


@pytest.mark.slow  # two training processes and an evaluation: about 95 s on a busy 2-core CPU
def test_two_process_ddp_writes_one_run_and_keeps_ranks_identical(tmp_path):
    weights = tmp_path / "weights"
    run_train(
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
                f"model_path={run_dir / 'checkpoints' / 'last.ckpt'}",
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


def test_ddp_in_a_multirun_is_refused_with_the_way_out(tmp_path):
    result = subprocess.run(
        train_command(
            "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2"
        ),
        cwd=tmp_path,
        env=checkout_env(),
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
