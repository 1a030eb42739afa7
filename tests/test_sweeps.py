"""Sweeps as a user runs them: a grid multirun, an Optuna search (kept in SQLite and resumed),
the SLURM launcher config, and a real job through submitit's local executor."""

import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hydra_plugins.mrcnn_optuna_sweeper._search_space import SweeperConfigError
from hydra_plugins.mrcnn_optuna_sweeper._search_space import search_space as read_search_space
from mrcnn.config import CONFIG_DIR
from tests.tiny import PROJECT_ROOT, TINY, run_module

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


# --- Optuna: mrcnn's sweeper (hydra_plugins/mrcnn_optuna_sweeper) ---------------------------


def search_space() -> dict[str, BaseDistribution]:
    """conf/hparams_search/optuna.yaml's params as the sweeper reads them."""
    params = OmegaConf.load(CONFIG_DIR / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    return read_search_space(params).distributions


def in_space(distribution: BaseDistribution, value: object) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    assert isinstance(distribution, (FloatDistribution, IntDistribution)), distribution
    return distribution.low <= value <= distribution.high


@pytest.mark.parametrize(
    ("written", "distribution"),
    [
        ("interval(0.5, 2.0)", FloatDistribution(0.5, 2.0)),
        ("interval(1, 2)", FloatDistribution(1.0, 2.0)),  # Hydra reads an interval's ends as floats
        ("tag(log, interval(1e-5, 1e-3))", FloatDistribution(1e-5, 1e-3, log=True)),
        ("int(interval(0, 5))", IntDistribution(0, 5)),
        ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
        (
            "choice(none, hflip, 1, 2.5, true)",
            CategoricalDistribution(["none", "hflip", 1, 2.5, True]),
        ),
        # range: the end excluded, as in a grid sweep; Optuna's high end is the last value.
        ("range(1, 9, 2)", IntDistribution(1, 7, step=2)),
        ("range(5, 1, -1)", IntDistribution(2, 5)),
        ("range(0, 1, 0.1)", FloatDistribution(0.0, 0.9, step=0.1)),
    ],
)
def test_each_search_space_form_is_its_optuna_distribution(written, distribution):
    space = read_search_space({"model.x": written})
    assert space.distributions == {"model.x": distribution}
    assert not space.fixed


def test_plain_values_are_fixed_and_overrides_read_back_as_sampled():
    space = read_search_space(
        {
            "trainer.max_steps": 3,
            "data.name": "a b",
            "model.mode": "choice('x,y', \"it's\", 'a\\\\', $x, true, 'true', '1')",
            "callbacks": "choice([default], [default,ema])",
        }
    )
    assert space.fixed == {"trainer.max_steps": "trainer.max_steps=3", "data.name": "data.name=a b"}
    assert space.distributions["callbacks"].choices == ("[default]", "[default,ema]")
    parser = OverridesParser.create()
    for mode in space.distributions["model.mode"].choices:
        trial = space.trial_overrides({"model.mode": mode, "callbacks": "[default,ema]"})
        parsed = {o.key_or_group: o.value() for o in parser.parse_overrides(trial)}
        # Strings with commas, quotes or backslashes, strings that look like a bool or a number,
        # and bools go back into Hydra's grammar unchanged.
        assert parsed == {
            "trainer.max_steps": 3,
            "data.name": "a b",
            "model.mode": mode,
            "callbacks": ["default", "ema"],
        }


def test_command_line_fixes_replaces_or_passes_through():
    params = {
        "optimizer.lr": "tag(log, interval(0.005, 0.08))",
        "data.augment": "choice(none, hflip, multiscale, lsj)",
        "model.loss_weights.loss_mask": "interval(0.5, 2.0)",
    }
    space = read_search_space(
        params,
        ["optimizer.lr=0.02", "data.augment=choice(hflip,lsj)", "trainer.max_steps=1", "~seed"],
    )
    assert space.distributions == {
        "data.augment": CategoricalDistribution(["hflip", "lsj"]),
        "model.loss_weights.loss_mask": FloatDistribution(0.5, 2.0),
    }
    assert list(space.fixed.values()) == ["optimizer.lr=0.02", "trainer.max_steps=1", "~seed"]
    assert space.trial_overrides(
        {"data.augment": "lsj", "model.loss_weights.loss_mask": 1e-05}
    ) == [
        "optimizer.lr=0.02",
        "trainer.max_steps=1",
        "~seed",
        "data.augment=lsj",
        "model.loss_weights.loss_mask=1e-05",
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("interval(2, 1)", r"starts above its end; write interval\(1.0, 2.0\)"),
        ("tag(log, interval(0, 1))", "a log scale needs a start above 0"),
        ("tag(lg, interval(1, 2))", r"unknown tag \['lg'\]"),
        ("tag(log, choice(1, 2))", r"tag\(log, ...\) applies to interval\(a, b\) only"),
        ("normal(0, 1)", "cannot read it.*Unknown function 'normal'"),
        ("range(3, 1)", "has no values"),
        ("hflip,lsj", r"grid sweep.*write model.x=choice\(hflip, lsj\)"),
    ],
)
def test_a_search_space_optuna_cannot_search_is_refused_naming_the_key(written, message):
    with pytest.raises(
        SweeperConfigError, match=rf"^hydra\.sweeper\.params\.model\.x: .*{message}"
    ):
        read_search_space({"model.x": written})


