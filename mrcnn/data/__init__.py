"""Data sets, targets, transforms and the DataModule."""

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.coco import CocoDataset
from mrcnn.data.datamodule import DetectionDataModule, collate
from mrcnn.data.errors import DataError
from mrcnn.data.mask_folder import MaskFolderDataset
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.data.targets import InvalidTargetError, validate_target

__all__ = [
    "Categories",
    "CocoDataset",
    "DataError",
    "DetectionDataModule",
    "InstanceDataset",
    "InvalidTargetError",
    "MaskFolderDataset",
    "RawSample",
    "ShapesDataset",
    "collate",
    "validate_target",
]
