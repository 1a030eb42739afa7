"""Image files to run a model on (``predict``'s input): found, numbered and read as training
reads images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mrcnn.data.errors import DataError
from mrcnn.data.images import IMAGE_EXTENSIONS, read_image
from mrcnn.errors import UserError


class ImageFilesError(UserError, ValueError):
    """Input images that cannot be found or numbered; the message names the key and the fix."""


def find_images(input_path: str | Path, key: str = "input") -> list[Path]:
    """One image file, or a folder's image files (not sub-folders, not hidden) sorted by name.
    ``key`` is the config key that named the path, for the messages."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise ImageFilesError(f"{key}={input_path}: no such file or folder.")
    images = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise ImageFilesError(
            f"{key}={input_path}: no images in this folder (looked for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}, any case, not in sub-folders)."
        )
    return images


def image_ids_for(files: list[Path], annotations: str | Path | None) -> list[int]:
    """1..N in file order, or the ids a COCO annotation file gives these file names."""
    if annotations is None:
        return list(range(1, len(files) + 1))
    try:
        with open(annotations) as handle:
            images = json.load(handle)["images"]
        by_name = {Path(image["file_name"]).name: int(image["id"]) for image in images}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ImageFilesError(
            f"image_ids_from={annotations}: not a readable COCO annotation file ({error})."
        ) from error
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise ImageFilesError(
            f"image_ids_from={annotations} has no image named {shown}. Give the images that "
            "file describes, or drop image_ids_from to number the images 1..N."
        )
    return [by_name[f.name] for f in files]


class ImageFiles(Dataset):
    """Image files as uint8 RGB [3,H,W], read as training reads them (upright by their EXIF
    orientation, :func:`mrcnn.data.images.read_image`); an unreadable file yields its error
    instead of stopping the others."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            array = read_image(self.files[index], "predict input")
            return {"index": index, "image": torch.from_numpy(array).permute(2, 0, 1).contiguous()}
        except DataError as error:  # the reader's message names the file and what is wrong
            return {"index": index, "image": None, "error": str(error)}
        except Exception as error:  # any other decoder failure also means "skip it, say why"
            return {"index": index, "image": None, "error": f"{type(error).__name__}: {error}"}
