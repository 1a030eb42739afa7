"""Experiment tracking: real training runs with ``logger=mlflow`` and ``logger=wandb`` (offline),
each read back from what it wrote, and the message when the package is missing."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import PROJECT_ROOT, TINY, run_train

# Box, mask and boundary AP (evaluation.boundary_dilation, on by default) per class.
PER_CLASS_COLUMNS = [
    "class",
    *(f"{kind} {stat}" for kind in ("bbox", "segm", "boundary") for stat in ("AP", "AP50")),
]
CLASSES = {"circle", "square", "triangle"}


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """The environment with W&B's settings, cache and staging folders in ``tmp_path`` (a run
    writes there too, not only in its offline folder), and no account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(tmp_path / "wandb-home" / name.lower())
    return env


def mlflow_run(store: Path) -> tuple[Any, list[Any]]:
    """The client of a local MLflow store (``outputs/mlflow.db``) and the runs of experiment
    ``mrcnn`` in it. (mlflow and wandb come with the dev extra, as in the tracking extra.)"""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("mrcnn")
    return client, client.search_runs([experiment.experiment_id])


def wandb_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """A run folder's one offline W&B run: its history rows, its config, and its folder, read
    from its transaction log (``run-<id>.wandb``) by W&B's own reader, ``wandb leet inspect
    --json`` (one record a line; wandb 0.31 has no Python reader of the file any more)."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    config: dict[str, Any] = {}
    for record in records:
        if record["type"] == "config":
            config |= record["config"]["update"]
    return history, config, offline


def test_mlflow_wandb_and_tensorboard_in_one_run_each_get_everything(tmp_path):
    # The command a user types for several loggers (quoted in a shell).
    run_dir = tmp_path / "outputs" / "run"
    result = run_train(
        *TINY,
        "logger=[tensorboard,mlflow,wandb]",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=wandb_env(tmp_path),
    )
    # WANDB_SILENT (mrcnn.loggers): none of W&B's per-run banner lines.
    assert "wandb: Tracking run" not in result.stdout + result.stderr
    check_mlflow_run(tmp_path / "outputs", run_dir)
    check_wandb_run(run_dir)

    # TensorBoard gets the per-class table as Markdown text beside the image panels.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    (text,) = events.Reload().Tensors("val/per_class_AP/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.startswith("| class | bbox AP | bbox AP50 | segm AP | segm AP50 |")
    assert events.Images("val/ground_truth_vs_prediction")


def check_mlflow_run(outputs: Path, run_dir: Path) -> None:
    """The run's params, metrics, per-class table and image panel in the MLflow store."""
    # One store below outputs/, beside the run folders, for every run.
    client, runs = mlflow_run(outputs / "mlflow.db")
    (run,) = runs
    run_id = run.info.run_id
    assert run.info.run_name == str(run_dir) and run.info.status == "FINISHED"
    # The run's config (flattened with "/") and the module's hyper-parameters.
    params = run.data.params
    assert params["seed"] == "0" and params["data/batch_size"] == "2"
    assert params["optimizer/_target_"] == "torch.optim.AdamW"
    # Metric names keep their "/" (MLflow allows it; Lightning would strip other characters).
    losses = client.get_metric_history(run_id, "train/loss_step")
    assert len(losses) == 2 and all(m.value > 0 for m in losses)
    (segm_ap,) = client.get_metric_history(run_id, "val/segm_AP")
    assert 0 <= segm_ap.value <= 1
    assert any(name.startswith("val/segm_AP/") for name in run.data.metrics)

    (table_file,) = client.list_artifacts(run_id, "tables/val/per_class_AP")
    assert table_file.path == "tables/val/per_class_AP/step_2.json"
    table = json.loads(Path(client.download_artifacts(run_id, table_file.path)).read_text())
    assert table["columns"] == PER_CLASS_COLUMNS
    assert {row[0] for row in table["data"]} == CLASSES
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    # MLflow's own naming: <key with "/" as "~">+step+<step>+timestamp+...png
    assert any(p.startswith("images/val~ground_truth_vs_prediction+step+2+") for p in images)
    assert any(p.endswith(".png") for p in images)
    # The artifacts live beside the store, not in the run folder or the working directory.
    assert (outputs / "mlartifacts").is_dir()


def check_wandb_run(run_dir: Path) -> None:
    """The run's history (losses, AP, image, table) and config in its offline W&B folder."""
    history, config, offline = wandb_run(run_dir)
    losses = [row["train/loss_step"] for row in history if "train/loss_step" in row]
    assert len(losses) == 2 and all(v > 0 for v in losses)
    (segm_ap,) = [row["val/segm_AP"] for row in history if "val/segm_AP" in row]
    assert 0 <= segm_ap <= 1
    # The module's hyper-parameters at the start, the run's config at the end.
    assert config["seed"] == 0 and config["data"]["batch_size"] == 2
    assert config["optimizer"]["_target_"] == "torch.optim.AdamW"

    # Media are history entries whose fields W&B stores as nested keys (<key>._type, ...); the
    # files are in the run folder.
    panel = "val/ground_truth_vs_prediction"
    (image,) = [row for row in history if f"{panel}._type" in row]
    assert image[f"{panel}._type"] == "images/separated" and image["trainer/global_step"] == 2
    (png,) = image[f"{panel}.filenames"]
    assert (offline / "files" / png).is_file()
    (table,) = [row for row in history if "val/per_class_AP._type" in row]
    assert table["val/per_class_AP._type"] == "table-file"
    saved = json.loads((offline / "files" / table["val/per_class_AP.path"]).read_text())
    assert saved["columns"] == PER_CLASS_COLUMNS
    assert {row[0] for row in saved["data"]} == CLASSES


# slow: 26 s alone (two training jobs); the default suite stays under 15 min
@pytest.mark.slow
def test_each_multirun_job_gets_its_own_wandb_run(tmp_path):
    # Hydra's basic launcher runs the jobs in one process: the second job must not log into
    # the first one's W&B run (mrcnn.loggers.finishing_runs).
    run_train(
        "-m",
        *TINY,
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "seed=0,1",
        "logger=wandb",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        env=wandb_env(tmp_path),
    )
    for job in ("0", "1"):
        history, config, _ = wandb_run(tmp_path / "sweep" / job)
        assert config["seed"] == int(job)
        assert len([row for row in history if "train/loss_step" in row]) == 1


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_missing_tracking_package_is_one_message_with_the_fix(package, tmp_path):
    # `python -m mrcnn.train` with the package made unimportable, as without the tracking extra.
    code = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "
        f"sys.argv = ['mrcnn.train', *{[*TINY, f'logger={package}']!r}]; "
        "runpy.run_module('mrcnn.train', run_name='__main__', alter_sys=True)"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"mrcnn train: error: logger={package} needs the {package} package" in result.stderr
    assert 'pip install "mrcnn[tracking]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_hyperparameters_reach_loggers_without_a_metrics_argument(tmp_path):
    # Only TensorBoard's log_hyperparams takes final metrics; CSVLogger's (like MLflow's and
    # W&B's) raised TypeError when train() passed them to every logger.
    from lightning.pytorch.loggers import CSVLogger

    from mrcnn.loggers import log_hyperparams

    logger = CSVLogger(tmp_path, name="csv", version="")
    log_hyperparams([logger], {"seed": 3}, {"final/segm_AP": 0.5})
    logger.save()
    assert "seed: 3" in (tmp_path / "csv" / "hparams.yaml").read_text()
