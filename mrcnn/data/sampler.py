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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import BatchSampler, Dataset, Sampler

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


class GroupedBatchSampler(BatchSampler):
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
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        if group_ids is None:  # rebuilt as cls(sampler, batch_size=..., drop_last=...)
            dataset = getattr(sampler, "dataset", None) or getattr(sampler, "data_source", None)
            if dataset is None:
                raise TypeError("GroupedBatchSampler needs group_ids or a sampler with a dataset.")
            group_ids = aspect_groups(dataset)
        self.group_ids = list(group_ids)

    def __iter__(self) -> Iterator[list[int]]:
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
