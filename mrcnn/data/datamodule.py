"""One LightningDataModule for every data set format: synthetic, COCO json, mask folders."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mrcnn.data.categories import Categories
from mrcnn.data.transforms import build_transforms, to_model_input

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


def collate(samples: list[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """Images differ in size, so a batch is a list of images and a list of targets (no stacking)."""
    images, targets = zip(*samples, strict=True)
    return list(images), list(targets)


class TransformedDataset(Dataset):
    """Applies a v2 pipeline to a data set's samples and hands the model plain tensors."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        kept_before = len(target["labels"])
        image, target = self.transform(image, target)
        image, target = to_model_input(image, target)
        # Instances an augmentation made degenerate count as dropped, like invalid ones.
        target["num_dropped"] = target.get("num_dropped", 0) + kept_before - len(target["labels"])
        return image, target


def split_indices(num_items: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic train/val split of ``range(num_items)`` (same seed, same split)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    num_val = max(1, round(num_items * val_fraction))
    if num_val >= num_items:
        raise ValueError(
            f"Cannot split {num_items} images with val_fraction={val_fraction}: nothing would "
            "be left for training. Give a separate validation set or more images."
        )
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[num_val:]), sorted(order[:num_val])


class DetectionDataModule(L.LightningDataModule):
    """Serves (images, targets) list batches from a training and an optional validation set.

    When ``val`` is None, a ``val_fraction`` of ``train`` is held out, chosen by ``seed``.
    Data sets expose ``categories`` (:class:`Categories`); the model's ``num_classes`` comes
    from there, never from a hand-typed number.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        val_fraction: float = 0.1,
        augment: str = "hflip",
        image_size: int = 800,
        max_image_size: int = 1333,
        batch_size: int = 2,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        build_transforms(augment, image_size)  # fail on a bad preset now, not in a worker
        self.train_source = train
        self.val_source = val
        self.val_fraction = val_fraction
        self.augment = augment
        self.image_size = image_size  # the model's input size: what scale augmentations aim at
        self.max_image_size = max_image_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @property
    def categories(self) -> Categories:
        return self.train_source.categories

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = self.train_source, self.val_source
        if val is None:
            train_idx, val_idx = split_indices(len(train), self.val_fraction, self.seed)
            train, val = Subset(train, train_idx), Subset(train, val_idx)
        elif val.categories != self.categories:
            raise ValueError(
                "The training and validation sets have different categories:\n"
                f"  train: {self.categories.names}\n  val:   {val.categories.names}\n"
                "Both must come from the same category list (same names, same ids)."
            )
        self.train_set = TransformedDataset(train, build_transforms(self.augment, self.image_size))
        self.val_set = TransformedDataset(val, build_transforms("none", self.image_size))

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
