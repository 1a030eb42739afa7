"""Start the ranks of a multi-node run on this machine, as torchrun or srun would start them on
several, and wait for them with a deadline (shared by the distributed tests).

Only loopback addresses are used. Each rank runs in its own session, so that a rank that
outlives the deadline is killed with every process it started, and nothing is left behind.
"""

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.tiny import PROJECT_ROOT, checkout_env

LOOPBACK = "127.0.0.1"
# What torchrun and Lightning read to place a process in a job: a leftover from the calling
# environment would join the test's ranks to something else.
JOB_VARIABLES = re.compile(
    r"^(SLURM_|TORCHELASTIC_|PET_)|^(MASTER_ADDR|MASTER_PORT|RANK|LOCAL_RANK|WORLD_SIZE|"
    r"LOCAL_WORLD_SIZE|GROUP_RANK|NODE_RANK)$"
)


@dataclass
class Rank:
    """A finished rank: its exit status and output (stdout and stderr)."""

    returncode: int
    output: str


def free_port(low: int = 25000, high: int = 29999) -> int:
    """A TCP port in [low, high] that nothing listens on now (a race with other programs is
    possible but unlikely in so wide a range)."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout first on the path, no job variables of the caller, then ``extra``."""
    env = {k: v for k, v in checkout_env().items() if not JOB_VARIABLES.search(k)}
    return env | (extra or {})


def torchrun_command(line: str, port: int) -> list[str]:
    """A documented ``torchrun ... -m mrcnn.train ...`` line as an argument list: this Python's
    torchrun (``python -m torch.distributed.run``, the same program), the port replaced."""
    words = line.split()
    if words[0] != "torchrun":
        raise ValueError(f"not a torchrun line: {line}")
    index = words.index("--master-port")
    words[index + 1] = str(port)
    return [sys.executable, "-m", "torch.distributed.run", *words[1:]]


def run_ranks(
    commands: list[tuple[list[str], dict[str, str]]], cwd: Path, logs: Path, timeout: float
) -> list[Rank]:
    """Start every ``(argv, env)`` at once in ``cwd`` (made if missing) and wait for all; past
    ``timeout`` seconds every rank still running is killed with its children, and the test fails
    naming them. Each rank's output goes to ``<logs>/rank<i>.log``."""
    cwd.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    logs = [logs / f"rank{index}.log" for index in range(len(commands))]
    processes = []
    for (argv, env), log in zip(commands, logs, strict=True):
        with open(log, "w") as sink:
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [index for index, p in enumerate(processes) if p.poll() is None]
        for index in hung:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(processes[index].pid, signal.SIGKILL)
            processes[index].wait()
    ranks = [Rank(p.returncode, log.read_text()) for p, log in zip(processes, logs, strict=True)]
    if hung:
        tails = "\n".join(f"--- rank {i}:\n{ranks[i].output[-2000:]}" for i in hung)
        raise AssertionError(f"ranks {hung} still ran after {timeout:.0f} s:\n{tails}")
    return ranks


def docs_torchrun_lines(page: Path = PROJECT_ROOT / "docs" / "scaling.md") -> list[str]:
    """The ``torchrun`` lines of the docs' bash blocks that start the one-machine two-node run
    (the ones on the loopback address), node rank 0 first."""
    lines, in_bash = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if in_bash and line.startswith("torchrun ") and LOOPBACK in line:
            lines.append(line.split(" #")[0].strip())
    return sorted(lines, key=lambda line: line.split("--node-rank")[1].split()[0])
