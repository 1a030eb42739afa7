"""One folder per run: runs and sweeps started in the same second get folders of their own, a
folder named on the command line is used as given, and a new run never writes into a folder
that holds another run's checkpoints."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mrcnn.config import CONFIG_DIR
from mrcnn.run_dir import claim_folder, override_value
from tests.events import series, writer
from tests.tiny import TINY, assert_one_message, checkout_env, run_command, run_module

# Hydra apps that record where they ran: mrcnn's callback in the hydra config, the folders named
# by the clock to the year, so that every run of a test starts "in the same second".
APP = """
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    Path(HydraConfig.get().runtime.output_dir, "x.txt").write_text(str(cfg.x))


if __name__ == "__main__":
    main()
"""
APP_CONFIG = """
x: 0
hydra:
  run:
    dir: out/${now:%Y}
  sweep:
    dir: out/multirun/${now:%Y}
  callbacks:
    unique_run_dir:
      _target_: mrcnn.run_dir.UniqueRunDir
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_mrcnn_configs_claim_their_time_named_folders():
    hydra = OmegaConf.load(CONFIG_DIR / "hydra" / "default.yaml")
    assert hydra.callbacks.unique_run_dir._target_ == "mrcnn.run_dir.UniqueRunDir"
    assert "${now:" in OmegaConf.to_container(hydra.run)["dir"]


def test_runs_in_the_same_second_get_their_own_folders(app):
    year = time.strftime("%Y")
    for x in (1, 2):
        run_module("app", f"x={x}", cwd=app)
    assert (app / "out" / year / "x.txt").read_text() == "1"
    assert (app / "out" / f"{year}-2" / "x.txt").read_text() == "2"


def test_a_folder_named_on_the_command_line_is_used_as_given(app):
    for x in (1, 2):
        run_module("app", f"x={x}", "hydra.run.dir=out/mine", cwd=app)
    assert sorted(p.name for p in (app / "out").iterdir()) == ["mine"]
    assert (app / "out" / "mine" / "x.txt").read_text() == "2"


def test_sweeps_in_the_same_second_get_their_own_folders_and_jobs(app):
    year = time.strftime("%Y")
    run_module("app", "-m", "x=1,2", cwd=app)
    run_module("app", "-m", "x=3,4", cwd=app)
    sweeps = app / "out" / "multirun"
    assert sorted(p.name for p in sweeps.iterdir()) == [year, f"{year}-2"]
    # The jobs of the second sweep are in its own folder, though Hydra composes each job's
    # config again (with the folder named by the clock).
    found = {p.relative_to(sweeps).as_posix(): p.read_text() for p in sweeps.rglob("x.txt")}
    assert found == {f"{year}/0/x.txt": "1", f"{year}/1/x.txt": "2"} | {
        f"{year}-2/0/x.txt": "3",
        f"{year}-2/1/x.txt": "4",
    }


CLAIM = """
import sys, time
from pathlib import Path
from mrcnn.run_dir import claim_folder
base, control = Path(sys.argv[1]), Path(sys.argv[2])
(control / f"ready-{sys.argv[3]}").touch()
while not (control / "go").exists():
    time.sleep(0.001)
print(claim_folder(base))
"""


def test_processes_claiming_one_name_at_once_each_get_a_folder(tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    base = tmp_path / "outputs" / "2026-12-06" / "00-50-27"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(base), str(control), str(i)],
            env=checkout_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(control.glob("ready-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        (control / "go").touch()
        claimed = [process.communicate(timeout=120)[0].strip() for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert all(process.returncode == 0 for process in processes)
    names = {"00-50-27", "00-50-27-2", "00-50-27-3", "00-50-27-4"}
    assert sorted(Path(path).name for path in claimed) == sorted(names)
    assert {p.name for p in base.parent.iterdir()} == names


@pytest.mark.parametrize(
    "folder",
    [
        "outputs/multirun/2026-12-06/00-50-27-2",
        "/abs/runs/a.b",
        "my runs/it's",
        "a=b,c\\d",
        "x\\'y\\",
    ],
)
def test_a_claimed_folder_reads_back_from_its_override(folder):
    # The override that pins a sweep's jobs to the claimed folder, as Hydra parses it.
    override = OverridesParser.create().parse_override(f"hydra.sweep.dir={override_value(folder)}")
    assert override.value() == folder


def test_claim_folder_makes_the_parents(tmp_path):
    first = claim_folder(tmp_path / "a" / "b")
    assert first == tmp_path / "a" / "b" and first.is_dir()
    assert claim_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b-2"


def test_a_new_run_into_a_folder_with_another_runs_checkpoints_is_one_message(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"another run's")
    done = run_command("mrcnn.train", *TINY, cwd=tmp_path)
    assert_one_message(
        done,
        "mrcnn train",
        f"The run folder {tmp_path / 'run'} holds the checkpoints of another run (last.ckpt",
        "Continue that run with ckpt_path=last",
        "leave hydra.run.dir out",
    )
    assert (checkpoints / "last.ckpt").read_bytes() == b"another run's"


@pytest.mark.slow  # two training processes at once: about a minute on a busy 2-core CPU
def test_two_runs_started_together_write_two_folders(tmp_path):
    # As a shell script starts them with `&`; named by the clock to the day, so that they
    # surely start "in the same second" (the default names them to the second).
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mrcnn.train",
                *TINY,
                f"optimizer.lr={lr}",
                "hydra.run.dir=outputs/${now:%Y-%m-%d}",
            ],
            cwd=tmp_path,
            env=checkout_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for lr in (0.001, 0.002)
    ]
    try:
        outputs = [run.communicate(timeout=900)[0] for run in runs]
    finally:
        for run in runs:
            run.kill()
    assert [run.returncode for run in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    folders = sorted((tmp_path / "outputs").iterdir())
    day = folders[0].name
    assert [f.name for f in folders] == [day, f"{day}-2"]
    rates, writers = set(), set()
    for folder in folders:
        cfg = OmegaConf.load(folder / "config.yaml")
        rates.add(cfg.optimizer.lr)
        assert cfg.paths.output_dir == str(folder)
        # Its own checkpoint, from its own command line, and its own log and curves.
        saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert f"optimizer.lr={cfg.optimizer.lr}" in saved["overrides"]
        assert saved["global_step"] == 2
        log = (folder / "train.log").read_text()
        assert log.count("Outputs in") == 1 and f"Outputs in {folder}\n" in log
        writers.add(writer(folder))  # one process wrote its TensorBoard files
        assert sorted(series(folder, "train/loss_step")) == [0, 1]
    assert rates == {0.001, 0.002}
    assert len(writers) == 2
    # Each process reported a different folder.
    assert len({o[o.index("Outputs in") :].splitlines()[0] for o in outputs}) == 2
