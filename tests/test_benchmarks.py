"""The benchmark scripts run and write well-formed rows (timing targets live in their output,
never here: this machine is shared and a timing assertion would only measure the neighbours)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.run import FIGURES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_has_help_and_the_shared_interface(name, capsys):
    module = __import__(f"benchmarks.{name}", fromlist=["run", "main", "add_arguments"])
    assert callable(module.run) and callable(module.add_arguments)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert f"python -m benchmarks.{name}" in usage
    assert "--quick" in usage and "--threads" in usage and "--json" in usage


# slow: 27 s alone (the validation and evaluation figures, --quick); the default suite stays
# under 15 min
@pytest.mark.slow
def test_quick_run_writes_well_formed_rows(tmp_path, data_dir):
    out = tmp_path / "latest.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MRCNN_DATA_DIR": str(data_dir)}
    figures = ["--only", "validation", "evaluation"]
    command = ["benchmarks.run", "--quick", "--json", str(out), *figures]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["machine"]["torch_threads"] == 1
    assert payload["machine"]["cores"] >= 1
    rows = payload["rows"]
    assert [row["figure"] for row in rows] == [2, 4, 4]
    for row in rows:
        assert row["measured"] > 0 and row["baseline"] > 0
        assert math.isclose(row["ratio"], row["measured"] / row["baseline"], rel_tol=1e-3)
        assert row["target"].startswith(("<=", ">="))
        assert isinstance(row["met"], bool)
        assert row["threads"] == 1
    # The two evaluations must agree exactly, whatever the speed.
    assert all(row["identical_stats"] for row in rows if row["figure"] == 4)
    # The printed table is the Markdown table docs/benchmarks.md shows.
    assert "| fig | what | mrcnn | baseline | unit | ratio | target | met |" in done.stdout


def test_learning_speed_runs_the_train_command_and_reads_its_curve_back(tmp_path):
    from benchmarks.learning_speed import QUICK, train_and_read_curve

    result = train_and_read_curve(tmp_path / "run", QUICK)
    assert result["steps"] == 2
    assert result["wall_s"] > 0
    ((step, seconds, ap50, ap),) = result["curve"]  # one validation, at the last step
    assert step == 1 and 0 < seconds <= result["wall_s"]
    assert 0 <= ap <= ap50 <= 1
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_learning_curves_plot_and_table_show_every_saved_candidate(tmp_path):
    from PIL import Image

    from benchmarks.common import machine
    from benchmarks.learning_curves import CANDIDATES, plot, table
    from benchmarks.learning_speed import QUICK, train_and_read_curve

    result = train_and_read_curve(tmp_path / "run", QUICK)
    saved = [
        {**result, "name": name, "what": CANDIDATES[name][0], "machine": machine()}
        for name in ("r18_light128", "r18_light64_roi32")
    ]
    for entry in saved:
        entry["machine"]["load_average_before"] = [0.5, 0.5, 0.5]
    rows = table(saved).splitlines()
    assert len(rows) == 2 + len(saved)
    assert all(f"`{entry['name']}`" in row for entry, row in zip(saved, rows[2:], strict=True))
    picture = plot(saved, tmp_path / "curves.png")
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300


def test_openvino_profile_splits_the_time_by_part_of_the_model(tiny_checkpoint, tmp_path):
    pytest.importorskip("openvino")
    from benchmarks.export import openvino_profile
    from mrcnn.deploy.exporter import export_model

    model = export_model(tiny_checkpoint, "onnx", tmp_path / "model.onnx").output
    report = openvino_profile(model, [torch.rand(3, 60, 80), torch.rand(3, 64, 64)])
    lines = report.splitlines()
    assert lines[0].startswith("OpenVINO profile, 2 images:")
    by_part = lines[lines.index("  by part:") + 1 : lines.index("  by layer type:")]
    shares = {line.rsplit(None, 2)[0].strip(): float(line.split()[-2]) for line in by_part}
    assert {"backbone (ResNet)", "FPN", "RPN"} <= set(shares)
    assert any(part.startswith("mask head") for part in shares)
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)
    assert lines[-1].startswith("  convolutions and matrix products: ")
    assert 0 < float(lines[-1].split()[-2]) <= 100


@pytest.mark.slow  # every section of the GPU script, 64 px, on the CPU: 8-14 minutes (busy 2 cores)
def test_gpu_script_runs_tiny_on_the_cpu_with_every_section_and_check(tmp_path):
    out, work = tmp_path / "gpu.json", tmp_path / "work"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu",
            "--tiny",
            "--json",
            str(out),
            "--workdir",
            str(work),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["tiny"] is True
    assert payload["machine"]["device"] in ("cpu", "cuda")
    assert set(payload["seconds"]) == {"training", "predict", "commands", "total"}
    rows = payload["rows"]
    training = [row for row in rows if row["figure"] == "G1" and "precision" in row]
    # Both precisions, each with and without channels-last, both sides measured.
    assert [(row["asked"], row["channels_last"]) for row in training] == [
        ("16-mixed", False),
        ("16-mixed", True),
        ("bf16-mixed", False),
        ("bf16-mixed", True),
    ]
    for row in training:
        assert row["measured"] > 0 and row["baseline"] > 0 and row["target"] == "<= 1.03"
        assert min(row["images_per_s"].values()) > 0
    assert [row["figure"] for row in rows if row["figure"] != "G1"] == ["G2", "G3"]
    checks = payload["checks"]
    assert len(checks) == 5 and all(check["ok"] for check in checks), checks
    run_dir = work / "commands" / "train_gpu"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (
        work / "commands" / "model.onnx"
    ).is_file()
    # The printed tables are docs/benchmarks.md's.
    assert "| fig | what | mrcnn | baseline | unit | ratio | target | met |" in done.stdout
    assert "| check | ok | s | detail |" in done.stdout


def test_gpu_script_without_a_gpu_says_to_use_tiny(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run in full")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--json", str(tmp_path / "gpu.json")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr and "--tiny" in done.stderr
    assert not (tmp_path / "gpu.json").exists()
