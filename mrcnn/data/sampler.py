"""Batches of images with similar aspect ratio: less padding in a batch, same number of batches.

The model pads the images of a batch to a common size; a portrait and a landscape image together
waste up to half of it. :class:`GroupedBatchSampler` batches landscape with landscape and
portrait with portrait (detectron2's two groups).

Distributed training: the sampler draws indices from an inner ``sampler``. Lightning, when it
injects its ``DistributedSampler`` (``use_distributed_sampler=True``, the default), rebuilds this
batch sampler around it with the same arguments (it recorded them because the class subclasses
``BatchSampler``, see ``lightning.pytorch.utilities.data``). Each rank then groups only its own
shard. (Rebuilt without recorded arguments, as ``cls(sampler, batch_size=..., drop_last=...)``,
it finds the groups again through ``sampler.dataset``.) Every rank's shard has the same length
and the batch count depends only on that length, so all ranks run the same number of steps (no
DDP hang on a last, missing batch).

Same data after a resume: the order is a function of (seed, epoch) only (:class:`EpochShuffle`
here, Lightning's ``DistributedSampler`` under DDP, seeded with the run's seed), every sample's
augmentation is drawn from its own seed (:func:`sample_seed`), and a run resumed in the middle
of an epoch skips the batches that epoch already trained on (``resume_at``). Lightning 2.6
itself would restart such an epoch from its first batch (its loader is not "stateful").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler

from mrcnn.data.wrappers import unwrap_dataset


def aspect_groups(dataset: Dataset) -> list[int]:
    """0 for landscape or square images, 1 for portrait ones (sizes read without decoding)."""
    base, indices = unwrap_dataset(dataset)
    if not hasattr(base, "image_hw"):
        raise TypeError(
            f"{type(base).__name__} has no image_hw(index); aspect-ratio grouping needs it "
            "(or set data.group_by_aspect_ratio=false)."
        )
    return [int(height > width) for height, width in map(base.image_hw, indices)]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: the same in every run, worker count and resume."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochShuffle(RandomSampler):
    """A permutation drawn from ``seed + epoch`` (as ``DistributedSampler`` does on one process).

    ``RandomSampler`` draws from a generator whose state depends on every earlier epoch, so a
    resumed run would see other orders; this one restarts anywhere. Being a ``RandomSampler``,
    it tells Lightning that the data is shuffled (under DDP, Lightning's ``DistributedSampler``
    replaces it and shuffles per ``(seed, epoch)`` too). Lightning calls :meth:`set_epoch`.
    """

    def __init__(self, data_source: Sequence, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochBatchSampler(BatchSampler):
    """Batches of ``(index, sample_seed)`` keys, able to resume in the middle of an epoch.

    The key's seed (:func:`sample_seed` of the sampler's seed, its epoch and the index) makes
    the augmentation of a sample independent of workers and restarts
    (:class:`~mrcnn.data.wrappers.TransformedDataset` reads it). ``resume_at=(epoch, batches)``
    makes the first iteration that epoch's, minus its first ``batches`` batches: no image of
    the skipped batches is read.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        resume_at: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.resume_at = resume_at

    def batches(self) -> Iterator[list[int]]:
        """This epoch's batches of indices (subclasses change how they are formed)."""
        return super().__iter__()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip = 0
        if self.resume_at is not None:
            epoch, skip = self.resume_at
            self.resume_at = None  # only the first epoch after a resume is partial
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
        seed, epoch = getattr(self.sampler, "seed", 0), getattr(self.sampler, "epoch", 0)
        for batch in itertools.islice(self.batches(), skip, None):
            yield [(index, sample_seed(seed, epoch, index)) for index in batch]


class GroupedBatchSampler(EpochBatchSampler):
    """Batches whose images share an aspect group, in the order ``sampler`` draws them.

    Every batch is full except for the leftovers at the end of an epoch, which are batched
    together (mixing groups if they must), so an epoch has ``ceil(len(sampler) / batch_size)``
    batches: the same count as a plain ``BatchSampler`` and the same on every rank.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        group_ids: Sequence[int] | None = None,
        resume_at: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last, resume_at)
        if group_ids is None:  # rebuilt as cls(sampler, batch_size=..., drop_last=...)
            dataset = getattr(sampler, "dataset", None) or getattr(sampler, "data_source", None)
            if dataset is None:
                raise TypeError("GroupedBatchSampler needs group_ids or a sampler with a dataset.")
            group_ids = aspect_groups(dataset)
        self.group_ids = list(group_ids)

    def batches(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()
        leftovers = [i for group in sorted(buffers) for i in buffers[group]]
        for start in range(0, len(leftovers), self.batch_size):
            batch = leftovers[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
