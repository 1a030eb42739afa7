"""The shared MLflow store under concurrency: processes that open a fresh store at the same
moment, and a parallel sweep (submitit's local launcher) with ``logger=mlflow`` on a fresh
store, record every run; each job of such a sweep keeps its own W&B and TensorBoard folders."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrcnn.tracking_store import sqlite_path
from tests.events import series, writer
from tests.test_loggers import mlflow_run, wandb_env, wandb_run
from tests.tiny import TINY, checkout_env, run_train


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///outputs/mlflow.db", Path("outputs/mlflow.db")),
        ("sqlite:////abs/mlflow.db?timeout=30", Path("/abs/mlflow.db")),
        ("sqlite:///:memory:", None),
        ("http://tracking.lab:5000", None),
        ("postgresql://u@host/db", None),
        (None, None),
    ],
)
def test_only_a_sqlite_file_store_is_prepared(uri, expected):
    assert sqlite_path(uri) == expected


# A run as MLFlowLogger makes one, started by several processes at the same moment.
OPEN_AND_LOG = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from mrcnn.tracking_store import prepare_mlflow_store
uri, control, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(control / f"ready-{name}").touch()
while not (control / "go").exists():
    time.sleep(0.001)
prepare_mlflow_store(uri, "mrcnn", str(control.parent / "mlartifacts"))
client = MlflowClient(uri)
experiment = client.get_experiment_by_name("mrcnn")
run = client.create_run(experiment.experiment_id, run_name=name)
client.log_metric(run.info.run_id, "train/loss", float(len(name)), step=0)
client.set_terminated(run.info.run_id)
"""


@pytest.mark.slow  # three processes importing MLflow at once: about 40 s on a busy 2-core CPU
def test_processes_opening_a_fresh_store_at_once_all_record_their_runs(tmp_path):
    # MLflow 3.18 alone (MlflowClient instead of prepare_mlflow_store): 2 of 3 such processes
    # died with "duplicate column name: step" (checked 2026-12-06).
    control = tmp_path / "control"
    control.mkdir()
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"  # outputs/ does not exist yet
    names = ["a", "bb", "ccc"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_LOG, uri, str(control), name],
            env=checkout_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        deadline = time.monotonic() + 300
        while len(list(control.glob("ready-*"))) < len(names) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes)
            time.sleep(0.05)
        (control / "go").touch()
        errors = [process.communicate(timeout=300)[1] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0, 0, 0], "\n".join(e[-2000:] for e in errors)
    _, runs = mlflow_run(tmp_path / "outputs" / "mlflow.db")
    assert sorted(run.info.run_name for run in runs) == names
    for run in runs:
        assert run.data.metrics["train/loss"] == len(run.info.run_name)


@pytest.mark.slow  # three training jobs at once: about 2 minutes on a busy 2-core CPU
def test_a_parallel_sweep_on_a_fresh_store_records_every_job(tmp_path):
    # The user's first sweep, as the issue tried it: no outputs/mlflow.db yet, and submitit's
    # local launcher starting the three jobs together, each with MLflow, W&B and TensorBoard.
    lrs = ["0.001", "0.002", "0.003"]
    run_train(
        "-m",
        "hydra/launcher=submitit_local",
        *TINY,
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "logger=[tensorboard,mlflow,wandb]",
        f"optimizer.lr={','.join(lrs)}",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        env=wandb_env(tmp_path),
    )
    jobs = [tmp_path / "sweep" / str(n) for n in range(3)]
    client, runs = mlflow_run(tmp_path / "outputs" / "mlflow.db")
    assert sorted(run.info.run_name for run in runs) == sorted(str(job) for job in jobs)
    for run in runs:
        assert run.info.status == "FINISHED"
        (loss,) = client.get_metric_history(run.info.run_id, "train/loss_step")
        assert loss.value > 0
        assert "val/segm_AP" in run.data.metrics
    assert sorted(run.data.params["optimizer/lr"] for run in runs) == lrs
    writers = set()
    for job, lr in zip(jobs, lrs, strict=True):
        # Each job's own offline W&B run and TensorBoard folder, with its own config.
        history, config, _ = wandb_run(job)
        assert str(config["optimizer"]["lr"]) == lr
        assert len([row for row in history if "train/loss_step" in row]) == 1
        assert list(series(job, "train/loss_step")) == [0]
        writers.add(writer(job))
    assert len(writers) == 3
