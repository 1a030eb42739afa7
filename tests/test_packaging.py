"""mrcnn as a user installs it: a built wheel (not this checkout) in its own environment, run
from an empty folder, with the user's own config folder (docs/configs.md's worked example).

Slow (building and installing the wheel, three short commands: about a minute). The wheel goes
into a fresh virtual environment without its dependencies, which come from this environment's
site-packages (a ``.pth`` line: no download, and this environment's own mrcnn, an editable
checkout, stays invisible there). ``.ci/run`` also installs the wheel with its dependencies into
a clean environment.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.tiny import PROJECT_ROOT, TINY, TINY_DATA

EXAMPLE_CONFIGS = PROJECT_ROOT / "docs" / "examples" / "my_configs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, "."],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = out.glob("mrcnn-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` folder of a fresh environment holding the wheel."""
    root = tmp_path_factory.mktemp("wheel_env")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the wheel's environment, from ``cwd``, without this checkout on the path."""
    done = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@pytest.mark.slow
def test_the_wheel_holds_the_configs_and_the_sweeper(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "mrcnn/conf/train.yaml" in names and "mrcnn/conf/evaluation/default.yaml" in names
    assert "hydra_plugins/mrcnn_optuna_sweeper/__init__.py" in names
    assert "hydra_plugins/__init__.py" not in names  # Hydra's plugins are a namespace package
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


@pytest.mark.slow
def test_the_installed_wheel_runs_from_an_empty_folder(installed, tmp_path):
    where = run(installed, "python", "-c", "import mrcnn; print(mrcnn.__file__)", cwd=tmp_path)
    assert str(PROJECT_ROOT) not in where.stdout and "site-packages" in where.stdout
    assert "train" in run(installed, "mrcnn", "--help", cwd=tmp_path).stdout
    run(installed, "mrcnn", "train", *TINY, "logger=none", "hydra.run.dir=run", cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    done = run(
        installed,
        "mrcnn",
        "evaluate",
        "model=run/checkpoints/last.ckpt",
        "evaluation.max_detections=300",
        *TINY_DATA,
        "hydra.run.dir=eval",
        cwd=tmp_path,
    )
    assert "segm" in done.stdout and (tmp_path / "eval" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_users_config_folder_works_with_the_installed_wheel(installed, tmp_path):
    """docs/configs.md: data/my_coco.yaml and experiment/my_run.yaml in the user's project."""
    from tests.data.tmp_data import small_coco

    data = tmp_path / "data"
    images, annotations = small_coco(data / "my_coco")
    (images.parent / "train.json").write_text(annotations.read_text())
    (images.parent / "val.json").write_text(annotations.read_text())
    run(
        installed,
        "mrcnn",
        "train",
        f"--config-dir={EXAMPLE_CONFIGS}",
        "experiment=my_run",
        f"paths.data_dir={data}",
        "backbone.weights=null",
        *[o for o in TINY if not o.startswith("data.")],
        "data.num_workers=0",
        "data.batch_size=1",
        "data.image_size=128",
        "data.max_image_size=128",
        "logger=none",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
