"""COCO and mask-folder details on small files written here: decoding, colours, EXIF, classes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn.data import CocoDataset, MaskFolderDataset
from mrcnn.data.targets import boxes_from_masks
from tests.data.tmp_data import coco_json, mask_folder, small_coco, square, write_image


def test_multi_part_polygons_decode_into_one_instance(tmp_path):
    dataset = CocoDataset(*small_coco(tmp_path))
    assert len(dataset) == 2 and dataset.categories.dataset_ids == (3, 7)
    _, target = dataset[0]
    assert target["image_id"] == 11 and target["labels"].tolist() == [1, 2]
    masks = target["masks"]
    assert masks.shape == (2, 40, 60)
    # The two parts of instance 2 are far apart: both are in its mask, and its box spans them.
    assert masks[1, 7, 32] == 1 and masks[1, 24, 44] == 1 and masks[1, 15, 38] == 0
    assert target["boxes"][1].tolist() == boxes_from_masks(masks[1:])[0].tolist()
    assert target["boxes"][1, 0] <= 31 and target["boxes"][1, 2] >= 47
    _, negative = dataset[1]
    assert negative["image_id"] == 12 and negative["boxes"].shape == (0, 4)


def test_rle_compressed_and_uncompressed_decode_to_the_same_mask(tmp_path):
    truth = np.zeros((40, 60), dtype=np.uint8, order="F")
    truth[5:15, 10:30] = 1
    truth[20:22, 40:41] = 1
    compressed = mask_utils.encode(truth)
    compressed["counts"] = compressed["counts"].decode()
    # Uncompressed counts: run lengths in column-major order, starting with zeros.
    flat, counts, value, run = truth.flatten(order="F"), [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    images, annotations = small_coco(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"] = [
        {
            "id": 5,
            "image_id": 11,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": compressed,
            "bbox": [10, 5, 31, 17],
        },
        {
            "id": 6,
            "image_id": 11,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": {"size": [40, 60], "counts": counts},
            "bbox": [10, 5, 31, 17],
        },
        {
            "id": 7,
            "image_id": 12,
            "category_id": 7,
            "iscrowd": 1,
            "segmentation": {"size": [40, 60], "counts": counts},
            "bbox": [10, 5, 31, 17],
        },
    ]
    annotations.write_text(json.dumps(data))
    dataset = CocoDataset(images, annotations)
    _, target = dataset[0]
    assert torch.equal(target["masks"][0], torch.from_numpy(np.ascontiguousarray(truth)))
    assert torch.equal(target["masks"][1], target["masks"][0])
    _, crowd_only = dataset[1]
    assert crowd_only["labels"].numel() == 0 and dataset.num_crowd == 1


def test_rgba_image_becomes_rgb(tmp_path):
    images, annotations = small_coco(tmp_path)
    write_image(images / "a.png", 40, 60, mode="RGBA")
    image, _ = CocoDataset(images, annotations)[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.uint8


def test_exif_orientation_is_applied(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    stored = np.zeros((30, 50, 3), dtype=np.uint8)
    stored[:5, :10] = 255  # a white block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(images / "r.png", exif=exif.tobytes())
    data = coco_json(
        [{"id": 1, "file_name": "r.png", "height": 50, "width": 30}],
        [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [square(1, 1, 8)]}],
    )
    (tmp_path / "a.json").write_text(json.dumps(data))
    dataset = CocoDataset(images, tmp_path / "a.json")
    image, target = dataset[0]
    assert image.shape == (3, 50, 30) and target["masks"].shape == (1, 50, 30)
    # Rotated clockwise: the stored top-left corner is now at the top right.
    assert image[0, :10, -5:].min() == 255 and image[0, -10:, :5].max() == 0
    from mrcnn.data.images import image_hw

    assert image_hw(images / "r.png", "test") == (50, 30)


def test_mask_folder_one_instance_per_id_single_class(tmp_path):
    ids = np.zeros((20, 30), dtype=np.uint8)
    ids[2:6, 3:9] = 1
    ids[10:15, 20:28] = 7  # ids need not be contiguous
    root = mask_folder(tmp_path, {"a": ids, "b": np.zeros((20, 30))})
    dataset = MaskFolderDataset(root, mask_suffix="_mask", class_name="cell")
    assert dataset.categories.names == ("cell",) and len(dataset) == 2
    _, target = dataset[0]
    assert target["labels"].tolist() == [1, 1]
    assert target["boxes"].tolist() == [[3, 2, 9, 6], [20, 10, 28, 15]]
    assert dataset[1][1]["labels"].numel() == 0


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_mask_folder_sidecar_gives_instances_classes(tmp_path, suffix):
    ids = np.zeros((20, 30), dtype=np.uint8)
    ids[2:6, 3:9] = 1
    ids[10:15, 20:28] = 2
    ids[16:19, 1:4] = 3
    root = mask_folder(tmp_path, {"a": ids, "b": ids})
    spec = {
        "classes": ["car", "person"],
        "default": "car",
        "ids": {"2": "person"},
        "images": {"b": {"1": "person"}},
    }
    text = (
        json.dumps(spec)
        if suffix == "json"
        else ("classes: [car, person]\ndefault: car\nids: {2: person}\nimages:\n  b: {1: person}\n")
    )
    (root / f"classes.{suffix}").write_text(text)
    dataset = MaskFolderDataset(root, mask_suffix="_mask", classes_file=f"classes.{suffix}")
    assert dataset.categories.names == ("car", "person")
    assert dataset[0][1]["labels"].tolist() == [1, 2, 1]  # default, ids, default
    assert dataset[1][1]["labels"].tolist() == [2, 2, 1]  # per image wins over ids


def test_mask_folder_sidecar_without_default_names_the_unlisted_instance(tmp_path):
    ids = np.zeros((20, 30), dtype=np.uint8)
    ids[2:6, 3:9] = 4
    root = mask_folder(tmp_path, {"a": ids})
    (root / "classes.yaml").write_text("classes: [car]\nids: {1: car}\n")
    dataset = MaskFolderDataset(root, mask_suffix="_mask", classes_file="classes.yaml")
    with pytest.raises(ValueError, match=r"a\.png.*instance id 4 has no class.*default"):
        dataset[0]
