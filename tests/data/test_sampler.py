"""Aspect-ratio grouped batches: same batch count as plain batching, and correct under DDP."""

import contextlib
import math

import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

from mrcnn.data import DetectionDataModule, ShapesDataset
from mrcnn.data.sampler import GroupedBatchSampler


class _Shapes(torch.utils.data.Dataset):
    """Only image sizes: grouping never decodes an image."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        raise AssertionError("grouping must not load items")

    def image_hw(self, index):
        return self.sizes[index]


def test_batches_share_orientation_and_cover_every_index_once():
    sizes = [(100, 200) if i % 3 else (200, 100) for i in range(23)]
    groups = [int(h > w) for h, w in sizes]
    sampler = GroupedBatchSampler(RandomSampler(range(23)), 4, group_ids=groups)
    batches = [[index for index, _ in batch] for batch in sampler]  # (index, augmentation seed)
    assert len(batches) == len(sampler) == math.ceil(23 / 4)
    assert sorted(i for b in batches for i in b) == list(range(23))
    full_mixed = [b for b in batches if len(b) == 4 and len({groups[i] for i in b}) > 1]
    assert len(full_mixed) <= 1  # only the leftovers at the end may mix orientations
    assert all(len({groups[i] for i in b}) == 1 for b in batches[:-2])


@pytest.mark.parametrize("recorded", [True, False], ids=["inside-trainer", "bare"])
def test_datamodule_groups_by_default_and_lightning_injects_distributed_sampler(recorded):
    dataset = ShapesDataset(30, 64, size_jitter=0.5, seed=3)
    datamodule = DetectionDataModule(
        dataset, val_fraction=0.2, batch_size=4, num_workers=0, image_size=64, max_image_size=64
    )
    # The Trainer calls train_dataloader() inside this context, which records init arguments.
    with _replace_dunder_methods(BatchSampler) if recorded else contextlib.nullcontext():
        loader = datamodule.train_dataloader()
    assert hasattr(loader.batch_sampler, "__pl_saved_args") == recorded
    assert _is_dataloader_shuffled(loader)  # so Lightning's DistributedSampler shuffles too
    assert isinstance(loader.batch_sampler, GroupedBatchSampler)
    groups = loader.batch_sampler.group_ids
    # What Lightning does under DDP (use_distributed_sampler=True), for each of 2 ranks.
    per_rank = []
    for rank in range(2):
        shard = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        ddp_loader = _update_dataloader(loader, shard)
        batch_sampler = ddp_loader.batch_sampler
        assert isinstance(batch_sampler, GroupedBatchSampler)
        assert batch_sampler.sampler is shard and batch_sampler.group_ids == groups
        batches = [[index for index, _ in batch] for batch in batch_sampler]
        assert len(batches) == len(batch_sampler)
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])  # every rank runs the same number of steps
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(len(loader.dataset)))
    # The shards are disjoint apart from DistributedSampler's padding.
    assert len(seen) - len(set(seen)) < 2


def test_grouping_can_be_turned_off():
    datamodule = DetectionDataModule(
        ShapesDataset(10, 64), batch_size=2, num_workers=0, group_by_aspect_ratio=False
    )
    assert not isinstance(datamodule.train_dataloader().batch_sampler, GroupedBatchSampler)


def test_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    datamodule = DetectionDataModule(
        ShapesDataset(20, 64, size_jitter=0.5, seed=3), batch_size=3, num_workers=0, seed=7
    )

    def epoch_batches(epoch, loader=None):
        loader = loader or datamodule.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        return list(loader.batch_sampler)

    first, again = epoch_batches(1), epoch_batches(1)
    assert first == again  # a fresh loader (a restarted run) sees the same epoch
    assert first != epoch_batches(2)
    # A checkpoint after 2 batches of epoch 1: the resumed loader starts at the third.
    datamodule.load_state_dict({"train_epoch": 1, "train_batches_done": 2})
    resumed = list(datamodule.train_dataloader().batch_sampler)
    assert resumed == first[2:]
    # Each sample carries its augmentation seed: the same sample, the same augmentation.
    image, _ = datamodule.train_set[first[0][0]]
    assert torch.equal(image, datamodule.train_set[first[0][0]][0])
