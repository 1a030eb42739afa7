"""Which process this is in a distributed run, known before the Trainer exists."""

from __future__ import annotations

import os

from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment


def is_launched_rank_zero() -> bool:
    """False in a process a DDP launcher started for a rank above zero (from the variables
    Lightning's launcher, torchrun and SLURM set)."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name) or 0) == 0 for name in names)


def lightning_starts_the_ranks() -> bool:
    """Whether Lightning would start the other DDP processes itself, by running this command
    again (a plain machine). Under SLURM (srun, e.g. Hydra's submitit launcher) or torchrun the
    cluster starts every rank, and a Hydra multirun job is one rank among them."""
    return not (SLURMEnvironment.detect() or TorchElasticEnvironment.detect())
