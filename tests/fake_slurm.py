"""SLURM on one machine, for tests: ``sbatch`` and ``srun`` stand-ins, and the variables srun
gives each task.

There is no SLURM cluster here; everything else in a SLURM launch is real. ``sbatch`` runs the
batch script submitit wrote in the background (as a job starts on its first node) and prints
"Submitted batch job <id>"; the script's ``srun`` starts one process per task, every "node"
this machine, each with the variables real srun sets, so that submitit's job environment and
Lightning's ``SLURMEnvironment`` read them as on a cluster. A test puts them on ``PATH`` with
:func:`install` and stops whatever they started with :func:`stop_jobs`.

The job id sets the port: Lightning's SLURMEnvironment listens on 15000 + the id's last four
digits (``MASTER_PORT`` unset), and every "node" is the loopback address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"
STATE = "FAKE_SLURM_STATE"  # a folder: the next job id, the scripts submitted, what was started


def job_id_for_port(port: int) -> str:
    """A job id whose SLURM port (15000 + its last four digits) is ``port``."""
    if not 15000 <= port <= 24999:
        raise ValueError(f"port {port}: SLURM's job-id rule gives ports 15000-24999")
    return f"1{port - 15000:04d}"


def job_env(job_id: str, nodes: int, tasks_per_node: int, name: str = "mrcnn") -> dict[str, str]:
    """What a job's batch script sees (sbatch ``--nodes`` x ``--ntasks-per-node``)."""
    tasks = nodes * tasks_per_node
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": name,
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NTASKS": str(tasks),
        "SLURM_NPROCS": str(tasks),
        "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
        "SLURM_TASKS_PER_NODE": f"{tasks_per_node}(x{nodes})",
        "SLURM_NODELIST": LOOPBACK,
        "SLURM_JOB_NODELIST": LOOPBACK,
    }


def task_env(task: int, nodes: int, tasks_per_node: int) -> dict[str, str]:
    """What srun adds for task ``task`` (global rank) of the job step."""
    return {
        "SLURM_PROCID": str(task),
        "SLURM_NODEID": str(task // tasks_per_node),
        "SLURM_LOCALID": str(task % tasks_per_node),
        "SLURM_STEP_ID": "0",
        "SLURM_STEP_NUM_NODES": str(nodes),
        "SLURM_STEP_NUM_TASKS": str(nodes * tasks_per_node),
        "SLURM_STEP_NODELIST": LOOPBACK,
        "SLURMD_NODENAME": f"node{task // tasks_per_node}",
    }


def _state() -> Path:
    return Path(os.environ[STATE])


def _remember(pid: int, kind: str = "tasks") -> None:
    with open(_state() / kind, "a") as pids:
        pids.write(f"{pid}\n")


def sbatch(argv: list[str]) -> int:
    """``sbatch [options] SCRIPT``: start the script in the background, print the job id."""
    script = Path(argv[-1])
    text = script.read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, re.MULTILINE))
    job_id = (_state() / "next_job_id").read_text().strip()
    (_state() / f"{job_id}.sbatch").write_text(text)
    env = os.environ | job_env(
        job_id,
        int(options.get("nodes", 1)),
        int(options.get("ntasks-per-node", 1)),
        options.get("job-name", "job"),
    )
    job = subprocess.Popen(
        ["bash", str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _remember(job.pid, "jobs")
    print(f"Submitted batch job {job_id}")
    return 0


def srun(argv: list[str]) -> int:
    """``srun [--unbuffered] [--output F] [--error F] COMMAND...``: one process per task,
    ``%j`` and ``%t`` in the file names replaced as srun does; the highest exit status."""
    files: dict[str, str] = {}
    words = list(argv)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in ("--output", "--error"):
            files[option] = words.pop(0)
    nodes = int(os.environ["SLURM_NNODES"])
    per_node = int(os.environ["SLURM_NTASKS_PER_NODE"])
    job_id = os.environ["SLURM_JOB_ID"]
    tasks = []
    for task in range(nodes * per_node):

        def name(pattern: str, task: int = task) -> str:
            return pattern.replace("%j", job_id).replace("%t", str(task))

        out = open(name(files.get("--output", os.devnull)), "a")  # noqa: SIM115
        err = open(name(files["--error"]), "a") if "--error" in files else out  # noqa: SIM115
        process = subprocess.Popen(
            [name(word) for word in words],
            env=os.environ | task_env(task, nodes, per_node),
            stdout=out,
            stderr=err,
        )
        _remember(process.pid)
        tasks.append(process)
    return max(process.wait() for process in tasks)


def install(bin_dir: Path, state: Path, job_id: str) -> dict[str, str]:
    """Write ``sbatch`` and ``srun`` into ``bin_dir``; the variables a command needs to find
    them (``PATH`` first, the state folder, the job id the next sbatch gives)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    (state / "next_job_id").write_text(job_id)
    root = Path(__file__).resolve().parents[1]
    for command in ("sbatch", "srun"):
        script = bin_dir / command
        script.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(root)!r})\n"
            "from tests import fake_slurm\n"
            f"sys.exit(fake_slurm.{command}(sys.argv[1:]))\n"
        )
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STATE: str(state)}


def stop_jobs(state: Path) -> None:
    """Kill what the stand-ins started and still runs, by the ids they recorded: each job's
    process group (its script, srun and the tasks), then any task left."""
    for kind, kill in (("jobs", os.killpg), ("tasks", os.kill)):
        pids = state / kind
        for line in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(int(line), signal.SIGKILL)
