"""Data sets, targets, transforms and the DataModule."""

from mrcnn.data.categories import Categories
from mrcnn.data.datamodule import DetectionDataModule, collate
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.data.targets import InvalidTargetError, validate_target

__all__ = [
    "Categories",
    "DetectionDataModule",
    "InvalidTargetError",
    "ShapesDataset",
    "collate",
    "validate_target",
]
