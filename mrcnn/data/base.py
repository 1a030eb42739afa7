"""The contract every data set format fulfils, and the one ``__getitem__`` they all share.

A format reader says how to decode one sample (:meth:`InstanceDataset.load_raw`), how big an
image is without decoding it (:meth:`~InstanceDataset.image_hw`, for aspect-ratio batches), how
to name a sample in messages (:meth:`~InstanceDataset.source`) and what it holds
(:meth:`~InstanceDataset.describe`). What must be the same for every format lives here once:
index checks, targets built from masks, validation (:func:`~mrcnn.data.targets.validate_target`),
the count of dropped instances, and errors that name the file. Training, evaluation and
``python -m mrcnn.data.check`` rely on this interface only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mrcnn.data.categories import Categories
from mrcnn.data.errors import DataError, UnreadableFileError
from mrcnn.data.images import image_hw as header_hw
from mrcnn.data.targets import make_target, num_dropped, validate_target


class RawSample(NamedTuple):
    """One decoded sample, before validation: what a format reader returns."""

    image: np.ndarray  # RGB uint8 [H,W,3], upright (read with mrcnn.data.images.read_image)
    masks: np.ndarray | torch.Tensor | Sequence[np.ndarray]  # one binary [H,W] mask per instance
    labels: Sequence[int]  # contiguous labels 1..K (Categories.label maps a format's own ids)


class InstanceDataset(Dataset, ABC):
    """An instance-segmentation data set: items are ``(image, target)`` as Mask R-CNN wants them.

    An item is a uint8 ``tv_tensors.Image`` [3,H,W] and a target with ``boxes`` (XYXY, the tight
    boxes of the masks), ``labels`` (1..K), ``masks`` (uint8 [N,H,W]), ``image_id`` and
    ``num_dropped`` (instances validation removed). Subclasses set :attr:`categories` and
    implement the abstract methods; they never override ``__getitem__`` or :meth:`load`.
    """

    categories: Categories
    # Crowd regions kept out of training (COCO's iscrowd=1); None: the format has none.
    num_crowd: int | None = None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load_raw(self, index: int) -> RawSample:
        """Decode item ``index`` (already range-checked): its image, masks and labels."""

    @abstractmethod
    def image_hw(self, index: int) -> tuple[int, int]:
        """Height and width of the upright image, without decoding its pixels."""

    @abstractmethod
    def source(self, index: int) -> str:
        """Where item ``index`` comes from (file, annotation file, image id), for messages."""

    def image_file(self, index: int) -> Path | None:
        """The image file item ``index`` is read from, when annotations name it (COCO's
        ``file_name``): :func:`mrcnn.data.preflight.check_image_files` stats each before a run's
        first step. None: nothing to stat (generated, or found on disk when the data set was
        built)."""
        return None

    def image_id(self, index: int) -> int:
        """``target["image_id"]``: the item's index unless the format has ids of its own."""
        return index

    def describe(self) -> str:
        """One line for the training log and ``check``: what is trained on."""
        return f"{type(self).__name__}: {len(self)} images, classes {list(self.categories.names)}"

    def image_labels(self, index: int) -> list[int]:
        """The labels (1..K) of item ``index``'s instances, for repeat-factor sampling.

        This default decodes the item; formats whose annotations say it without decoding
        (COCO) answer from them."""
        return self.load(index)[1]["labels"].tolist()

    def annotation_warnings(self) -> list[str]:
        """What is odd in the annotation files but does not stop training (shown by ``check``)."""
        return []

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any], Counter]:
        """Image, validated target and what validation dropped, by reason (for ``check``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        source = self.source(index)
        try:
            image, masks, labels = self.load_raw(index)
        except DataError as error:
            if source in str(error):
                raise
            raise type(error)(f"{source}: {error}") from None
        except OSError as error:  # a file that vanished or cannot be read after the scan
            raise UnreadableFileError(
                f"{source}: cannot read its files ({error}). Check that they exist and are "
                "readable, or remove the item from the data set."
            ) from None
        height, width = image.shape[:2]
        target = make_target(_mask_tensor(masks, height, width), labels, self.image_id(index))
        target, dropped = validate_target(
            target, (height, width), len(self.categories.names), source
        )
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tv_tensors.Image(pixels), target, dropped

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        image, target, dropped = self.load(index)
        target["num_dropped"] = num_dropped(dropped)
        return image, target

    def _header_hw(self, index: int, path: Path, data: bytes | None = None) -> tuple[int, int]:
        """Image size from the file header (no pixel decoding), cached per item in one array."""
        cache = self.__dict__.get("_hw_cache")
        if cache is None:
            cache = self._hw_cache = np.full((len(self), 2), -1, dtype=np.int64)
        if cache[index, 0] < 0:
            cache[index] = header_hw(path, self.source(index), data)
        height, width = cache[index]
        return int(height), int(width)


def _mask_tensor(
    masks: np.ndarray | torch.Tensor | Sequence[np.ndarray], height: int, width: int
) -> torch.Tensor:
    """Masks as uint8 [N,H,W], also for no instance at all."""
    if isinstance(masks, torch.Tensor):
        return masks.to(torch.uint8)
    if len(masks) == 0:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    stacked = masks if isinstance(masks, np.ndarray) else np.stack(masks)
    return torch.from_numpy(np.ascontiguousarray(stacked)).to(torch.uint8)
