"""Light backbones, FPN stages and normalisation as config: built from torchvision's blocks."""

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from mrcnn.config import compose_config
from mrcnn.model.builder import build_maskrcnn

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
