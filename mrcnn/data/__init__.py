"""Data sets, targets, transforms and the DataModule."""

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.data.coco import CocoDataset
from mrcnn.data.datamodule import DetectionDataModule, collate
from mrcnn.data.errors import DataError
from mrcnn.data.labelme import LabelMeDataset
from mrcnn.data.mask_folder import MaskFolderDataset
from mrcnn.data.synthetic import ShapesDataset
from mrcnn.data.targets import InvalidTargetError, validate_target
from mrcnn.data.yolo import YoloDataset

__all__ = [
    "Categories",
    "CocoDataset",
    "DataError",
    "DetectionDataModule",
    "InstanceDataset",
    "InvalidTargetError",
    "LabelMeDataset",
    "MaskFolderDataset",
    "RawSample",
    "ShapesDataset",
    "YoloDataset",
    "collate",
    "validate_target",
]
