"""The sidecar ``<model>.json`` beside an exported model: how to use it.

It holds the class names and the data set's category ids (``Categories.to_dict()``), the
model's input size and thresholds, the opset and the versions that made the file; ``predict`` and
``evaluate`` rebuild the classes of an exported model from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mrcnn.data.categories import Categories
from mrcnn.errors import UserError
from mrcnn.io import write_json_atomically

# Export formats and the suffix of the file each writes.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SIDECAR_VERSION = 1
EXPORT_HINT = "`mrcnn export model=FILE.ckpt output=model.onnx` writes one"


class ExportError(UserError, ValueError):
    """An exported model or its sidecar that cannot be used; the message says the fix."""


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def write_sidecar(model_path: Path, info: dict[str, Any]) -> Path:
    path = sidecar_path(model_path)
    write_json_atomically({"sidecar_version": SIDECAR_VERSION, **info}, path, indent=2)
    return path


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    """An exported model's sidecar (``<model>.json``), checked enough to rebuild its classes."""
    path = sidecar_path(model_path)
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"{model_path}: no such file ({EXPORT_HINT}, and its .json).")
    try:
        info = json.loads(path.read_text())
        Categories.from_dict(info["categories"])
        if info["format"] not in FORMATS:
            raise ValueError(f"format {info['format']!r} is none of {', '.join(FORMATS)}")
    except FileNotFoundError:
        raise ExportError(
            f"model={model_path} has no sidecar {path}: it holds the classes. Keep the .json "
            "that `mrcnn export` wrote next to the model, or export again."
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(
            f"{path} is not an `mrcnn export` sidecar ({type(error).__name__}: {error}); "
            "export the checkpoint again."
        ) from None
    return info