def test_grid_sweep_syntax_on_the_command_line_is_refused_for_choice():
    with pytest.raises(SweeperConfigError, match=r"'data.augment=hflip,lsj' on the command line"):
        read_search_space({}, ["data.augment=hflip,lsj"])


def test_every_key_of_the_search_space_must_be_in_the_config():
    config = OmegaConf.create(
        {
            "optimizer": {"lr": 0.01, "betas": "???"},
            "layers": [{"width": 8}],
            "hydra": {"runtime": {"choices": {"backbone": "resnet18", "hydra/launcher": "basic"}}},
        }
    )
    ok = {
        "optimizer.lr": "interval(0.001, 0.1)",
        "optimizer.betas": "choice(a, b)",  # ??? (a value still to give) is a key of the config
        "layers.0.width": "choice(8, 16)",
        "backbone": "choice(resnet18, resnet50)",  # a config group
        "+optimizer.nesterov": "choice(true, false)",  # + adds a key
    }
    assert set(read_search_space(ok, [], config).distributions) == {k.lstrip("+") for k in ok}
    with pytest.raises(
        SweeperConfigError, match=r"hydra.sweeper.params.optimizer.lrr: .*\+optimizer.lrr"
    ):
        read_search_space({"optimizer.lrr": "interval(0.001, 0.1)"}, [], config)
    with pytest.raises(
        SweeperConfigError, match=r"'layers.1.width=choice\(8,16\)' on the command line"
    ):
        read_search_space({}, ["layers.1.width=choice(8,16)"], config)


def test_hparams_search_optuna_composes_and_its_keys_are_in_the_train_config():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert (
        sweeper._target_ == "hydra_plugins.mrcnn_optuna_sweeper.optuna_sweeper.MrcnnOptunaSweeper"
    )
    assert sweeper.direction == "maximize"
    space = read_search_space(sweeper.params, [], cfg)  # raises on a key the config does not have
    assert set(space.distributions) == set(search_space())


