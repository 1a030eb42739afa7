"""The two real example sets load as documented in ../shared/data/README.md."""

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from mrcnn.data import CocoDataset, MaskFolderDataset
from mrcnn.data.sampler import aspect_groups
from mrcnn.data.wrappers import unwrap_dataset
from mrcnn.evaluation import ground_truth_for


@pytest.fixture(scope="module")
def coco128(coco128_dir):
    root = coco128_dir
    return CocoDataset(root / "val2017", root / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="module")
def coco128_labels(coco128):
    """Every item's label list, read once for the tests below."""
    return [coco128[i][1]["labels"].tolist() for i in range(len(coco128))]


@pytest.fixture(scope="module")
def pennfudan(pennfudan_dir):
    return MaskFolderDataset(
        pennfudan_dir, "PNGImages", "PedMasks", "_mask", class_name="pedestrian"
    )


def test_pennfudan_has_170_images_and_423_instances(pennfudan):
    assert len(pennfudan) == 170
    total = 0
    for i in range(len(pennfudan)):
        image, target = pennfudan[i]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert target["masks"].shape[1:] == image.shape[1:]
        assert target["image_id"] == i and target["num_dropped"] == 0
        assert pennfudan.image_hw(i) == tuple(image.shape[1:])
        total += len(target["labels"])
    assert total == 423
    assert pennfudan.categories.names == ("pedestrian",)


def test_coco128_maps_80_category_ids_with_gaps_to_labels_and_back(coco128):
    categories = coco128.categories
    assert len(categories.names) == 80 and categories.num_classes == 81
    ids = list(categories.dataset_ids)
    assert ids == sorted(ids) and ids[-1] == 90 and ids != list(range(1, 81))  # gaps
    assert [categories.label(i) for i in ids] == list(range(1, 81))
    assert [categories.dataset_id(label) for label in range(1, 81)] == ids
    assert categories.name(categories.label(90)) == "toothbrush"


def test_coco128_targets_hold_labels_not_raw_ids_and_own_image_ids(coco128):
    raw = ground_truth_for(coco128)
    by_image = {}
    for ann in raw["annotations"]:
        if not ann["iscrowd"]:
            by_image.setdefault(ann["image_id"], []).append(ann["category_id"])
    seen = 0
    for i in range(0, len(coco128), 16):
        _, target = coco128[i]
        image_id = target["image_id"]
        assert image_id == coco128.image_id(i)
        labels = sorted(target["labels"].tolist())
        expected = sorted(coco128.categories.label(c) for c in by_image.get(image_id, []))
        assert labels == expected
        seen += 1
    assert seen == 8


def test_coco128_keeps_2_empty_images_as_negatives_unless_asked(
    coco128, coco128_labels, coco128_dir
):
    empties = [i for i, labels in enumerate(coco128_labels) if not labels]
    assert len(coco128) == 128 and len(empties) == 2
    for i in empties:
        _, target = coco128[i]
        assert target["boxes"].shape == (0, 4) and target["masks"].shape[0] == 0
    root = coco128_dir
    without = CocoDataset(
        root / "val2017", root / "annotations" / "instances_val2017.json", keep_empty=False
    )
    assert len(without) == 126
    assert {coco128.image_id(i) for i in empties}.isdisjoint(
        without.image_id(i) for i in range(len(without))
    )


def test_coco128_crowd_regions_stay_out_of_targets_but_in_ground_truth(coco128, coco128_labels):
    assert coco128.num_crowd == 10
    ground_truth = ground_truth_for(coco128)
    crowd = [a for a in ground_truth["annotations"] if a["iscrowd"]]
    assert len(crowd) == 10 and len(ground_truth["annotations"]) == 939
    assert len(ground_truth["images"]) == 128 and len(ground_truth["categories"]) == 80
    non_crowd = len(ground_truth["annotations"]) - len(crowd)
    total = sum(map(len, coco128_labels))
    assert total == non_crowd == coco128.num_instances == 929
    # An image with a crowd region: its target holds exactly its non-crowd annotations.
    crowd_image = crowd[0]["image_id"]
    index = next(i for i in range(len(coco128)) if coco128.image_id(i) == crowd_image)
    subset = ground_truth_for(Subset(coco128, [index]))
    assert [im["id"] for im in subset["images"]] == [crowd_image]
    assert {a["image_id"] for a in subset["annotations"]} == {crowd_image}
    assert any(a["iscrowd"] for a in subset["annotations"])
    expected = sum(1 for a in subset["annotations"] if not a["iscrowd"])
    assert len(coco128_labels[index]) == expected


def test_coco128_grayscale_image_comes_as_three_channels(coco128):
    index = next(i for i in range(len(coco128)) if "000000000086.jpg" in coco128.source(i))
    image, _ = coco128[index]
    assert image.shape[0] == 3 and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert tuple(image.shape[1:]) == coco128.image_hw(index)


def test_coco_annotations_are_stored_compactly(coco128):
    """Workers share the data set copy-on-write: no per-image Python lists or dicts to refcount."""
    big = {
        name: type(value).__name__
        for name, value in vars(coco128).items()
        if isinstance(value, list | dict | tuple) and len(value) > 100
    }
    assert not big, f"per-item Python containers in the data set: {big}"
    assert isinstance(coco128._records, np.ndarray) and coco128._records.dtype == np.uint8


def test_aspect_groups_reach_through_subsets_without_decoding(pennfudan):

    subset = Subset(Subset(pennfudan, [3, 5, 9]), [2, 0])
    assert unwrap_dataset(subset) == (pennfudan, [9, 3])
    expected = [int(h > w) for h, w in (pennfudan.image_hw(9), pennfudan.image_hw(3))]
    assert aspect_groups(subset) == expected
