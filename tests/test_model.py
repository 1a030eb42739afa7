"""The model builder: architectures, weight loading, predictor replacement, clear errors."""

import logging

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from mrcnn.model.builder import PREDICTOR_PREFIXES, build_maskrcnn

SMALL = {"min_size": 64, "max_size": 64}


def _batchnorms(model):
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d)
    return [m for m in model.backbone.body.modules() if isinstance(m, norms)]


@pytest.mark.parametrize("name", ["resnet50", "resnet50_v2", "resnet101"])
def test_random_init_trains_every_layer_with_trainable_batchnorm(name):
    model = build_maskrcnn(num_classes=3, name=name, **SMALL)
    assert all(isinstance(m, nn.BatchNorm2d) for m in _batchnorms(model))
    assert all(p.requires_grad for p in model.parameters())
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3


def test_resnet101_has_101_layers():
    depth = {"resnet50": 0, "resnet101": 0}
    for name in depth:
        model = build_maskrcnn(num_classes=2, name=name, **SMALL)
        depth[name] = len(model.backbone.body.layer3)
    assert depth == {"resnet50": 6, "resnet101": 23}


def test_new_class_count_replaces_only_the_predictors(tmp_path):
    coco_like = build_maskrcnn(num_classes=91, name="resnet50", **SMALL)
    path = tmp_path / "detector.pth"
    torch.save(coco_like.state_dict(), path)

    fine_tuned = build_maskrcnn(num_classes=4, name="resnet50", weights_path=str(path), **SMALL)
    before, after = coco_like.state_dict(), fine_tuned.state_dict()
    # (FrozenBatchNorm2d has no num_batches_tracked buffer, so compare the loaded model's keys.)
    kept = [key for key in after if not key.startswith(PREDICTOR_PREFIXES)]
    assert any(key.startswith("backbone.body.") for key in kept)
    assert any(key.startswith("backbone.fpn.") for key in kept)
    assert any(key.startswith("rpn.") for key in kept)
    for key in kept:
        assert torch.equal(before[key], after[key]), key
    for key in before:
        if key.startswith(PREDICTOR_PREFIXES) and key.endswith("weight"):
            assert after[key].shape[0] in (4, 16) and after[key].shape != before[key].shape, key
    # Pretrained weights: torchvision's frozen BatchNorm and 3 trainable stages by default.
    assert all(isinstance(m, FrozenBatchNorm2d) for m in _batchnorms(fine_tuned))
    assert not any(p.requires_grad for p in fine_tuned.backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in fine_tuned.backbone.body.layer4.parameters())


def test_same_class_count_loads_every_weight(tmp_path):
    source = build_maskrcnn(num_classes=5, name="resnet50_v2", **SMALL)
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    loaded = build_maskrcnn(num_classes=5, name="resnet50_v2", weights_path=str(path), **SMALL)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(build_maskrcnn(num_classes=2, name="resnet50", **SMALL).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"backbone\.name"):
        build_maskrcnn(num_classes=2, name="resnet101", weights_path=str(path), **SMALL)


def test_trainable_layers_without_pretrained_weights_warns(caplog):
    with caplog.at_level(logging.WARNING):
        model = build_maskrcnn(num_classes=2, trainable_backbone_layers=2, **SMALL)
    assert "trainable_backbone_layers=2 ignored" in caplog.text
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 3, "name": "resnet19"}, "Unknown backbone 'resnet19'"),
        ({"num_classes": 1}, "num_classes >= 2"),
        ({"num_classes": 3, "name": "resnet101", "weights": "DEFAULT"}, "no COCO-trained"),
        ({"num_classes": 3, "trainable_backbone_layers": 7}, "0..5"),
        ({"num_classes": 3, "weights_path": "/nonexistent/detector.pth"}, "does not exist"),
    ],
)
def test_bad_model_config_gives_a_clear_error(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_maskrcnn(**kwargs, **SMALL)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_v2"])
def test_anchor_sizes_set_the_rpn_anchors_of_each_fpn_level(name):
    model = build_maskrcnn(num_classes=2, name=name, anchor_sizes=[8, 16, 32, 64, 128], **SMALL)
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    model.eval()
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])  # the RPN head fits the generator (3 anchors a place)


def test_anchor_sizes_need_one_size_per_fpn_level():
    with pytest.raises(ValueError, match="five positive sizes"):
        build_maskrcnn(num_classes=2, anchor_sizes=[16, 32, 64], **SMALL)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_v2"])
def test_narrow_heads_train_and_detect(name):
    model = build_maskrcnn(num_classes=4, name=name, head_channels=64, box_head_size=128, **SMALL)
    assert model.backbone.out_channels == 64
    assert model.roi_heads.box_predictor.cls_score.in_features == 128
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    narrow = sum(p.numel() for p in model.parameters())
    assert narrow < 0.7 * sum(p.numel() for p in build_maskrcnn(4, name=name).parameters())
    image = torch.rand(3, 64, 64)
    target = {
        "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
        "labels": torch.tensor([2]),
        "masks": torch.zeros(1, 64, 64, dtype=torch.uint8),
    }
    target["masks"][0, 8:40, 8:40] = 1
    losses = model([image], [target])
    assert all(torch.isfinite(value) for value in losses.values())
    model.eval()
    with torch.no_grad():
        (detections,) = model([image])
    assert set(detections) == {"boxes", "labels", "scores", "masks"}


def test_narrow_heads_refuse_coco_detector_weights(tmp_path):
    path = tmp_path / "detector.pth"
    torch.save(build_maskrcnn(num_classes=91, **SMALL).state_dict(), path)
    with pytest.raises(ValueError, match="model=fast or model=default"):
        build_maskrcnn(num_classes=3, weights_path=str(path), head_channels=64, **SMALL)
