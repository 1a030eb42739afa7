"""Distributed runs: two-process DDP writes one run with identical ranks; so do two nodes on one
machine, started by torchrun or by the SLURM launcher (sbatch and srun stood in for), and both
resume; a non-finite loss on one rank stops them all; DDP inside a Hydra multirun is refused
where Lightning would start the ranks, allowed where the cluster starts them."""

import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from mrcnn.builders import plain
from mrcnn.config import compose_config
from mrcnn.distributed import lightning_starts_the_ranks
from mrcnn.errors import EXIT_USER_ERROR
from mrcnn.evaluate import evaluate
from mrcnn.model.builder import build_maskrcnn
from tests import fake_slurm
from tests.events import series
from tests.launch import clean_env, docs_torchrun_lines, free_port, run_ranks, torchrun_command
from tests.tiny import (
    TINY,
    TINY_DATA,
    assert_one_message,
    checkout_env,
    run_command,
    run_train,
    train_command,
)

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


# Two nodes, one process each, on this machine: the runs below add these to the documented
# command (a constant learning rate: train/lr is then exactly the scaled lr).
TWO_NODES = [*TINY, *CONSTANT_LR]


def save_rank_weights(dirpath: Path, steps: tuple[int, ...]) -> list[str]:
    """Overrides that make every rank save its weights and loss after the given steps."""
    return [
        "+callbacks.rank_weights._target_=tests.rank_weights.SaveWeightsPerRank",
        f"+callbacks.rank_weights.dirpath={dirpath}",
        f"+callbacks.rank_weights.steps=[{','.join(map(str, steps))}]",
    ]


def assert_one_run_of_identical_ranks(
    run_dir: Path, weights: Path, steps: range, launches: int
) -> None:
    """What a 2-node run of 2 images per node must leave: one run folder written by rank zero,
    the learning rate of 4 images, the logged loss the mean of both ranks' losses, and both
    ranks with the same weights after every step, those of ``last.ckpt`` at the end."""
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".hydra",
        "checkpoints",
        "config.yaml",
        "tensorboard",
        "train.log",
    ]
    # One process wrote events per launch (event file names end in <host>.<pid>.<n>).
    events = list(run_dir.rglob("events.out.tfevents.*"))
    assert {p.parent for p in events} == {run_dir / "tensorboard"}
    assert len({p.name.split(".")[-2] for p in events}) == launches
    log = (run_dir / "train.log").read_text()
    assert log.count("Learning rate:") == launches and "x 1 devices x 2 nodes" in log
    lr = compose_config(TINY).optimizer.lr * 4 / 16  # per 16 images; 2 images x 2 nodes
    # One value per optimizer step, in step order. The TensorBoard step is not compared: a run
    # resumed from a checkpoint written at an epoch's end logs one step ahead (Lightning's
    # _batches_that_stepped, seen with the SLURM launcher), a matter of resume, not of DDP.
    logged_lr = [value for _, value in sorted(series(run_dir, "train/lr").items())]
    assert logged_lr == [pytest.approx(lr)] * len(steps)
    logged_loss = [value for _, value in sorted(series(run_dir, "train/loss_step").items())]
    assert len(logged_loss) == len(steps)
    for step in steps:
        rank0 = torch.load(weights / f"step{step}-rank0.pt", weights_only=True)
        rank1 = torch.load(weights / f"step{step}-rank1.pt", weights_only=True)
        for name, value in rank0["parameters"].items():
            assert torch.equal(value, rank1["parameters"][name]), (step, name)
        mean = (rank0["loss"] + rank1["loss"]) / 2
        assert logged_loss[step - steps[0]] == pytest.approx(float(mean), rel=1e-5), step
        assert not torch.equal(rank0["loss"], rank1["loss"])  # each rank had its own images
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == steps[-1]
    for name, value in rank0["parameters"].items():
        assert torch.equal(value, saved["state_dict"][name]), name


@pytest.mark.slow  # 2 x 2 training processes (and torchrun's agents): about 3 minutes, busy CPU
def test_two_nodes_on_one_machine_with_torchrun_train_one_run_and_resume(tmp_path):
    lines = docs_torchrun_lines()  # docs/scaling.md, "Two nodes on one machine"
    assert [line.split("--node-rank ")[1][0] for line in lines] == ["0", "1"]
    weights = tmp_path / "weights"
    work = tmp_path / "work"  # the docs' relative hydra.run.dir=outputs/two_nodes lands here
    port = free_port()
    first = [*TWO_NODES, *save_rank_weights(weights, (1, 2, 3))]
    commands = [(torchrun_command(line, port) + first, clean_env()) for line in lines]
    ranks = run_ranks(commands, work, tmp_path / "logs", timeout=600)
    assert [rank.returncode for rank in ranks] == [0, 0], ranks[0].output[-3000:]
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]
    run_dir = work / "outputs" / "two_nodes"
    assert list((work / "outputs").iterdir()) == [run_dir]
    assert_one_run_of_identical_ranks(run_dir, weights, range(1, 3), launches=1)

    # Resumed as the docs say: the same lines with ckpt_path=last (and one step more).
    port = free_port()
    more = ["ckpt_path=last", "trainer.max_steps=3"]
    commands = [(torchrun_command(line, port) + more, clean_env()) for line in lines]
    ranks = run_ranks(commands, work, tmp_path / "logs_resumed", timeout=600)
    assert [rank.returncode for rank in ranks] == [0, 0], ranks[0].output[-3000:]
    assert "Resuming from" in ranks[0].output
    assert_one_run_of_identical_ranks(run_dir, weights, range(1, 4), launches=2)


