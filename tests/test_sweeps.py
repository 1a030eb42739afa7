"""Sweeps as a user runs them: a grid multirun, an Optuna search (kept in SQLite and resumed),
the SLURM launcher config, and a real job through submitit's local executor."""

import math
import os
import pickle
import re
import subprocess
from pathlib import Path

import optuna
import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from mrcnn.config import CONFIG_DIR
from tests.tiny import TINY, run_module

# TINY, smaller still: one step on one image, validation on one image, no checkpoint files.
FASTEST = [
    *TINY,
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
    "data.train.num_images=2",
    "data.val.num_images=1",
    "data.batch_size=1",
    "callbacks=none",
    "+trainer.enable_checkpointing=false",
]
RETURNED = re.compile(r"Returning val/segm_AP=(\S+) \(optimized_metric\)")


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mrcnn.train`` with :func:`overrides` applied to ``args``."""
    return run_module("mrcnn.train", *overrides(*args), cwd=cwd)


def overrides(*args: str) -> list[str]:
    """Command-line overrides with later keys replacing earlier ones (as a user would edit)."""
    merged: dict[str, str] = {}
    for arg in args:
        merged[arg.split("=", 1)[0]] = arg
    return list(merged.values())


def returned_metric(job_dir: Path) -> float:
    """What mrcnn.train returned to the sweeper, as its log says."""
    (value,) = RETURNED.findall((job_dir / "train.log").read_text())
    return float(value)


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.slow  # 4 jobs; tests/test_cli.py runs a 2-job multirun in every test run
def test_grid_multirun_runs_every_combination_in_its_own_folder(tmp_path):
    run_train(
        "-m",
        "backbone=resnet50,resnet101",
        "optimizer.lr=0.01,0.02",
        *FASTEST,
        "hydra.sweep.dir=grid",
        cwd=tmp_path,
    )
    jobs = job_dirs(tmp_path / "grid")
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = []
    for job in jobs:
        cfg = OmegaConf.load(job / "config.yaml")
        combos.append((cfg.backbone.name, cfg.optimizer.lr))
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), job
        assert math.isfinite(returned_metric(job)), job
    assert sorted(combos) == [
        ("resnet101", 0.01),
        ("resnet101", 0.02),
        ("resnet50", 0.01),
        ("resnet50", 0.02),
    ]


def search_space() -> dict[str, object]:
    """conf/hparams_search/optuna.yaml's params, parsed the way the Optuna sweeper parses them."""
    params = OmegaConf.load(CONFIG_DIR / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    return {k: parser.parse_override(f"{k}={v}").value() for k, v in params.items()}


def in_space(space: object, value: object) -> bool:
    if isinstance(space, ChoiceSweep):
        return value in space.list
    assert isinstance(space, IntervalSweep), space
    return space.start <= value <= space.end


def test_optuna_search_returns_the_metric_and_resumes_from_sqlite(tmp_path):
    space = search_space()
    assert set(space) >= {
        "optimizer.lr",
        "optimizer.weight_decay",
        "backbone.trainable_backbone_layers",
        "model.loss_weights.loss_mask",
        "data.augment",
    }
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = [
        "-m",
        "hparams_search=optuna",
        *FASTEST,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=tiny",
    ]
    run_train(*search, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=first", cwd=tmp_path)

    first = tmp_path / "first"
    returned = []
    for job in job_dirs(first):
        sampled = {o.split("=", 1)[0] for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")}
        assert set(space) <= sampled, "every trial sets every parameter of the search space"
        cfg = OmegaConf.load(job / "config.yaml")
        for key, distribution in space.items():
            chosen = OmegaConf.select(cfg, key)
            assert in_space(distribution, chosen), (key, chosen)
        returned.append(returned_metric(job))
    assert len(returned) == 2
    results = OmegaConf.load(first / "optimization_results.yaml")
    assert results.best_value == max(returned)
    assert set(results.best_params) == set(space)

    # A second invocation with the same storage and study name adds to that study.
    run_train(*search, "hydra.sweeper.n_trials=1", "hydra.sweep.dir=second", cwd=tmp_path)
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3
    assert sorted(t.value for t in trials[:2]) == sorted(returned)


def test_slurm_launcher_config_makes_an_sbatch_script_for_lightning_ddp(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "trainer.devices=4", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    launcher = instantiate(launcher_cfg)  # resolves ${trainer.devices} against the job config
    params = launcher.params
    assert params["tasks_per_node"] == params["gpus_per_node"] == 4
    assert params["nodes"] == 1 and params["timeout_min"] == 1440
    # The sbatch script submitit would submit (the launcher's own key mapping). submitit only
    # looks for an `srun` on PATH before it writes one; nothing is submitted or run.
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            (k if k in base else f"slurm_{k}"): v
            for k, v in params.items()
            if k not in {"submitit_folder", "max_num_timeout"}
        }
    )
    script = executor._executor._make_submission_file_text("python -m mrcnn.train", "uid")
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=1440",
        "#SBATCH --cpus-per-task=8",
    ]:
        assert line in script, script


def test_submitit_local_launcher_runs_a_training_job(tmp_path):
    run_train("-m", "hydra/launcher=submitit_local", *FASTEST, "hydra.sweep.dir=jobs", cwd=tmp_path)
    (job,) = job_dirs(tmp_path / "jobs")
    assert OmegaConf.load(job / "config.yaml").trainer.max_steps == 1
    assert list((job / "tensorboard").glob("events.out.tfevents.*"))
    (result_file,) = (tmp_path / "jobs" / ".submitit").glob("*/*_result.pkl")
    status, job_return = pickle.loads(result_file.read_bytes())
    assert status == "success"
    assert job_return.return_value == returned_metric(job)
    (log_file,) = result_file.parent.glob("*_log.out")
    assert "Job completed successfully" in log_file.read_text()
