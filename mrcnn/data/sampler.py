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

Repeat-factor sampling (Gupta et al., LVIS, CVPR 2019; ``data.sampler=repeat_factor``): an image
whose rarest class is in a fraction ``f`` of the training images is seen
``r = max(1, sqrt(threshold / f))`` times an epoch on average (:func:`repeat_factors`): ``floor(r)``
copies and one more with probability ``r - floor(r)``, drawn per (seed, epoch, image). The
batch sampler expands the index stream it draws from (its own shuffle, or a rank's shard under
DDP), shuffles the copies in, and cuts or pads the stream to a fixed length,
``round(len(sampler) * mean(r))``, so every epoch and every rank has the same number of batches.
Copies of an image get augmentation seeds of their own.

Same data after a resume: the order is a function of (seed, epoch) only (:class:`EpochShuffle`
here, Lightning's ``DistributedSampler`` under DDP, seeded with the run's seed), every sample's
augmentation is drawn from its own seed (:func:`sample_seed`), and a run resumed in the middle
of an epoch skips the batches that epoch already trained on (``resume_at``). Lightning 2.6
itself would restart such an epoch from its first batch (its loader is not "stateful").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler

from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.errors import ConfigError


def aspect_groups(dataset: Dataset) -> list[int]:
    """0 for landscape or square images, 1 for portrait ones (sizes read without decoding)."""
    base, indices = unwrap_dataset(dataset)
    if not hasattr(base, "image_hw"):
        raise TypeError(
            f"{type(base).__name__} has no image_hw(index); aspect-ratio grouping needs it "
            "(or set data.group_by_aspect_ratio=false)."
        )
    return [int(height > width) for height, width in map(base.image_hw, indices)]


def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """The seed of one sample's augmentation: the same in every run, worker count and resume
    (``copy``: the repeat of the image within the epoch, under repeat-factor sampling)."""
    entropy = [seed, epoch, index] if copy == 0 else [seed, epoch, index, copy]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass
class RepeatFactors:
    """Repeat factors of every training image, and of every class they come from.

    ``per_image[i]``: the factor of item ``i`` (1 for an image without instances);
    ``per_class[label]``: ``max(1, sqrt(threshold / image_fraction[label]))``.
    """

    threshold: float
    per_image: np.ndarray
    per_class: dict[int, float]
    image_fraction: dict[int, float]

    def describe(self, names: Sequence[str]) -> str:
        """One line per class for the log: its image fraction and repeat factor."""
        rows = [
            f"{names[label - 1]}: in {100 * self.image_fraction[label]:.1f}% of the images, "
            f"repeat factor {self.per_class[label]:.2f}"
            for label in sorted(self.per_class)
        ]
        return "; ".join(rows)


def repeat_factors(dataset: Dataset, threshold: float) -> RepeatFactors:
    """LVIS's repeat factors (see the module doc) of a data set's items, from their labels
    (``image_labels``, under any wrappers: nothing is augmented)."""
    if not (isinstance(threshold, int | float) and not isinstance(threshold, bool)) or not (
        0 < threshold <= 1
    ):
        raise ConfigError(
            f"data.repeat_threshold={threshold!r}: give a fraction of images in (0, 1]: a class "
            "found in fewer images than that is repeated (LVIS used 0.001; on a few thousand "
            "images with a class in 5% of them, 0.1-0.5)."
        )
    base, indices = unwrap_dataset(dataset)
    if not hasattr(base, "image_labels"):
        raise ConfigError(
            f"data.sampler=repeat_factor needs each image's labels; {type(base).__name__} has "
            "no image_labels(index). Use data.sampler=random."
        )
    labels = [set(base.image_labels(i)) for i in indices]
    counts: dict[int, int] = {}
    for image_labels in labels:
        for label in image_labels:
            counts[label] = counts.get(label, 0) + 1
    fraction = {label: count / max(1, len(labels)) for label, count in counts.items()}
    per_class = {label: max(1.0, math.sqrt(threshold / f)) for label, f in fraction.items()}
    per_image = np.array(
        [max((per_class[label] for label in image_labels), default=1.0) for image_labels in labels],
        dtype=np.float64,
    )
    return RepeatFactors(float(threshold), per_image, per_class, fraction)


