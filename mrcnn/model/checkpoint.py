"""Rebuild a trained model from an ``mrcnn`` checkpoint alone, without running code from it.

Checkpoints are read with ``torch.load(..., weights_only=True)``: only tensors and plain data
(dicts, lists, numbers, strings) are accepted, so a checkpoint from someone else cannot execute
anything here. ``MaskRCNNModule`` saves its hyper-parameters and class mapping as plain data
for exactly this reason.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from mrcnn.data.categories import Categories
from mrcnn.errors import UserError
from mrcnn.model.module import MaskRCNNModule

log = logging.getLogger(__name__)

REQUIRED_HPARAMS = ("categories", "backbone")


class CheckpointError(UserError, ValueError):
    """A file that is not a usable ``mrcnn`` checkpoint; the message says what it is instead."""


class ClassesMismatchError(UserError, ValueError):
    """The checkpoint's classes differ from the data's: its labels would mean other things."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True``; clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist. Training writes them to "
            "<run dir>/checkpoints/ (last.ckpt and best-*.ckpt)."
        )
    if not path.is_file():
        raise CheckpointError(f"{path} is a directory; pass a checkpoint file (*.ckpt) in it.")
    with path.open("rb") as file:
        magic = file.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):
        # Neither torch.save's zip format nor a (legacy) pickle: do not let torch guess.
        raise CheckpointError(_not_a_checkpoint(path, "not in torch.save's format"))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error)
        if "Weights only load failed" in reason and "GLOBAL" in reason:
            detail = next(
                (line.strip() for line in reason.splitlines() if "GLOBAL" in line),
                "an object torch.load(weights_only=True) does not allow",
            )
            raise CheckpointError(
                f"Refused to load {path}: it holds objects other than tensors and plain data, "
                f"which could run code when unpickled ({detail}). mrcnn checkpoints never do; "
                "do not load this file unless you fully trust where it came from."
            ) from None
        raise CheckpointError(
            _not_a_checkpoint(path, f"torch.load failed: {reason.splitlines()[0]}")
        ) from None
    except Exception as error:  # text files, truncated zips, ...: torch raises many kinds
        first_line = (str(error).splitlines() or [""])[0]
        raise CheckpointError(
            _not_a_checkpoint(path, f"torch.load failed: {type(error).__name__}: {first_line}")
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a {type(data).__name__}, not a checkpoint. Pass a checkpoint written "
            "by `python -m mrcnn.train` (<run dir>/checkpoints/last.ckpt or best-*.ckpt)."
        )
    if "state_dict" not in data or "hyper_parameters" not in data:
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            raise CheckpointError(
                f"{path} is a bare state dict (e.g. a torchvision .pth) without hyper-parameters "
                "or classes, so it cannot rebuild a model by itself. Fine-tune from it with "
                f"`python -m mrcnn.train backbone.weights_path={path}`, then pass the resulting "
                "<run dir>/checkpoints/last.ckpt here."
            )
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint from `python -m mrcnn.train` (keys: "
            f"{sorted(map(str, data))[:8]}). Pass <run dir>/checkpoints/last.ckpt or best-*.ckpt."
        )
    hparams = data["hyper_parameters"]
    missing = [key for key in REQUIRED_HPARAMS if key not in hparams]
    if missing:
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not an mrcnn one: its hyper-parameters lack "
            f"{missing}. Pass a checkpoint written by `python -m mrcnn.train`."
        )
    return data


def _not_a_checkpoint(path: Path, reason: str) -> str:
    with path.open("rb") as file:
        head = file.read(512)
    decoded = head.decode("utf-8", errors="replace")
    text = "\ufffd" not in decoded[:-4] and all(c.isprintable() or c in "\t\r\n" for c in decoded)
    what = "a text file" if head and text else "not a PyTorch checkpoint"
    return (
        f"{path} is {what} ({reason}). Pass a checkpoint "
        "written by `python -m mrcnn.train` (<run dir>/checkpoints/last.ckpt or best-*.ckpt)."
    )


def load_module(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> MaskRCNNModule:
    """The trained ``MaskRCNNModule`` from a checkpoint alone (architecture, weights, classes).

    No pretrained weights are downloaded (``load_weights=False``): the checkpoint's own state
    dict is loaded right after, strictly, so a mismatch is an error, not a silent partial load.
    """
    data = read_checkpoint(ckpt_path)
    hparams = dict(data["hyper_parameters"])
    # Checkpoints written before the validation options became callbacks (mrcnn 0.1, until
    # 2026-12) carry them as a hyper-parameter; they do not describe the model.
    hparams.pop("evaluation", None)
    try:
        module = MaskRCNNModule(**hparams, load_weights=False)
    except TypeError as error:
        raise CheckpointError(
            f"{ckpt_path} was written by another mrcnn version: its hyper-parameters do not "
            f"fit MaskRCNNModule ({error})."
        ) from None
    try:
        module.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"The weights in {ckpt_path} do not fit the model its hyper-parameters describe: "
            f"{str(error).splitlines()[0]}"
        ) from None
    log.info(
        "Loaded %s (step %s): backbone %s, %d classes %s.",
        ckpt_path,
        data.get("global_step", "?"),
        hparams["backbone"].get("name", "?"),
        len(module.categories.names),
        list(module.categories.names),
    )
    return module.to(map_location)


def ensure_classes_match(model_categories: Categories, data_categories: Categories) -> None:
    """Raise :class:`ClassesMismatchError` if a model's classes are not the data's, in order.

    Model label ``k`` means ``model_categories.names[k-1]``; evaluating on data whose list
    differs (other names, ids or order) would score one class's detections as another's.
    """
    if model_categories == data_categories:
        return
    model_pairs = list(zip(model_categories.dataset_ids, model_categories.names, strict=True))
    data_pairs = list(zip(data_categories.dataset_ids, data_categories.names, strict=True))
    only_model = [p for p in model_pairs if p not in data_pairs]
    only_data = [p for p in data_pairs if p not in model_pairs]
    lines = [
        "The checkpoint's classes do not match the data's.",
        f"  checkpoint ({len(model_pairs)}): {_pairs(model_pairs)}",
        f"  data       ({len(data_pairs)}): {_pairs(data_pairs)}",
    ]
    if only_model or only_data:
        lines.append(
            f"  only in checkpoint: {_pairs(only_model)}; only in data: {_pairs(only_data)}"
        )
    else:
        lines.append("  same classes, different order.")
    lines.append(
        "Evaluate on the data set the model was trained for (the same category list), or "
        "fine-tune on this one with backbone.weights_path=<checkpoint>."
    )
    raise ClassesMismatchError("\n".join(lines))


def _pairs(pairs: list[tuple[int, str]], limit: int = 12) -> str:
    shown = ", ".join(f"{cid}:{name}" for cid, name in pairs[:limit])
    return shown + (f", ... ({len(pairs) - limit} more)" if len(pairs) > limit else "") or "-"
