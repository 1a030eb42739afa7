"""Augmentation presets: boxes stay the tight boxes of their masks, and scale survives the model."""

import random

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mrcnn.data import CocoDataset, DetectionDataModule, MaskFolderDataset
from mrcnn.data.targets import boxes_from_masks
from mrcnn.data.transforms import PRESETS, build_transforms
from mrcnn.errors import ConfigError


@pytest.fixture(scope="module")
def samples(coco128_dir, pennfudan_dir):
    coco = CocoDataset(
        coco128_dir / "val2017", coco128_dir / "annotations" / "instances_val2017.json"
    )
    penn = MaskFolderDataset(pennfudan_dir, "PNGImages", "PedMasks", "_mask")
    return [coco[i] for i in range(0, 60, 5)] + [penn[i] for i in range(0, 60, 10)]


@pytest.mark.parametrize("preset", PRESETS)
def test_boxes_are_tight_boxes_of_transformed_masks(samples, preset):
    torch.manual_seed(0)
    transform = build_transforms(preset, image_size=256, max_image_size=400)
    kept = 0
    for _ in range(3):
        for image, target in samples:
            out_image, out = transform(image, target)
            assert out_image.dtype == torch.float32 and 0 <= out_image.min() <= out_image.max() <= 1
            n = len(out["labels"])
            assert out["boxes"].shape == (n, 4) and out["masks"].shape[0] == n
            assert tuple(out["masks"].shape[1:]) == tuple(out_image.shape[1:])
            assert torch.equal(
                out["boxes"].as_subclass(torch.Tensor), boxes_from_masks(out["masks"])
            )
            assert (out["masks"].flatten(1).amax(1) > 0).all()  # no empty instance survives
            kept += n
    assert kept > 0


def test_scale_presets_survive_the_models_own_resize(samples):
    """After GeneralizedRCNNTransform, objects are larger or smaller than without augmentation."""
    image, target = samples[0]
    model_resize = GeneralizedRCNNTransform(256, 400, [0.0] * 3, [1.0] * 3)
    plain, plain_target = build_transforms("none", 256, 400)(image, target)
    plain_hw = model_resize([plain])[0].image_sizes[0]
    plain_area = plain_target["masks"].sum().item() * (plain_hw[0] / plain.shape[-2]) ** 2
    # LSJ aims at a square (a smaller base for this landscape image) and crops more away.
    for preset, smaller, larger in (("multiscale", 0.8, 1.2), ("lsj", 0.5, 1.0)):
        transform = build_transforms(preset, 256, 400)
        ratios = []
        for seed in range(12):
            torch.manual_seed(seed)
            random.seed(seed)
            out_image, out = transform(image, target)
            resized_hw = model_resize([out_image])[0].image_sizes[0]
            # The canvas already has the model's size: the model leaves its scale alone.
            assert abs(resized_hw[0] - out_image.shape[-2]) <= 1
            assert abs(resized_hw[1] - out_image.shape[-1]) <= 1
            if preset == "lsj":
                assert tuple(out_image.shape[-2:]) == (256, 256)
            else:
                assert abs(out_image.shape[-2] - plain_hw[0]) <= 1
                assert abs(out_image.shape[-1] - plain_hw[1]) <= 1
            ratios.append(out["masks"].sum().item() / plain_area)
        assert min(ratios) < smaller and max(ratios) > larger, f"{preset}: sizes {ratios}"


def test_validation_is_never_augmented(pennfudan_dir):
    dataset = MaskFolderDataset(pennfudan_dir, "PNGImages", "PedMasks", "_mask")
    datamodule = DetectionDataModule(
        dataset, augment="lsj", image_size=128, max_image_size=128, num_workers=0, val_fraction=0.1
    )
    datamodule.setup()
    base = datamodule.val_set.dataset
    for i in range(3):
        image, target = datamodule.val_set[i]
        raw_image, raw_target = base[i]
        assert image.shape == raw_image.shape
        assert torch.equal(target["boxes"], raw_target["boxes"].as_subclass(torch.Tensor))
    assert datamodule.train_set[0][0].shape[-2:] == (128, 128)  # training is (LSJ canvas)


def test_unknown_preset_is_refused_up_front():
    with pytest.raises(ConfigError, match=r"data\.augment=flip: give one preset of .*'lsj'"):
        build_transforms("flip")
