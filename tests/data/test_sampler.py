"""Aspect-ratio grouped batches: same batch count as plain batching, and correct under DDP."""

import contextlib
import math

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

from mrcnn.data import DetectionDataModule, ShapesDataset
from mrcnn.data.sampler import (
    EpochBatchSampler,
    EpochShuffle,
    GroupedBatchSampler,
    aspect_groups,
    repeat_factors,
)
from mrcnn.errors import ConfigError
from tests.tiny import TINY, assert_one_message, run_command


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


class _Labelled(torch.utils.data.Dataset):
    """Only labels and sizes: repeat factors never decode an image."""

    def __init__(self, labels, sizes=None):
        self.labels = labels
        self.sizes = sizes or [(10, 20)] * len(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        raise AssertionError("repeat factors must not load items")

    def image_labels(self, index):
        return self.labels[index]

    def image_hw(self, index):
        return self.sizes[index]


# 10 images: class 1 in all but one, class 2 in two, class 3 in one, one image empty.
HAND_MADE = [[1], [1, 1], [1], [1, 2], [1], [1, 2, 3], [1], [1], [1], []]


def test_repeat_factors_equal_the_lvis_formula_on_a_hand_made_set():
    factors = repeat_factors(_Labelled(HAND_MADE), threshold=0.3)
    assert factors.image_fraction == {1: 0.9, 2: 0.2, 3: 0.1}
    expected = {1: 1.0, 2: math.sqrt(0.3 / 0.2), 3: math.sqrt(0.3 / 0.1)}
    assert factors.per_class == pytest.approx(expected)
    # An image's factor is its rarest class's; an image without instances keeps 1.
    per_image = [max((expected[c] for c in labels), default=1.0) for labels in HAND_MADE]
    assert factors.per_image.tolist() == pytest.approx(per_image)
    assert "triangle" not in factors.describe(["a", "b", "c"])  # names come from the caller
    assert "c: in 10.0% of the images, repeat factor 1.73" in factors.describe(["a", "b", "c"])


def test_bad_repeat_settings_are_named():
    for bad in (0, 1.5, "x", True):
        with pytest.raises(ConfigError, match=r"data\.repeat_threshold"):
            repeat_factors(_Labelled(HAND_MADE), bad)
    with pytest.raises(ConfigError, match=r"data\.sampler"):
        DetectionDataModule(ShapesDataset(4, 32), sampler="balanced")


def test_repeats_average_the_factors_at_a_fixed_epoch_length():
    factors = repeat_factors(_Labelled(HAND_MADE), threshold=0.3).per_image
    sampler = EpochBatchSampler(EpochShuffle(range(10), seed=1), 2, repeat_factors=factors)
    counts, lengths = np.zeros(10), set()
    for epoch in range(400):
        sampler.sampler.set_epoch(epoch)
        keys = [key for batch in sampler for key in batch]
        lengths.add(len(keys))
        for index, _ in keys:
            counts[index] += 1
        # Copies of an image within an epoch get augmentation seeds of their own.
        assert len({seed for _, seed in keys}) == len(keys)
    assert lengths == {round(10 * factors.mean())}  # every epoch the same length ...
    assert len(sampler) == math.ceil(round(10 * factors.mean()) / 2)
    # ... and each image seen its repeat factor times on average (cut/padding: a few %).
    assert counts / 400 == pytest.approx(factors, rel=0.08)


def test_repeat_factor_sampling_with_grouping_and_distributed_shards():
    sizes = [(100, 200) if i % 3 else (200, 100) for i in range(10)]
    dataset = _Labelled(HAND_MADE, sizes)
    factors = repeat_factors(dataset, threshold=0.3).per_image
    groups = aspect_groups(dataset)
    per_rank = []
    for rank in range(2):  # what Lightning's DistributedSampler gives each of 2 ranks
        shard = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler = GroupedBatchSampler(shard, 2, group_ids=groups, repeat_factors=factors)
        batches = [[index for index, _ in batch] for batch in sampler]
        assert len(batches) == len(sampler)
        assert all(len({groups[i] for i in b}) == 1 for b in batches[:-2])
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])  # no rank waits for a missing batch


def test_the_datamodule_logs_each_class_factor_once(caplog):
    shapes = ShapesDataset(40, 64, seed=0, class_weights=[1, 1, 0.1])
    datamodule = DetectionDataModule(
        shapes,
        ShapesDataset(2, 64, seed=1),
        batch_size=4,
        num_workers=0,
        sampler="repeat_factor",
        repeat_threshold=0.5,
    )
    with caplog.at_level("INFO"):
        datamodule.setup("fit")
        datamodule.train_dataloader()
        datamodule.train_dataloader()
    lines = [r.message for r in caplog.records if "Repeat-factor sampling" in r.message]
    assert len(lines) == 1
    assert "triangle: in" in lines[0] and "circle: in" in lines[0]
    loader = datamodule.train_dataloader()
    assert loader.batch_sampler.repeat_factors == datamodule.repeat_factors.per_image.tolist()


def test_train_names_a_bad_sampler_in_one_line(tmp_path):
    done = run_command("mrcnn.train", *TINY, "data.sampler=balanced", cwd=tmp_path)
    assert_one_message(done, "mrcnn train", "data.sampler='balanced'", "repeat_factor")
