"""Reading images and instance masks from disk, the same way for every data set format.

Images come back as RGB uint8 [H,W,3] whatever they were stored as (grayscale, RGBA, palette,
16-bit), turned upright by their EXIF orientation, as annotation tools show them. Training,
evaluation and ``mrcnn.predict`` all read images here, so a model sees a photo in the frame it was
annotated and trained in. Every failure raises :class:`~mrcnn.data.errors.DataError` naming the
file, where it came from and the fix. An image can also come as the bytes embedded in an
annotation file (LabelMe's ``imageData``): pass them as ``data``; ``path`` then names the file that
holds them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mrcnn.data.errors import DataError, UnreadableFileError

# File endings read as images (compared lower-case): what predict lists in a folder and what
# mask folders pair with masks by default.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}


def normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """File endings as lower-case suffixes with their dot (``PNG`` -> ``.png``), for matching
    ``Path.suffix.lower()``."""
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def _open(path: Path, source: str, data: bytes | None = None) -> Image.Image:
    if data is not None:
        try:
            return Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError) as error:
            raise UnreadableFileError(
                f"{source}: cannot read the image embedded in {path} ({error}). Re-save the file "
                "with its image, or remove the embedded data so that the image file is read."
            ) from None
    if not path.is_file():
        raise UnreadableFileError(missing_file_message(path, source))
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise UnreadableFileError(
            f"{source}: cannot read {path} as an image ({error}). Replace the file with a "
            "readable PNG/JPEG/TIFF or remove it from the data set."
        ) from None


def missing_file_message(path: Path, source: str) -> str:
    """What every command says of an image file that is not there (``check``, the start-up
    check of ``train`` and ``evaluate``, a loader)."""
    return (
        f"{source}: image file {path} does not exist. Check the image folder setting "
        "(data...images / data.root) or remove the entry that names it."
    )


def image_hw(path: Path, source: str, data: bytes | None = None) -> tuple[int, int]:
    """Height and width as shown upright, from the file header only (no pixel decoding)."""
    with _open(path, source, data) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in _TRANSPOSED else (height, width)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float pixels to 0..255 (per image), keep 8-bit as is."""
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def read_image(path: Path, source: str, data: bytes | None = None) -> np.ndarray:
    """RGB uint8 [H,W,3], upright: grayscale, RGBA, palette and 16-bit images are converted."""
    with _open(path, source, data) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                gray = _to_uint8(np.array(image))
                return np.repeat(gray[..., None], 3, axis=2)
            if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            ):
                image = image.convert("RGBA")  # RGBA -> RGB drops alpha, as on a black page
            return np.array(image.convert("RGB"), dtype=np.uint8)
        except OSError as error:  # PIL's "image file is truncated", decoder errors
            raise UnreadableFileError(
                f"{source}: image file {path} is truncated or corrupt ({error}). Re-download or "
                "re-export it, or remove it from the data set."
            ) from None


def read_mask(path: Path, source: str) -> np.ndarray:
    """An instance-id mask [H,W] (integer ids, 0 = background) from a PNG or TIFF file."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            array = tifffile.imread(path)
        except Exception as error:  # tifffile raises many types for bad files
            raise UnreadableFileError(
                f"{source}: cannot read mask {path} ({error}). Re-export it as a "
                "single-channel PNG or TIFF of instance ids."
            ) from None
    else:
        with _open(path, source) as image:
            try:
                image.load()
            except OSError as error:
                raise UnreadableFileError(
                    f"{source}: mask file {path} is truncated or corrupt ({error}). Re-export it."
                ) from None
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise DataError(
                    f"{source}: mask {path} has mode {image.mode} ({len(image.getbands())} "
                    "channels); a mask must be a single channel of instance ids (0 = background, "
                    "1..N = one id per instance). Re-export it as 8- or 16-bit grayscale."
                )
            array = np.array(image)
    array = np.squeeze(array)
    if array.ndim != 2 or (not np.issubdtype(array.dtype, np.integer) and array.dtype != bool):
        raise DataError(
            f"{source}: mask {path} has shape {array.shape} and type {array.dtype}; expected a "
            "2-D integer image of instance ids (0 = background)."
        )
    return array
