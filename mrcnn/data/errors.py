"""The error every data problem raises: its message names the file, the id and the fix."""

from __future__ import annotations

from mrcnn.errors import UserError


class DataError(UserError, ValueError):
    """Input data that cannot be used as it is (missing file, bad json, mismatched mask...)."""


def listing(problems: list[str], limit: int = 20) -> str:
    """Problems one per line, the first ``limit`` of them, and how many more there are."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


class UnreadableFileError(DataError):
    """A file that is missing, truncated, corrupt or not an image."""


class SizeMismatchError(DataError):
    """A mask whose size differs from its image (or an image from its json entry)."""
