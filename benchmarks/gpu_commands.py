"""The commands a GPU user runs first, end to end on the device, each one a pass/fail check.

1. ``mrcnn train trainer=gpu`` for a short run: validations (COCO AP), image panels and
   checkpoints, read back from the run folder;
2. the same run resumed from its ``last.ckpt`` to more steps (it must continue, not restart);
3. ``mrcnn evaluate`` of that checkpoint on the device and on the CPU: the same AP;
4. ``mrcnn export format=onnx`` of the GPU-trained checkpoint, and ONNX Runtime on the CPU
   scoring the exported model as PyTorch scored the checkpoint;
5. ``mrcnn train trainer=ddp trainer.devices=1``: Lightning's DDP with one process (NCCL on a
   GPU).

Commands run as a user runs them (``python -m mrcnn.<command>``, a subprocess each, the output
kept in ``<workdir>/<name>.log``); evaluation runs in this process (``mrcnn.evaluate.evaluate``)
so that its time and metrics come back directly. On a CPU (``--tiny``) the same commands run
with ``trainer.accelerator=cpu``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.common import make_row, quiet
from mrcnn.config import compose_config
from mrcnn.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
# AP may move a little between devices (TF32 convolutions on Ampere and later) and between
# PyTorch and ONNX Runtime (export parity is 1e-3 px on boxes: tests/deploy).
AP_TOLERANCE_DEVICES = 0.02
AP_TOLERANCE_ONNX = 0.01


@dataclass
class Check:
    """One end-to-end check: what ran, whether it did what a user relies on, and how long."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """How long the runs are: ``steps`` then resumed to ``resumed_steps``, validating every
    ``val_every``; ``data`` are the data overrides (also evaluate's)."""

    steps: int
    resumed_steps: int
    val_every: int
    ddp_steps: int
    data: tuple[str, ...]
    timeout_s: int


TINY = Plan(
    steps=2,
    resumed_steps=4,
    val_every=2,
    ddp_steps=2,
    data=(
        "data.train.num_images=8",
        "data.val.num_images=4",
        "data.image_size=128",
        "data.max_image_size=128",
        "data.batch_size=2",
        "data.num_workers=0",
    ),
    timeout_s=600,
)
# The default model and synthetic set (128 px, batch 4, 64 validation images): a GPU step is a
# few milliseconds, so 300 steps and 2 validations take well under a minute of work.
FULL = Plan(steps=300, resumed_steps=400, val_every=150, ddp_steps=50, data=(), timeout_s=600)


def mrcnn_command(
    command: str, args: Sequence[str], cwd: Path, log: Path, timeout_s: int
) -> tuple[int, float, str]:
    """``python -m mrcnn.<command> <args>`` with this checkout first on the path: exit status,
    seconds, and the output (also written to ``log``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"mrcnn.{command}", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        printed = f"{error.stdout or ''}{error.stderr or ''}"
        code, output = -1, f"timed out after {timeout_s} s\n{printed}"
    log.write_text(output)
    return code, time.perf_counter() - start, output


def _tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def event_files(run_dir: Path) -> list[Path]:
    """The run's TensorBoard event files, oldest first (one per process that logged)."""
    return sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"), key=os.path.getmtime)


def read_events(path: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    return accumulator.Reload()


def _global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def _problems_of_training_run(
    run_dir: Path, steps: int, validations: int, output: str, cuda: bool
) -> list[str]:
    problems = []
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return [f"no {last}"]
    if _global_step(last) != steps:
        problems.append(f"last.ckpt at step {_global_step(last)}, not {steps}")
    if not list((run_dir / "checkpoints").glob("best-*.ckpt")):
        problems.append("no best-*.ckpt")
    tags = {"scalars": set(), "images": set()}
    for path in event_files(run_dir):
        found = read_events(path).Tags()
        tags["scalars"] |= set(found["scalars"])
        tags["images"] |= set(found["images"])
    if "val/segm_AP" not in tags["scalars"]:
        problems.append("no val/segm_AP in the TensorBoard events")
    else:
        aps = [
            e
            for path in event_files(run_dir)
            if "val/segm_AP" in read_events(path).Tags()["scalars"]
            for e in read_events(path).Scalars("val/segm_AP")
        ]
        if len(aps) < validations:
            problems.append(f"{len(aps)} validations logged, expected {validations}")
    if "val/ground_truth_vs_prediction" not in tags["images"]:
        problems.append("no image panels (val/ground_truth_vs_prediction)")
    device = "CUDA" if cuda else "CPU"
    if f"on {device} ->" not in output:
        problems.append(f"no 'Precision: ... on {device}' line")
    return problems


def _last_ap(run_dir: Path) -> float:
    values = [
        e.value
        for path in event_files(run_dir)
        if "val/segm_AP" in read_events(path).Tags()["scalars"]
        for e in read_events(path).Scalars("val/segm_AP")
    ]
    return values[-1] if values else float("nan")


def run(
    device: torch.device, plan: Plan, workdir: Path
) -> tuple[list[dict[str, Any]], list[Check]]:
    """Every check in order (a check that needs an earlier one's output is failed when that
    one failed), and the rows with their timings."""
    workdir.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"
    on_cpu = [] if cuda else ["trainer.accelerator=cpu"]
    quiet_run = ["trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    run_dir = workdir / "train_gpu"

    # 1. A short trainer=gpu run, pinned memory on.
    args = [
        "trainer=gpu",
        *on_cpu,
        *plan.data,
        *(["data.pin_memory=true"] if cuda else []),
        f"trainer.max_steps={plan.steps}",
        f"trainer.val_check_interval={plan.val_every}",
        "evaluation.image_panels=4",
        *quiet_run,
        f"hydra.run.dir={run_dir}",
    ]
    code, seconds, output = mrcnn_command(
        "train", args, workdir, workdir / "train_gpu.log", plan.timeout_s
    )
    problems = [f"exit status {code}: {_tail(output)}"] if code else []
    if not code:
        validations = plan.steps // plan.val_every
        problems = _problems_of_training_run(run_dir, plan.steps, validations, output, cuda)
    trained = not problems
    checks.append(
        Check(
            "mrcnn train trainer=gpu: validations, panels, checkpoints",
            trained,
            seconds,
            "; ".join(problems)
            or f"{plan.steps} steps, segm AP {_last_ap(run_dir):.3f} at the last validation",
        )
    )

    # 2. Resumed from its last.ckpt to more steps: the new process must continue at the step
    # the checkpoint holds, not start again.
    start = time.perf_counter()
    problems = [] if trained else ["the run to resume failed"]
    if trained:
        before = set(event_files(run_dir))
        args = [
            "ckpt_path=last",
            f"trainer.max_steps={plan.resumed_steps}",
            *on_cpu,
            f"hydra.run.dir={run_dir}",
        ]
        code, _, output = mrcnn_command(
            "train", args, workdir, workdir / "resume.log", plan.timeout_s
        )
        last = run_dir / "checkpoints" / "last.ckpt"
        if code:
            problems.append(f"exit status {code}: {_tail(output)}")
        elif _global_step(last) != plan.resumed_steps:
            problems.append(f"last.ckpt at step {_global_step(last)}, not {plan.resumed_steps}")
        new = [path for path in event_files(run_dir) if path not in before]
        steps = sorted(
            e.step
            for path in new
            if "train/loss_step" in read_events(path).Tags()["scalars"]
            for e in read_events(path).Scalars("train/loss_step")
        )
        if not code and (not steps or steps[0] < plan.steps):
            problems.append(f"the resumed process logged from step {steps[:1]}, not {plan.steps}")
        if not code and "Resuming from" not in output:
            problems.append("no 'Resuming from' line")
    checks.append(
        Check(
            "mrcnn train ckpt_path=last: resumes the GPU run where it stopped",
            not problems,
            time.perf_counter() - start,
            "; ".join(problems) or f"steps {plan.steps} -> {plan.resumed_steps}",
        )
    )

    # 3. evaluate on the device and on the CPU.
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    start = time.perf_counter()
    problems = [] if trained else ["no checkpoint to evaluate"]
    for name, where, model in (("device", device.type, last), ("cpu", "cpu", last)):
        if not trained:
            break
        cfg = compose_config(
            [
                f"model_path={model}",
                *plan.data,
                f"device={where}",
                f"output={workdir / f'metrics_{name}.json'}",
            ],
            output_dir=workdir / f"evaluate_{name}",
            config_name="evaluate",
        )
        begin = time.perf_counter()
        try:
            with quiet():
                metrics[name] = evaluate(cfg)
        except Exception as error:  # reported as the check's failure, the script goes on
            problems.append(f"evaluate device={where}: {type(error).__name__}: {error}")
            break
        times[name] = time.perf_counter() - begin
    if len(metrics) == 2:
        gap = abs(metrics["device"]["segm_AP"] - metrics["cpu"]["segm_AP"])
        if gap > AP_TOLERANCE_DEVICES:
            problems.append(f"segm AP differs by {gap:.4f} between {device.type} and cpu")
        rows.append(
            make_row(
                "G3",
                f"mrcnn evaluate, {device.type} / cpu (same checkpoint)",
                times["device"],
                times["cpu"],
                "s",
                None,
                threads=torch.get_num_threads(),
                notes=(
                    f"segm AP {metrics['device']['segm_AP']:.4f} on {device.type}, "
                    f"{metrics['cpu']['segm_AP']:.4f} on cpu; model=light, 128 px"
                ),
            )
        )
    checks.append(
        Check(
            f"mrcnn evaluate on {device.type} and on cpu: the same AP",
            not problems and len(metrics) == 2,
            time.perf_counter() - start,
            "; ".join(problems)
            or f"segm AP {metrics['device']['segm_AP']:.4f} / {metrics['cpu']['segm_AP']:.4f}",
        )
    )

    # 4. Export the GPU-trained checkpoint to ONNX; ONNX Runtime on the CPU scores it.
    start = time.perf_counter()
    onnx = workdir / "model.onnx"
    problems = [] if "cpu" in metrics else ["no checkpoint metrics to compare with"]
    if not problems:
        args = [f"model={last}", "format=onnx", f"output={onnx}"]
        code, _, output = mrcnn_command(
            "export", args, workdir, workdir / "export.log", plan.timeout_s
        )
        if code:
            problems.append(f"export: exit status {code}: {_tail(output)}")
    if not problems:
        cfg = compose_config(
            [f"model_path={onnx}", *plan.data, "device=cpu", f"output={workdir / 'onnx.json'}"],
            output_dir=workdir / "evaluate_onnx",
            config_name="evaluate",
        )
        try:
            with quiet():
                metrics["onnx"] = evaluate(cfg)
        except Exception as error:
            problems.append(f"evaluate model=model.onnx: {type(error).__name__}: {error}")
    if "onnx" in metrics:
        gap = abs(metrics["onnx"]["segm_AP"] - metrics["cpu"]["segm_AP"])
        if gap > AP_TOLERANCE_ONNX:
            problems.append(f"segm AP of the ONNX model differs by {gap:.4f}")
    checks.append(
        Check(
            "mrcnn export format=onnx of the GPU-trained checkpoint; ONNX Runtime (CPU) scores "
            "it as PyTorch does",
            not problems,
            time.perf_counter() - start,
            "; ".join(problems)
            or f"segm AP {metrics['onnx']['segm_AP']:.4f} (ONNX Runtime) / "
            f"{metrics['cpu']['segm_AP']:.4f} (checkpoint)",
        )
    )

    # 5. Lightning's DDP with one process (NCCL on a GPU, gloo on a CPU).
    ddp_dir = workdir / "train_ddp1"
    args = [
        "trainer=ddp",
        "trainer.devices=1",
        *on_cpu,
        *plan.data,
        f"trainer.max_steps={plan.ddp_steps}",
        f"trainer.val_check_interval={plan.ddp_steps}",
        *quiet_run,
        f"hydra.run.dir={ddp_dir}",
    ]
    code, seconds, output = mrcnn_command(
        "train", args, workdir, workdir / "train_ddp1.log", plan.timeout_s
    )
    problems = [f"exit status {code}: {_tail(output)}"] if code else []
    backend = "nccl" if cuda else "gloo"
    if not code:
        last_ddp = ddp_dir / "checkpoints" / "last.ckpt"
        if not last_ddp.is_file() or _global_step(last_ddp) != plan.ddp_steps:
            problems.append(f"no last.ckpt at step {plan.ddp_steps}")
        if f"distributed_backend={backend}" not in output:
            problems.append(f"not on {backend}")
        if "x 1 devices x 1 nodes" not in output:
            problems.append("no learning-rate line for 1 device x 1 node")
    checks.append(
        Check(
            "mrcnn train trainer=ddp trainer.devices=1",
            not problems,
            seconds,
            "; ".join(problems) or f"{plan.ddp_steps} steps on {backend}",
        )
    )
    return rows, checks