# A Hydra app that returns a number in a blink, to test the sweeper without training. Its job
# number `raise_at` raises and `none_at` returns None (as mrcnn.train does without its metric).
APP = """
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    job = HydraConfig.get().job.num
    if job == cfg.raise_at:
        raise RuntimeError("this job fails")
    if job == cfg.none_at:
        return None
    value = (cfg.x - 2) ** 2 + (cfg.mode == "b") + cfg.n
    Path(HydraConfig.get().runtime.output_dir, "value.txt").write_text(repr(value))
    return [value, cfg.x] if cfg.two_values else value


if __name__ == "__main__":
    main()
"""
APP_CONFIG = """
defaults:
  - override hydra/sweeper: mrcnn_optuna
  - _self_
x: 0.0
mode: a
n: 1
raise_at: -1
none_at: -1
two_values: false
hydra:
  sweeper:
    direction: minimize
    n_trials: 5
    n_jobs: 2
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 0
    params:
      x: interval(-1, 5)
      mode: choice(a, b)
      n: int(interval(1, 3))
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def trial_params(job_dir: Path) -> dict[str, object]:
    """The search-space values one job ran with (its overrides)."""
    overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
    return dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in {"x", "mode", "n"})


def test_sweeper_runs_batches_survives_failed_trials_and_resumes_from_sqlite(app):
    storage = f"sqlite:///{app / 'db' / 'study.db'}"  # db/ does not exist yet: the sweeper makes it
    search = ["-m", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=quick"]
    run_module("app", *search, "raise_at=1", "none_at=3", "hydra.sweep.dir=first", cwd=app)

    jobs = job_dirs(app / "first")
    assert [p.name for p in jobs] == ["0", "1", "2", "3", "4"]  # 3 batches, numbering goes on
    values = {int(p.name): float((p / "value.txt").read_text()) for p in jobs if p.name in "024"}
    results = OmegaConf.load(app / "first" / "optimization_results.yaml")
    assert results.name == "optuna" and results.study_name == "quick"
    assert results.best_value == min(values.values())
    best_job = min(values, key=values.get)
    assert {k: str(v) for k, v in results.best_params.items()} == trial_params(jobs[best_job])

    study = optuna.load_study(study_name="quick", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL] * 2 + [TrialState.COMPLETE]
    assert study.trials[2].user_attrs["output_dir"] == str(jobs[2])

    # A second invocation adds to the study, with its sampler reseeded: not the first's values.
    run_module("app", *search, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=second", cwd=app)
    study = optuna.load_study(study_name="quick", storage=storage)
    assert len(study.trials) == 7
    first = [trial_params(job) for job in jobs[:2]]
    assert all(trial_params(job) not in first for job in job_dirs(app / "second"))


def test_sweeper_fixes_command_line_keys_and_reports_two_objectives(app):
    run_module(
        "app",
        "-m",
        "n=2",
        "mode=choice(b)",
        "two_values=true",
        "hydra.sweeper.direction=[minimize,maximize]",
        "hydra.sweeper.n_trials=3",
        "hydra.sweep.dir=sweep",
        cwd=app,
    )
    for job in job_dirs(app / "sweep"):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert (cfg.n, cfg.mode) == (2, "b")
    results = OmegaConf.load(app / "sweep" / "optimization_results.yaml")
    assert results.solutions and all(len(s["values"]) == 2 for s in results.solutions)
    assert all(set(s.params) == {"x", "mode"} for s in results.solutions)


def test_sweeper_stops_before_any_trial_on_a_bad_search_space(app):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "-m", "mode=a,b", "hydra.sweep.dir=sweep"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "'mode=a,b' on the command line" in result.stderr
    assert "mode=choice(a, b)" in result.stderr
    assert not (app / "sweep").exists()


# 3 training runs; the sweeper is tested in seconds above (a trivial app), and optuna.yaml against
# the train config without training.
@pytest.mark.slow
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


# The launch docs/scaling.md shows: 2 nodes of 4 GPUs, a partition and a wall time.
SLURM_JOB = [
    "hydra/launcher=slurm",
    "trainer=gpu",
    "trainer.devices=4",
    "trainer.num_nodes=2",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.timeout_min=120",
]


def test_slurm_launcher_config_makes_an_sbatch_script_for_lightning_ddp(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=SLURM_JOB, return_hydra_config=True)
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    launcher = instantiate(launcher_cfg)  # resolves ${trainer.devices} against the job config
    params = launcher.params
    assert params["tasks_per_node"] == params["gpus_per_node"] == 4
    assert params["nodes"] == 2 and params["timeout_min"] == 120
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
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=120",
        "#SBATCH --cpus-per-task=8",
    ]:
        assert line in script, script


def test_slurm_job_parameters_are_shown_before_submitting(tmp_path):
    # `--cfg hydra` shows which launcher keys follow the trainer; Hydra cannot resolve them
    # while printing the hydra node alone, `--cfg all --resolve -p hydra.launcher` can.
    shown = run_module("mrcnn.train", *SLURM_JOB, "--cfg", "hydra", cwd=tmp_path).stdout
    for line in (
        "nodes: ${trainer.num_nodes}",
        "tasks_per_node: ${trainer.devices}",
        "gpus_per_node: ${trainer.devices}",
        "timeout_min: 120",
        "partition: gpu",
    ):
        assert f"    {line}\n" in shown, shown
    resolved = run_module(
        "mrcnn.train", *SLURM_JOB, "--cfg", "all", "--resolve", "-p", "hydra.launcher", cwd=tmp_path
    )
    values = OmegaConf.create(resolved.stdout)
    assert (values.nodes, values.tasks_per_node, values.gpus_per_node) == (2, 4, 4)
    assert (values.timeout_min, values.partition) == (120, "gpu")
    assert values._target_.endswith("SlurmLauncher")


# slow: 22 s alone (a submitit job process); the default suite stays under 15 min
@pytest.mark.slow
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
