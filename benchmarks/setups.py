"""Models, batches and configs that several figures measure on, built as ``mrcnn.train`` does."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn

from mrcnn.builders import build_module, plain
from mrcnn.config import compose_config

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


def synthetic_overrides(quick: bool) -> list[str]:
    """The synthetic set at 256 px, batches of 4, torchvision's ResNet-50 FPN and heads
    (``model=fast``), or a tiny version. Pinned here, not taken from the default run (128 px,
    ``model=light``, ResNet-18 over three stages): the figures compare against torchvision's own
    ``maskrcnn_resnet50_fpn``, whose architecture this is."""
    torchvision_architecture = [
        "model=fast",
        "backbone=resnet50",
        "backbone.returned_layers=[1,2,3,4]",
    ]
    if quick:
        return [
            "data.image_size=128",
            "data.max_image_size=128",
            "data.batch_size=2",
            *torchvision_architecture,
        ]
    return [
        "data.image_size=256",
        "data.max_image_size=256",
        "data.batch_size=4",
        *torchvision_architecture,
    ]


def compose(overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """``python -m mrcnn.train <overrides>``'s config, with loader workers off (batches are
    materialised once, so every candidate sees the very same tensors)."""
    return compose_config([*overrides, "data.num_workers=0"], output_dir=output_dir)


def batches_from(cfg: DictConfig, count: int, split: str = "train") -> tuple[Any, list[Batch]]:
    """The DataModule of ``cfg`` and its first ``count`` batches (augmented for ``train``)."""
    datamodule = instantiate(cfg.data)
    loader = datamodule.train_dataloader() if split == "train" else datamodule.val_dataloader()
    out: list[Batch] = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            break
    return datamodule, out


class ListOfBatches(Dataset):
    """Ready batches as a data set (``DataLoader(batch_size=None)`` hands them out one by one)."""

    def __init__(self, batches: list[Batch], length: int) -> None:
        self.batches = batches
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index % len(self.batches)]


def _identity(item: Batch) -> Batch:
    return item


def batch_loader(batches: list[Batch], length: int) -> DataLoader:
    """The same in-memory batches for Lightning and the plain loop, in the same order."""
    return DataLoader(
        ListOfBatches(batches, length), batch_size=None, num_workers=0, collate_fn=_identity
    )


def mrcnn_module(cfg: DictConfig, datamodule: Any):
    """mrcnn's LightningModule for this config (exactly what ``mrcnn.train`` builds)."""
    return build_module(cfg, datamodule.categories)


# mrcnn's builder options with torchvision's own values: maskrcnn_resnet50_fpn takes none of them.
TORCHVISION_HEADS = {
    "head_norm": "none",
    "head_channels": 256,
    "box_head_size": 1024,
    "box_head_convs": 0,
    "mask_head_convs": 4,
    "rpn_conv_depth": 1,
    "roi_sampling_ratio": 2,
    "anchor_sizes": None,
}


def torchvision_kwargs(detector: dict[str, Any]) -> dict[str, Any]:
    """``maskrcnn_resnet50_fpn`` keyword arguments of an mrcnn detector config that has
    torchvision's heads (``model=fast`` / ``model=default``)."""
    other = {k: detector[k] for k, v in TORCHVISION_HEADS.items() if detector.get(k, v) != v}
    if other:
        raise ValueError(f"not torchvision's heads: {other}; compare with model=fast")
    return {k: v for k, v in detector.items() if k not in TORCHVISION_HEADS}


def plain_torchvision_model(cfg: DictConfig, num_classes: int, like: torch.nn.Module) -> MaskRCNN:
    """torchvision's own ``maskrcnn_resnet50_fpn`` with the same sizes, starting from the same
    weights as ``like`` (the mrcnn model), so both sides compute the same thing."""
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        **torchvision_kwargs(plain(cfg.model.detector)),
    )
    model.load_state_dict(copy.deepcopy(like.state_dict()))
    return model
