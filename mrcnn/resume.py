"""Which checkpoint a run resumes, the overrides it resumes with, and the check that a new run
does not write into another run's folder."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from mrcnn.callbacks import saved_overrides
from mrcnn.errors import ConfigError
from mrcnn.preemption import slurm_restart_count

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume: a file, or ``last`` for ``<output_dir>/checkpoints/last.ckpt``."""
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: there is no {path}. Name the run to resume with "
                "hydra.run.dir=<its folder> (the one holding checkpoints/last.ckpt), or give "
                "ckpt_path=/path/to/file.ckpt."
            )
        return path
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint file. Runs write theirs to "
            "<run dir>/checkpoints/ (last.ckpt, best-*.ckpt)."
        )
    return path


def resume_overrides(ckpt_path: Path, overrides: list[str]) -> list[str]:
    """The checkpoint's run overrides, then this command's (which win for the same key)."""
    parser = OverridesParser.create()
    given = {o.key_or_group for o in parser.parse_overrides(overrides)}
    earlier = saved_overrides(ckpt_path)
    kept = [
        o
        for o, p in zip(earlier, parser.parse_overrides(earlier), strict=True)
        if p.key_or_group not in given
    ]
    return [*kept, *overrides]


def requeued_checkpoint(output_dir: str | Path) -> Path | None:
    """``<output_dir>/checkpoints/last.ckpt`` when SLURM restarted this job (it requeued it
    after a stop signal or a pre-emption, and runs the same command again): the job continues
    where it stopped, as if it had been given ``ckpt_path=last``. None otherwise."""
    restarts = slurm_restart_count()
    path = Path(output_dir) / "checkpoints" / "last.ckpt"
    if restarts == 0 or not path.is_file():
        return None
    log.info("SLURM restarted this job (SLURM_RESTART_COUNT=%d): resuming from %s.", restarts, path)
    return path


def check_run_folder_is_free(
    output_dir: str | Path, checkpoint_dirs: Iterable[str | Path], ckpt_path: Path | None
) -> None:
    """A run writes its checkpoints into its folder only when none of another run are there,
    or when it continues them (``ckpt_path`` one of them): two runs would otherwise overwrite
    each other's ``last.ckpt`` (and share one log and one TensorBoard folder)."""
    folders = {Path(d).resolve() for d in checkpoint_dirs}
    if ckpt_path is not None and ckpt_path.resolve().parent in folders:
        return
    found = sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt"))
    if not found:
        return
    names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
    raise ConfigError(
        f"The run folder {output_dir} holds the checkpoints of another run ({names} in "
        f"{found[0].parent}). Continue that run with ckpt_path=last, or start a new one in a "
        "folder of its own: leave hydra.run.dir out (a new folder named by the time) or name "
        "a new one."
    )
