"""Copy-paste augmentation: a pasted instance is in front (it occludes the target's masks), boxes
follow the masks, a hidden instance is dropped, and it combines with the presets."""

import pytest
import torch
from torchvision import tv_tensors

from mrcnn.data import DetectionDataModule, ShapesDataset
from mrcnn.data.copy_paste import CopyPaste, paste
from mrcnn.data.targets import boxes_from_masks, make_target
from mrcnn.data.transforms import build_transforms, parse_augment
from mrcnn.data.wrappers import TransformedDataset, seeded_random
from mrcnn.errors import ConfigError


def sample(masks: list[torch.Tensor], labels: list[int], colour: int, size=(40, 60)):
    """A uint8 image of one colour and its target (masks [N,H,W] uint8)."""
    image = tv_tensors.Image(torch.full((3, *size), colour, dtype=torch.uint8))
    stacked = torch.stack(masks).to(torch.uint8) if masks else torch.zeros((0, *size))
    return image, make_target(stacked, labels, image_id=0)


def rectangle(y0, y1, x0, x1, size=(40, 60)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_a_pasted_instance_occludes_the_targets_masks_and_boxes_follow():
    image, target = sample([rectangle(0, 40, 0, 30), rectangle(5, 10, 50, 55)], [1, 2], 10)
    source_image, source_target = sample(
        [rectangle(10, 30, 20, 50), rectangle(0, 5, 0, 5)], [3, 2], 200
    )
    with seeded_random(0):  # same size: the source lands at offset (0, 0)
        pasted_image, out = paste(image, target, source_image, source_target, torch.tensor([0]))
    masks = out["masks"].bool()
    assert out["labels"].tolist() == [1, 2, 3]
    assert out["num_pasted"] == 1
    # The target's first mask lost what the pasted square covers (it is behind it) ...
    assert masks[0].sum() == 40 * 30 - 20 * 10
    assert not (masks[0] & masks[2]).any()
    assert masks[2].sum() == 20 * 30  # ... and the pasted one is whole
    assert torch.equal(masks[1], rectangle(5, 10, 50, 55).bool())  # untouched elsewhere
    # The pixels under the pasted mask are the source's, the rest the target's.
    assert (pasted_image[:, masks[2]] == 200).all()
    assert (pasted_image[:, ~masks[2]] == 10).all()
    # Boxes are the tight boxes of the new masks.
    assert torch.equal(out["boxes"], boxes_from_masks(out["masks"]))
    assert out["boxes"][0].tolist() == [0.0, 0.0, 30.0, 40.0]  # still spans rows 0-40


def test_an_instance_hidden_completely_is_dropped_and_counted():
    class Source(torch.utils.data.Dataset):
        """Two items; whichever is drawn covers the whole image with one instance."""

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return sample([rectangle(0, 40, 0, 60)], [3], 99)

    transform = build_transforms(["none", "copy_paste"], 40, 60, source=Source(), copy_paste_p=1)
    dataset = TransformedDataset([sample([rectangle(0, 10, 0, 10)], [1], 10)], transform)
    _, target = dataset[(0, 123)]
    assert target["labels"].tolist() == [3]  # the hidden circle is gone
    assert target["num_dropped"] == 1  # counted as dropped, the pasted one not as new
    assert "num_pasted" not in target


def test_the_source_is_fitted_inside_a_smaller_target():
    image, target = sample([], [], 0, size=(20, 30))
    source_image, source_target = sample([rectangle(0, 40, 0, 60)], [2], 50)  # 40x60, all object
    with seeded_random(3):
        _, out = paste(image, target, source_image, source_target, torch.tensor([0]))
    assert out["masks"].shape == (1, 20, 30)
    assert out["masks"].bool().all()  # scaled down to 20x30, it fills the canvas
    assert out["boxes"].tolist() == [[0.0, 0.0, 30.0, 20.0]]


@pytest.mark.parametrize("preset", ["hflip", "lsj", "multiscale"])
def test_copy_paste_combines_with_every_preset_in_the_datamodule(preset):
    shapes = ShapesDataset(12, 64, seed=2)
    datamodule = DetectionDataModule(
        shapes,
        ShapesDataset(2, 64, seed=3),
        augment=[preset, "copy_paste"],
        image_size=64,
        max_image_size=64,
        batch_size=4,
        num_workers=0,
    )
    datamodule.setup("fit")
    plain = TransformedDataset(shapes, build_transforms(preset, 64, 64))
    pasted_counts, plain_counts = 0, 0
    for index in range(len(datamodule.train_set)):
        image, target = datamodule.train_set[(index, index)]
        pasted_counts += len(target["labels"])
        plain_counts += len(plain[(index, index)][1]["labels"])
        assert image.dtype == torch.float32
        assert target["masks"].shape[-2:] == image.shape[-2:]
        assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"])
        assert torch.equal(target["boxes"], boxes_from_masks(target["masks"]))
        assert (target["masks"].flatten(1).amax(1) > 0).all()  # no empty instance left
    assert pasted_counts > plain_counts  # pasting adds instances


def test_copy_paste_is_the_same_for_the_same_seed():
    shapes = ShapesDataset(6, 64, seed=2)
    dataset = TransformedDataset(shapes, build_transforms(["lsj", "copy_paste"], 64, 64, shapes))
    first, again = dataset[(1, 42)], dataset[(1, 42)]
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1]["masks"], again[1]["masks"])


def test_augment_lists_are_checked():
    assert parse_augment("lsj") == ("lsj", False)
    assert parse_augment(["lsj", "copy_paste"]) == ("lsj", True)
    assert parse_augment(["copy_paste"]) == ("none", True)
    for bad in (["lsj", "hflip"], "flip", ["copy_paste", "copy_paste"]):
        with pytest.raises(ConfigError, match=r"data\.augment"):
            parse_augment(bad)
    with pytest.raises(ConfigError, match=r"data\.copy_paste_p"):
        DetectionDataModule(ShapesDataset(4, 32), augment=["copy_paste"], copy_paste_p=2)


def test_copy_paste_with_p_zero_pastes_nothing():
    shapes = ShapesDataset(6, 64, seed=2)
    with seeded_random(0):
        image, target = CopyPaste(shapes, lambda i, t: (i, t), p=0.0)(*shapes[0])
    assert target["num_pasted"] == 0
    assert torch.equal(image, shapes[0][0])
