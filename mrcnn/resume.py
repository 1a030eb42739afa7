"""Which checkpoint a run resumes, and the overrides it resumes with."""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from mrcnn.callbacks import saved_overrides


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
