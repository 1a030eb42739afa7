import torch

from mrcnn.data import DetectionDataModule, ShapesDataset
from mrcnn.data.targets import boxes_from_masks


def test_samples_are_deterministic_per_seed_and_index():
    a, b = ShapesDataset(8, 96, seed=3), ShapesDataset(8, 96, seed=3)
    other = ShapesDataset(8, 96, seed=4)
    image_a, target_a = a[5]
    image_b, target_b = b[5]
    assert torch.equal(image_a, image_b)
    assert torch.equal(target_a["masks"], target_b["masks"])
    assert not torch.equal(image_a, other[5][0]) or image_a.shape != other[5][0].shape


def test_targets_are_what_mask_rcnn_needs():
    dataset = ShapesDataset(64, 96, seed=0)
    sizes, empty, overlapping_pairs = set(), 0, 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert (height, width) == dataset.image_hw(index)
        sizes.add((height, width))
        masks, boxes, labels = target["masks"], target["boxes"], target["labels"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(labels), height, width)
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 3)).all()
        assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
        assert torch.equal(boxes.as_subclass(torch.Tensor), boxes_from_masks(masks))
        # Occlusion is resolved: every pixel belongs to at most one instance.
        assert masks.sum(0).max() <= 1
        empty += len(labels) == 0
        overlapping_pairs += sum(
            1
            for i in range(len(boxes))
            for j in range(i)
            if (torch.max(boxes[i, :2], boxes[j, :2]) < torch.min(boxes[i, 2:], boxes[j, 2:])).all()
        )
    assert empty > 0, "some images must have no objects (negatives)"
    assert overlapping_pairs > 0, "some instances must overlap"
    assert len(sizes) > 10, "image sizes vary, so batches must be lists"


def test_datamodule_batches_are_lists_of_float_images():
    datamodule = DetectionDataModule(
        ShapesDataset(6, 96),
        ShapesDataset(2, 96, seed=1),
        batch_size=3,
        num_workers=0,
        image_size=96,
    )
    images, targets = next(iter(datamodule.train_dataloader()))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 3
    assert all(image.dtype == torch.float32 for image in images)
    assert all(image.min() >= 0 and image.max() <= 1 for image in images)
    assert len({tuple(image.shape) for image in images}) > 1
    assert type(targets[0]["boxes"]) is torch.Tensor  # plain tensors for the model


def test_split_without_validation_set_is_deterministic():
    def val_ids(split_seed, seed=0):
        datamodule = DetectionDataModule(
            ShapesDataset(20, 64),
            None,
            val_fraction=0.25,
            split_seed=split_seed,
            seed=seed,
            num_workers=0,
            image_size=64,
        )
        datamodule.setup()
        return [target["image_id"] for _, target in datamodule.val_set]

    assert val_ids(0) == val_ids(0)
    assert len(val_ids(0)) == 5
    assert val_ids(0) != val_ids(1)
    assert val_ids(0, seed=0) == val_ids(0, seed=5), "the run's seed must not move the split"
