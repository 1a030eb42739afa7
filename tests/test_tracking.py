"""Experiment tracking: real training runs with ``logger=mlflow`` and ``logger=wandb`` (offline),
each read back from what it wrote, and the message when the package is missing."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import PROJECT_ROOT, TINY, run_train

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")
pytest.importorskip("wandb", reason="the tracking extra: pip install -e '.[tracking]'")

from mlflow.tracking import MlflowClient  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

PER_CLASS_COLUMNS = ["class", "bbox AP", "bbox AP50", "segm AP", "segm AP50"]
CLASSES = {"circle", "square", "triangle"}


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """The environment with W&B's settings, cache and staging folders in ``tmp_path`` (a run
    writes there too, not only in its offline folder), and no account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(tmp_path / "wandb-home" / name.lower())
    return env


def mlflow_run(store: Path) -> tuple[MlflowClient, list[Any]]:
    """The client of a local MLflow store (``outputs/mlflow.db``) and the runs of experiment
    ``mrcnn`` in it."""
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("mrcnn")
    return client, client.search_runs([experiment.experiment_id])


# W&B's transaction log (run-<id>.wandb) is LevelDB's log format: 32 KiB blocks of records
# (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) after a 7-byte file header, each
# record a protobuf `Record`. wandb 0.31 has no Python reader of its own any more (its Go core
# writes and syncs the file), so the test reads it here.
WANDB_FILE_HEADER = struct.Struct("<4sHB")  # b":W&B", magic 0xBEE1, version
WANDB_RECORD_HEADER = struct.Struct("<IHB")
WANDB_BLOCK = 32768


def wandb_records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file, as ``wandb_internal_pb2.Record``."""
    data = path.read_bytes()
    ident, magic, _ = WANDB_FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", WANDB_FILE_HEADER.size
    while pos + WANDB_RECORD_HEADER.size <= len(data):
        left_in_block = WANDB_BLOCK - pos % WANDB_BLOCK
        if left_in_block < WANDB_RECORD_HEADER.size:  # block padding
            pos += left_in_block
            continue
        _, length, kind = WANDB_RECORD_HEADER.unpack_from(data, pos)
        pos += WANDB_RECORD_HEADER.size
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """A run folder's one offline W&B run: its history rows, its config, and its folder."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (log_file,) = offline.glob("run-*.wandb")
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    "/".join(item.nested_key) or item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
    return history, config, offline


# The runs below test what the loggers receive, not the precision probe (`auto`): float32.
RUN = [*TINY, "trainer.precision=32"]


def test_mlflow_run_has_params_metrics_table_and_panels(tmp_path):
    run_dir = tmp_path / "outputs" / "run"
    run_train(*RUN, "logger=mlflow", f"hydra.run.dir={run_dir}", cwd=tmp_path)

    # One store below outputs/, beside the run folders, for every run.
    client, runs = mlflow_run(tmp_path / "outputs" / "mlflow.db")
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
    # The artifacts live in the store's folder too, not in the working directory.
    assert (tmp_path / "outputs" / "mlartifacts").is_dir()


def test_wandb_offline_run_beside_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        *RUN,
        "logger=[tensorboard,wandb]",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=wandb_env(tmp_path),
    )
    # WANDB_SILENT (mrcnn.loggers): none of W&B's per-run banner lines.
    assert "wandb: Tracking run" not in result.stdout + result.stderr

    history, config, offline = wandb_run(run_dir)
    losses = [row["train/loss_step"] for row in history if "train/loss_step" in row]
    assert len(losses) == 2 and all(v > 0 for v in losses)
    (segm_ap,) = [row["val/segm_AP"] for row in history if "val/segm_AP" in row]
    assert 0 <= segm_ap <= 1
    # The module's hyper-parameters at the start, the run's config at the end.
    assert config["seed"] == 0 and config["data"]["batch_size"] == 2
    assert config["optimizer"]["_target_"] == "torch.optim.AdamW"

    # Media are history entries whose fields W&B stores as nested keys (<key>/_type, ...); the
    # files are in the run folder.
    panel = "val/ground_truth_vs_prediction"
    (image,) = [row for row in history if f"{panel}/_type" in row]
    assert image[f"{panel}/_type"] == "images/separated" and image["trainer/global_step"] == 2
    (png,) = image[f"{panel}/filenames"]
    assert (offline / "files" / png).is_file()
    (table,) = [row for row in history if "val/per_class_AP/_type" in row]
    assert table["val/per_class_AP/_type"] == "table-file"
    saved = json.loads((offline / "files" / table["val/per_class_AP/path"]).read_text())
    assert saved["columns"] == PER_CLASS_COLUMNS
    assert {row[0] for row in saved["data"]} == CLASSES

    # TensorBoard, in the same run, gets the table as Markdown text.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    (text,) = events.Reload().Tensors("val/per_class_AP/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.startswith("| class | bbox AP | bbox AP50 | segm AP | segm AP50 |")
    assert events.Images("val/ground_truth_vs_prediction")


def test_multirun_jobs_each_get_their_own_tracked_runs(tmp_path):
    # Hydra's basic launcher runs the jobs in one process: the second job must not log into
    # the first one's W&B run (mrcnn.loggers.finishing_runs), and MLflow keeps both in one store.
    run_train(
        "-m",
        *RUN,
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "seed=0,1",
        "logger=[tensorboard,mlflow,wandb]",
        "hydra.sweep.dir=outputs/sweep",
        cwd=tmp_path,
        env=wandb_env(tmp_path),
    )
    _, runs = mlflow_run(tmp_path / "outputs" / "mlflow.db")
    assert sorted(run.data.params["seed"] for run in runs) == ["0", "1"]
    for job in ("0", "1"):
        history, config, _ = wandb_run(tmp_path / "outputs" / "sweep" / job)
        assert config["seed"] == int(job)
        assert len([row for row in history if "train/loss_step" in row]) == 1
        assert (tmp_path / "outputs" / "sweep" / job / "tensorboard").is_dir()


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_missing_tracking_package_is_one_message_with_the_fix(package, tmp_path):
    # `python -m mrcnn.train` with the package made unimportable, as without the tracking extra.
    code = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "
        f"sys.argv = ['mrcnn.train', *{[*RUN, f'logger={package}']!r}]; "
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
    assert f"mrcnn.train: error: logger={package} needs the {package} package" in result.stderr
    assert 'pip install -e ".[tracking]"' in result.stderr
    assert "Traceback" not in result.stderr
