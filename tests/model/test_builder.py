"""The model builder: architectures, light backbones, FPN stages and normalisation as config,
weight loading, predictor replacement, clear errors."""

import logging

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from mrcnn.config import compose_config
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


SMALL = {"min_size": 64, "max_size": 64}


def _target() -> dict[str, torch.Tensor]:
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 8:40] = 1
    return {
        "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
        "labels": torch.tensor([2]),
        "masks": masks,
    }


def _trains_and_detects(model: nn.Module) -> None:
    losses = model([torch.rand(3, 64, 64)], [_target()])
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(value) for value in losses.values())
    model.eval()
    with torch.no_grad():
        (detections,) = model([torch.rand(3, 64, 64)])
    assert set(detections) == {"boxes", "labels", "scores", "masks"}


@pytest.mark.parametrize(("name", "blocks"), [("resnet18", 2), ("resnet34", 6)])
def test_light_resnets_train_from_scratch(name, blocks):
    model = build_maskrcnn(num_classes=4, name=name, **SMALL)
    assert len(model.backbone.body.layer3) == blocks
    assert all(p.requires_grad for p in model.parameters())
    _trains_and_detects(model)


def test_fewer_fpn_stages_skip_the_last_stage_and_anchors_and_poolers_follow():
    model = build_maskrcnn(
        num_classes=4,
        name="resnet18",
        returned_layers=[1, 2, 3],
        anchor_sizes=[16, 32, 64, 128, 256],
        **SMALL,
    )
    assert not hasattr(model.backbone.body, "layer4")  # never computed
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "pool"]
    # The first four anchor sizes, one per map; the RoI heads pool the three stage maps.
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,))
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    assert model.roi_heads.mask_roi_pool.featmap_names == ["0", "1", "2"]
    _trains_and_detects(model)


@pytest.mark.parametrize(("norm", "layer"), [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm)])
def test_normalised_fpn_and_heads(norm, layer):
    model = build_maskrcnn(
        num_classes=4,
        name="resnet18",
        head_norm=norm,
        head_channels=64,
        box_head_size=128,
        box_head_convs=2,
        mask_head_convs=2,
        rpn_conv_depth=2,
        **SMALL,
    )
    for part in (model.backbone.fpn, model.roi_heads.box_head, model.roi_heads.mask_head):
        assert any(isinstance(m, layer) for m in part.modules()), type(part).__name__
    assert len(model.roi_heads.mask_head) == 2 and len(model.rpn.head.conv) == 2
    _trains_and_detects(model)


def test_group_norm_body_and_frozen_needs_pretrained_weights():
    model = build_maskrcnn(num_classes=3, name="resnet18", norm="group", **SMALL)
    assert isinstance(model.backbone.body.bn1, nn.GroupNorm)
    with pytest.raises(ValueError, match=r"backbone\.norm=frozen needs pretrained weights"):
        build_maskrcnn(num_classes=3, name="resnet18", norm="frozen", **SMALL)


def test_frozen_body_norm_with_a_local_detector_file(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(build_maskrcnn(num_classes=3, **SMALL).state_dict(), path)
    model = build_maskrcnn(num_classes=3, weights_path=str(path), norm="frozen", **SMALL)
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"returned_layers": [0, 1]}, "returned_layers"),
        ({"head_norm": "layer"}, r"model\.detector\.head_norm=layer"),
        ({"norm": "instance"}, r"backbone\.norm=instance"),
        ({"returned_layers": [2, 3], "anchor_sizes": [16, 32]}, "give three positive sizes"),
    ],
)
def test_bad_light_model_options_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_maskrcnn(num_classes=3, name="resnet18", **kwargs, **SMALL)


def test_config_groups_reach_the_builder():
    cfg = compose_config(
        ["backbone=resnet18", "backbone.returned_layers=[1,2,3]", "model.detector.head_norm=group"]
    )
    assert cfg.backbone.name == "resnet18" and list(cfg.backbone.returned_layers) == [1, 2, 3]
    assert cfg.model.detector.head_norm == "group"  # the builder's head_norm
