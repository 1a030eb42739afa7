"""One LightningDataModule for every data set format: synthetic, COCO json, mask folders."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from mrcnn.data.categories import Categories
from mrcnn.data.errors import DataError
from mrcnn.data.sampler import (
    EpochBatchSampler,
    EpochShuffle,
    GroupedBatchSampler,
    RepeatFactors,
    aspect_groups,
    repeat_factors,
)
from mrcnn.data.transforms import build_transforms, parse_augment
from mrcnn.data.wrappers import CompactSubset, TransformedDataset
from mrcnn.errors import ConfigError

log = logging.getLogger(__name__)

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]
SAMPLERS = ("random", "repeat_factor")


def collate(samples: list[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """Images differ in size, so a batch is a list of images and a list of targets (no stacking)."""
    images, targets = zip(*samples, strict=True)
    return list(images), list(targets)


def split_indices(num_items: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic train/val split of ``range(num_items)`` (same seed, same split)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
    num_val = max(1, round(num_items * val_fraction))
    if num_val >= num_items:
        raise DataError(
            f"Cannot split {num_items} images with val_fraction={val_fraction}: nothing would "
            "be left for training. Give a separate validation set or more images."
        )
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[num_val:]), sorted(order[:num_val])


class DetectionDataModule(L.LightningDataModule):
    """Serves (images, targets) list batches from a training and an optional validation set.

    When ``val`` is None, a ``val_fraction`` of ``train`` is held out, chosen by ``split_seed``
    (not the run's ``seed``: every run, sweep job and ``mrcnn.evaluate`` sees the same split).
    Data sets expose ``categories`` (:class:`Categories`); the model's ``num_classes`` comes
    from there, never from a hand-typed number.

    ``group_by_aspect_ratio`` batches landscape with landscape and portrait with portrait images
    (:class:`~mrcnn.data.sampler.GroupedBatchSampler`); under DDP keep the trainer's
    ``use_distributed_sampler=True`` (the default): Lightning then rebuilds the grouped sampler
    around its DistributedSampler, so each rank groups its own shard.

    ``sampler``: ``random`` (each training image once an epoch) or ``repeat_factor`` (images of
    rare classes more often, LVIS's rule with ``repeat_threshold``; see
    :mod:`mrcnn.data.sampler`). ``augment`` may add ``copy_paste`` to a preset (pasting with
    probability ``copy_paste_p``, :mod:`mrcnn.data.copy_paste`).

    Resuming: the training order is a function of (seed, epoch), and the data module's state
    in a checkpoint says which epoch and how many of its batches were trained on, so a run
    resumed from a mid-epoch checkpoint carries on with the next batch (see
    :mod:`mrcnn.data.sampler`).
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
        split_seed: int = 0,
        group_by_aspect_ratio: bool = True,
        sampler: str = "random",
        repeat_threshold: float = 0.001,
        copy_paste_p: float = 1.0,
    ) -> None:
        super().__init__()
        parse_augment(augment)  # fail on a bad preset now, not in a worker
        if sampler not in SAMPLERS:
            raise ConfigError(
                f"data.sampler={sampler!r}: choose one of {list(SAMPLERS)} (repeat_factor: "
                "images of rare classes more often, see data.repeat_threshold)."
            )
        if not 0 <= copy_paste_p <= 1:
            raise ConfigError(
                f"data.copy_paste_p={copy_paste_p!r}: give the probability that an image gets "
                "pasted instances, from 0 to 1."
            )
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
        self.split_seed = split_seed
        self.group_by_aspect_ratio = group_by_aspect_ratio
        self.sampler = sampler
        self.repeat_threshold = repeat_threshold
        self.copy_paste_p = copy_paste_p
        self.repeat_factors: RepeatFactors | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._resume_at: tuple[int, int] | None = None

    @property
    def categories(self) -> Categories:
        return self.train_source.categories

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = self.train_source, self.val_source
        log.info("Training data: %s.", describe(train))
        if val is None:
            train_idx, val_idx = split_indices(len(train), self.val_fraction, self.split_seed)
            train, val = CompactSubset(train, train_idx), CompactSubset(train, val_idx)
            log.info(
                "No validation set given: holding out %d of %d images (val_fraction=%s, "
                "split_seed=%d).",
                len(val_idx),
                len(train_idx) + len(val_idx),
                self.val_fraction,
                self.split_seed,
            )
        elif val.categories != self.categories:
            raise DataError(
                "The training and validation sets have different categories:\n"
                f"  train: {self.categories.names}\n  val:   {val.categories.names}\n"
                "Both must come from the same category list (same names, same ids)."
            )
        else:
            log.info("Validation data: %s.", describe(val))
        transform = build_transforms(
            self.augment, self.image_size, self.max_image_size, train, self.copy_paste_p
        )
        self.train_set = TransformedDataset(train, transform)
        if self.sampler == "repeat_factor":
            self.repeat_factors = repeat_factors(train, self.repeat_threshold)
            factors = self.repeat_factors
            log.info(
                "Repeat-factor sampling (data.repeat_threshold=%g): %s; an epoch draws %.0f "
                "images for %d.",
                factors.threshold,
                factors.describe(self.categories.names),
                factors.per_image.sum(),
                len(factors.per_image),
            )
            if factors.per_image.max() <= 1:
                log.warning(
                    "data.sampler=repeat_factor repeats nothing: every class is in at least "
                    "data.repeat_threshold=%g of the training images. Raise it (a class in a "
                    "fraction f of the images is repeated sqrt(threshold / f) times).",
                    factors.threshold,
                )
        self.val_set = TransformedDataset(
            val, build_transforms("none", self.image_size, self.max_image_size)
        )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # The loader's own generator (not torch's global one) seeds its workers, so creating
        # a loader does not move the random stream the model's sampling draws from.
        generator = torch.Generator().manual_seed(self.seed)
        if shuffle:
            # EpochShuffle is a RandomSampler: Lightning reads it to decide that the
            # DistributedSampler it injects under DDP must shuffle. See mrcnn/data/sampler.py.
            sampler = EpochShuffle(dataset, seed=self.seed)
            resume_at, self._resume_at = self._resume_at, None
            factors = None if self.repeat_factors is None else self.repeat_factors.per_image
            batch_sampler = (
                GroupedBatchSampler(
                    sampler,
                    batch_size,
                    group_ids=aspect_groups(dataset),
                    resume_at=resume_at,
                    repeat_factors=factors,
                )
                if self.group_by_aspect_ratio
                else EpochBatchSampler(
                    sampler, batch_size, resume_at=resume_at, repeat_factors=factors
                )
            )
            batching: dict[str, Any] = {"batch_sampler": batch_sampler}
        else:
            batching = {"batch_size": batch_size, "shuffle": False}
        return DataLoader(
            dataset,
            **batching,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, int]:
        """Where training is in its data (saved in checkpoints): the epoch and its batches done."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        epoch = trainer.current_epoch
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # saved at the end of an epoch
            epoch, done = epoch + 1, 0
        return {"train_epoch": epoch, "train_batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume the training data where the checkpoint left it (read by train_dataloader)."""
        if "train_epoch" in state_dict:
            self._resume_at = (state_dict["train_epoch"], state_dict["train_batches_done"])


def describe(dataset: Dataset) -> str:
    """A data set's one-line summary (its ``describe()``), or its type and size."""
    if hasattr(dataset, "describe"):
        return dataset.describe()
    return f"{type(dataset).__name__} with {len(dataset)} images"