@pytest.mark.slow  # 2 x 2 training tasks through submitit: about 3.5 minutes on a busy CPU
def test_slurm_launcher_trains_two_nodes_as_one_job_and_resumes(tmp_path):
    weights = tmp_path / "weights"
    work, sweep = tmp_path / "work", tmp_path / "work" / "sweep"
    work.mkdir()
    launch = [
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=30",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        f"hydra.sweep.dir={sweep}",
    ]

    def submit(*overrides: str, logs: str) -> str:
        """The command as a user types it, sbatch and srun stood in for; the sbatch script."""
        job_id = fake_slurm.job_id_for_port(free_port(15000, 24999))
        state = tmp_path / f"slurm_{job_id}"
        env = clean_env(fake_slurm.install(tmp_path / "bin", state, job_id))
        try:
            (rank,) = run_ranks(
                [(train_command(*launch, *overrides), env)], work, tmp_path / logs, timeout=900
            )
        finally:
            fake_slurm.stop_jobs(state)
        assert rank.returncode == 0, rank.output[-3000:]
        return (state / f"{job_id}.sbatch").read_text()

    script = submit(*TWO_NODES, *save_rank_weights(weights, (1, 2, 3)), logs="logs")
    for option in (
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=1",
        "--time=30",
        "--partition=debug",
    ):
        assert f"#SBATCH {option}\n" in script, script
    run_dir = sweep / "0"
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", "0", "multirun.yaml"]
    # The job's folder, named by its id (beside it: a link to its sbatch script).
    (job,) = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    results = sorted(job.glob("*_result.pkl"))
    assert [p.name.split("_")[1] for p in results] == ["0", "1"]  # one per task
    for result in results:
        status, job_return = pickle.loads(result.read_bytes())
        assert status == "success"
        assert job_return.return_value == series(run_dir, "val/segm_AP")[1]
    assert_one_run_of_identical_ranks(run_dir, weights, range(1, 3), launches=1)

    # Resumed as the docs say: the same command, ckpt_path=last, the job's sweep folder.
    submit("ckpt_path=last", "trainer.max_steps=3", logs="logs_resumed")
    assert "Resuming from" in (run_dir / "train.log").read_text()
    assert_one_run_of_identical_ranks(run_dir, weights, range(1, 4), launches=2)


@pytest.mark.slow  # two training processes, one step: about 60 s on a busy 2-core CPU
def test_non_finite_loss_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    # A NaN image on rank 1 only: rank 0's own loss is finite. Deciding per rank, rank 1 would
    # raise and rank 0 wait for its gradients in the backward all-reduce until the process
    # group's timeout (30 minutes); both must stop at once.
    port = free_port(15000, 24999)
    job = fake_slurm.job_id_for_port(port)
    nan_on_rank_1 = [
        "+callbacks.nan._target_=tests.rank_weights.NanImageOnRank",
        "+callbacks.nan.rank=1",
        "+callbacks.nan.step=1",
    ]
    argv = train_command(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        *TINY,
        "trainer.max_steps=3",
        *nan_on_rank_1,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    # The two tasks of `srun --nodes=2 --ntasks-per-node=1` on this machine.
    variables = fake_slurm.job_env(job, nodes=2, tasks_per_node=1)
    commands = [
        (argv, clean_env(variables | fake_slurm.task_env(task, nodes=2, tasks_per_node=1)))
        for task in (0, 1)
    ]
    ranks = run_ranks(commands, tmp_path, tmp_path / "logs", timeout=300)
    for rank in ranks:
        assert rank.returncode == EXIT_USER_ERROR, rank.output[-3000:]
        assert "mrcnn train: error: Non-finite loss at step 1 " in rank.output
        assert "Traceback" not in rank.output, rank.output[-3000:]
    assert "on another of the 2 processes" in ranks[0].output
    assert "on rank 1 of 2" in ranks[1].output and "nan" in ranks[1].output


def test_trainer_settings_that_do_not_fit_the_launched_processes_stop_with_one_message(tmp_path):
    # Rank 0 of `torchrun --nproc-per-node 2` (its variables), trainer.devices left at 1:
    # Lightning would raise inside fit, with a traceback on every process.
    torchrun = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "GROUP_RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "TORCHELASTIC_RUN_ID": "none",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    done = run_command(
        "mrcnn.train", "trainer=ddp", "trainer.accelerator=cpu", *TINY, cwd=tmp_path, **torchrun
    )
    assert_one_message(
        done, "mrcnn train", "trainer.devices", "trainer.num_nodes", "world size (2)"
    )
