"""The one function that builds torchvision's MaskRCNN from config, and its weight loading."""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    RPNHead,
    TwoMLPHead,
    _default_anchorgen,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

log = logging.getLogger(__name__)

# name -> (ResNet constructor, its ImageNet weights enum, COCO Mask R-CNN weights enum or None)
BACKBONES: dict[str, tuple[Any, Any, Any]] = {
    "resnet50": (resnet50, ResNet50_Weights, MaskRCNN_ResNet50_FPN_Weights),
    "resnet50_v2": (resnet50, ResNet50_Weights, MaskRCNN_ResNet50_FPN_V2_Weights),
    # torchvision has no COCO-trained ResNet-101 Mask R-CNN: an ImageNet backbone at best.
    "resnet101": (resnet101, ResNet101_Weights, None),
}

# Parameters that depend on the number of classes: the only ones a new class count replaces.
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def build_maskrcnn(
    num_classes: int,
    name: str = "resnet50",
    weights: str | None = None,
    weights_backbone: str | None = None,
    weights_path: str | None = None,
    trainable_backbone_layers: int | None = None,
    anchor_sizes: Sequence[int] | None = None,
    head_channels: int = 256,
    box_head_size: int = 1024,
    load_weights: bool = True,
    **detector_kwargs: Any,
) -> MaskRCNN:
    """Build a Mask R-CNN and load the weights the config names.

    Args:
        num_classes: background plus the data set's categories (from ``Categories.num_classes``).
        name: ``resnet50`` (torchvision's ``maskrcnn_resnet50_fpn``), ``resnet50_v2``
            (``maskrcnn_resnet50_fpn_v2``) or ``resnet101`` (ResNet-101 FPN backbone).
        weights: COCO-trained detector weights, ``"DEFAULT"`` or an enum name; downloaded once.
        weights_backbone: ImageNet backbone weights, used when no detector weights are given.
        weights_path: a local file with a whole detector's state dict (torchvision ``.pth`` or an
            ``mrcnn`` checkpoint), for machines without internet.
        trainable_backbone_layers: 0-5 ResNet stages to train; only meaningful with pretrained
            weights (a random backbone trains all 5 with trainable BatchNorm).
        anchor_sizes: the RPN anchor size (pixels, at the model's input scale) of each of the
            five FPN levels; torchvision's are ``32, 64, 128, 256, 512``, sized for 800 px
            images. Smaller images with small objects want smaller anchors. Aspect ratios stay
            0.5, 1 and 2. Pretrained RPN weights still fit (same anchors per location).
        head_channels: channels of the FPN outputs, the RPN head and the mask head (4 convs);
            torchvision's 256. At small image sizes these heads, not the ResNet, cost most of a
            training step; fewer channels make a from-scratch model on a CPU several times
            cheaper. Only 256 fits COCO-trained detector weights.
        box_head_size: width of the box head's two fully connected layers (torchvision: 1024).
        load_weights: False builds the same architecture without fetching any weights (used
            when a checkpoint's own state dict is loaded right after).
        detector_kwargs: ``MaskRCNN`` keyword arguments: ``min_size``, ``max_size``, RPN and
            RoI-head sizes, ...
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.")
    if num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes}: Mask R-CNN needs background plus at least one class "
            "(num_classes >= 2). It is derived from the data set's categories."
        )
    resnet, imagenet_enum, detector_enum = BACKBONES[name]
    if weights is not None and detector_enum is None:
        raise ValueError(
            f"backbone={name} has no COCO-trained Mask R-CNN in torchvision. Use "
            f"backbone.weights_backbone=DEFAULT for an ImageNet {name}, or backbone.weights_path "
            "for a detector you trained yourself."
        )
    if weights is not None and weights_path is not None:
        raise ValueError("Give either backbone.weights or backbone.weights_path, not both.")
    slim = (head_channels, box_head_size) != (256, 1024)
    if slim and (weights or weights_path):
        raise ValueError(
            f"model.detector.head_channels={head_channels} / box_head_size={box_head_size}: "
            "detector weights (backbone.weights / weights_path) fit torchvision's heads only "
            "(256 channels, box head 1024). Use model=fast or model=default with them, or "
            "backbone.weights_backbone for an ImageNet ResNet under narrow heads."
        )
    detector_weights = detector_enum.verify(weights) if weights is not None else None
    backbone_weights = (
        imagenet_enum.verify(weights_backbone)
        if weights_backbone is not None and detector_weights is None and weights_path is None
        else None
    )
    pretrained = any(w is not None for w in (weights, weights_backbone, weights_path))
    trainable_layers = _trainable_layers(pretrained, trainable_backbone_layers)

    if anchor_sizes is not None:
        detector_kwargs["rpn_anchor_generator"] = _anchor_generator(anchor_sizes)
    v2 = name.endswith("_v2")
    # Pretrained v1 ResNets keep torchvision's frozen BatchNorm; a random backbone must train
    # its BatchNorm (frozen BN with random statistics gives NaN losses from the first step).
    norm_layer = FrozenBatchNorm2d if pretrained and not v2 else nn.BatchNorm2d
    body = resnet(
        weights=backbone_weights if load_weights else None,
        norm_layer=norm_layer,
    )
    fpn_norm = nn.BatchNorm2d if v2 else None
    backbone = _resnet_fpn_extractor(body, trainable_layers, norm_layer=fpn_norm)
    if slim:
        # A narrower FPN, RPN and RoI heads: same layers, fewer channels (see `head_channels`).
        in_channels = [body.inplanes // 8 * 2**level for level in range(4)]
        backbone.fpn = FeaturePyramidNetwork(
            in_channels, head_channels, extra_blocks=LastLevelMaxPool(), norm_layer=fpn_norm
        )
        backbone.out_channels = head_channels
    channels, head_norm = head_channels, nn.BatchNorm2d if v2 else None
    heads: dict[str, nn.Module] = {}
    if v2:
        anchors = detector_kwargs.get("rpn_anchor_generator") or _default_anchorgen()
        heads = {
            "rpn_anchor_generator": anchors,
            "rpn_head": RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=2),
            "box_head": FastRCNNConvFCHead(
                (channels, 7, 7), [channels] * 4, [box_head_size], norm_layer=head_norm
            ),
            "mask_head": MaskRCNNHeads(channels, [channels] * 4, 1, norm_layer=head_norm),
        }
    elif slim:
        heads = {
            "box_head": TwoMLPHead(channels * 7 * 7, box_head_size),
            "mask_head": MaskRCNNHeads(channels, [channels] * 4, 1),
        }
    if slim:  # the class-specific predictors on top of the narrower heads
        heads["box_predictor"] = FastRCNNPredictor(box_head_size, num_classes)
        heads["mask_predictor"] = MaskRCNNPredictor(channels, channels, num_classes)
    detector_kwargs = {**heads, **detector_kwargs}
    model = MaskRCNN(backbone, num_classes=None if slim else num_classes, **detector_kwargs)

    if load_weights and detector_weights is not None:
        load_detector_weights(model, _download(detector_weights), str(detector_weights))
    elif load_weights and weights_path is not None:
        load_detector_weights(model, read_state_dict(weights_path), weights_path)
    return model


def _anchor_generator(sizes: Sequence[int]) -> AnchorGenerator:
    """One anchor size per FPN level (five levels), each with aspect ratios 0.5, 1 and 2."""
    sizes = [int(size) for size in sizes]
    if len(sizes) != 5 or any(size <= 0 for size in sizes):
        raise ValueError(
            f"model.detector.anchor_sizes={sizes}: give five positive sizes in pixels, one per "
            "FPN level from the finest to the coarsest (torchvision: [32, 64, 128, 256, 512])."
        )
    return AnchorGenerator(tuple((size,) for size in sizes), ((0.5, 1.0, 2.0),) * len(sizes))


def _trainable_layers(pretrained: bool, requested: int | None) -> int:
    if requested is not None and not 0 <= requested <= 5:
        raise ValueError(f"trainable_backbone_layers must be 0..5, got {requested}.")
    if not pretrained:
        if requested is not None and requested != 5:
            log.warning(
                "trainable_backbone_layers=%s ignored: without pretrained weights every backbone "
                "layer must train (all 5 are trainable). Set backbone.weights or "
                "backbone.weights_backbone to freeze layers.",
                requested,
            )
        return 5
    return 3 if requested is None else requested


def _download(weights: Any) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(
            f"Could not download {weights} ({weights.url}): {error}. On a machine without "
            f"internet, download that file elsewhere, copy it here and pass "
            f"backbone.weights_path=/path/to/{Path(weights.url).name} backbone.weights=null."
        ) from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A detector state dict from a torchvision ``.pth`` or an ``mrcnn``/Lightning checkpoint.

    Loaded with ``weights_only=True``: a file from someone else cannot run code here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(
            f"{path} is not a loadable weights file (read with weights_only=True): {error}"
        ) from error
    if isinstance(data, dict) and "state_dict" in data:  # Lightning checkpoint
        data = {
            key.removeprefix("model."): value
            for key, value in data["state_dict"].items()
            if key.startswith("model.")
        }
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise RuntimeError(f"{path} does not hold a state dict of tensors.")
    return data


def load_detector_weights(
    model: MaskRCNN, state_dict: dict[str, torch.Tensor], source: str
) -> None:
    """Load detector weights; if the class count differs, keep the class-specific predictors new.

    Backbone, FPN, RPN and the shared box/mask head layers always load; only the box and mask
    predictors (whose shapes depend on ``num_classes``) are left freshly initialised.
    """
    own = model.state_dict()
    replaced = sorted(
        key
        for key, value in state_dict.items()
        if key.startswith(PREDICTOR_PREFIXES) and key in own and own[key].shape != value.shape
    )
    loadable = {key: value for key, value in state_dict.items() if key not in replaced}
    missing, unexpected = model.load_state_dict(loadable, strict=False)
    missing = [key for key in missing if key not in replaced]
    if missing or unexpected:
        raise RuntimeError(
            f"Weights from {source} do not fit backbone architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}. Check that backbone.name matches the file."
        )
    if replaced:
        old = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
        log.info(
            "Loaded %s; class count differs (weights: %d, data: %d), so the box and mask "
            "predictors start fresh and the backbone, FPN and RPN keep their weights.",
            source,
            old,
            model.roi_heads.box_predictor.cls_score.out_features,
        )
    else:
        log.info("Loaded every detector weight from %s.", source)