def repeated(
    indices: Sequence[int], factors: Sequence[float], seed: int, epoch: int, length: int
) -> list[tuple[int, int]]:
    """``indices`` with each index ``i`` repeated ``floor(r_i)`` times plus once more with
    probability ``r_i - floor(r_i)``, as ``(index, copy)`` pairs, shuffled, then cut or padded
    (from its own start) to ``length``: all from ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch, 0x52F5])
    indices = np.asarray(list(indices), dtype=np.int64)
    rates = np.asarray(factors, dtype=np.float64)[indices]
    copies = np.floor(rates).astype(np.int64)
    copies += rng.random(len(indices)) < rates - copies
    stream = [
        (int(i), c)
        for i, n in zip(indices.tolist(), copies.tolist(), strict=True)
        for c in range(n)
    ]
    order = rng.permutation(len(stream))
    stream = [stream[k] for k in order]
    if not stream:
        return []
    seen = {index: int(n) for index, n in zip(indices.tolist(), copies.tolist(), strict=True)}
    padding = []
    while len(stream) + len(padding) < length:  # padded copies get copy numbers of their own
        index = stream[len(padding) % len(stream)][0]
        padding.append((index, seen[index]))
        seen[index] += 1
    stream += padding
    return stream[:length]


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
    the skipped batches is read. ``repeat_factors`` (one per item of the data set): repeat-factor
    sampling (see the module doc).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        resume_at: tuple[int, int] | None = None,
        repeat_factors: Sequence[float] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.resume_at = resume_at
        self.repeat_factors = None if repeat_factors is None else list(repeat_factors)

    def num_samples(self) -> int:
        """Items an epoch draws: the sampler's, times the mean repeat factor when repeating."""
        if self.repeat_factors is None:
            return len(self.sampler)
        return max(1, round(len(self.sampler) * float(np.mean(self.repeat_factors))))

    def indices(self) -> Iterator[tuple[int, int]]:
        """This epoch's stream of ``(index, copy)``: copy 0 of each drawn index, and the
        repeats' copies 1, 2, ... under repeat-factor sampling (their augmentation differs)."""
        if self.repeat_factors is None:
            yield from ((index, 0) for index in self.sampler)
            return
        seed, epoch = self._seed_and_epoch()
        yield from repeated(
            list(self.sampler), self.repeat_factors, seed, epoch, self.num_samples()
        )

    def batches(self) -> Iterator[list[tuple[int, int]]]:
        """This epoch's batches of ``(index, copy)`` (subclasses change how they are formed)."""
        batch: list[tuple[int, int]] = []
        for item in self.indices():
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples() // self.batch_size
        return (self.num_samples() + self.batch_size - 1) // self.batch_size

    def _seed_and_epoch(self) -> tuple[int, int]:
        return getattr(self.sampler, "seed", 0), getattr(self.sampler, "epoch", 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip = 0
        if self.resume_at is not None:
            epoch, skip = self.resume_at
            self.resume_at = None  # only the first epoch after a resume is partial
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
        seed, epoch = self._seed_and_epoch()
        for batch in itertools.islice(self.batches(), skip, None):
            yield [(index, sample_seed(seed, epoch, index, copy)) for index, copy in batch]


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
        repeat_factors: Sequence[float] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last, resume_at, repeat_factors)
        if group_ids is None:  # rebuilt as cls(sampler, batch_size=..., drop_last=...)
            dataset = getattr(sampler, "dataset", None) or getattr(sampler, "data_source", None)
            if dataset is None:
                raise TypeError("GroupedBatchSampler needs group_ids or a sampler with a dataset.")
            group_ids = aspect_groups(dataset)
        self.group_ids = list(group_ids)

    def batches(self) -> Iterator[list[tuple[int, int]]]:
        buffers: dict[int, list[tuple[int, int]]] = {}
        for item in self.indices():
            buffer = buffers.setdefault(self.group_ids[item[0]], [])
            buffer.append(item)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()
        leftovers = [i for group in sorted(buffers) for i in buffers[group]]
        for start in range(0, len(leftovers), self.batch_size):
            batch = leftovers[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
