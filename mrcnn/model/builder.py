"""The one function that builds torchvision's MaskRCNN from config, and its weight loading."""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
)
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
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from mrcnn.errors import ConfigError, UserError
from mrcnn.model.roi_align import MultiScaleRoIAlign

log = logging.getLogger(__name__)


class WeightsError(UserError, RuntimeError):
    """Pretrained weights that cannot be fetched, read or loaded into this architecture."""


# name -> (ResNet constructor, its ImageNet weights enum, COCO Mask R-CNN weights enum or None)
BACKBONES: dict[str, tuple[Any, Any, Any]] = {
    # Light ResNets for small images and CPUs: ImageNet weights only (weights_backbone).
    "resnet18": (resnet18, ResNet18_Weights, None),
    "resnet34": (resnet34, ResNet34_Weights, None),
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
    returned_layers: Sequence[int] | None = None,
    norm: str | None = None,
    anchor_sizes: Sequence[int] | None = None,
    head_channels: int = 256,
    box_head_size: int = 1024,
    head_norm: str = "none",
    box_head_convs: int = 0,
    mask_head_convs: int = 4,
    rpn_conv_depth: int = 1,
    roi_sampling_ratio: int = 2,
    load_weights: bool = True,
    **detector_kwargs: Any,
) -> MaskRCNN:
    """Build a Mask R-CNN from torchvision's blocks and load the weights the config names.

    Args:
        num_classes: background plus the data set's categories (from ``Categories.num_classes``).
        name: ``resnet18``, ``resnet34``, ``resnet50`` (torchvision's
            ``maskrcnn_resnet50_fpn``), ``resnet50_v2`` (``maskrcnn_resnet50_fpn_v2``) or
            ``resnet101``: the ResNet under the FPN.
        weights: COCO-trained detector weights, ``"DEFAULT"`` or an enum name; downloaded once.
        weights_backbone: ImageNet backbone weights, used when no detector weights are given.
        weights_path: a local file with a whole detector's state dict (torchvision ``.pth`` or an
            ``mrcnn`` checkpoint), for machines without internet.
        trainable_backbone_layers: 0-5 ResNet stages to train; only meaningful with pretrained
            weights (a random backbone trains all 5 with trainable BatchNorm).
        returned_layers: the ResNet stages (1-4) that feed the FPN, torchvision's ``[1, 2, 3,
            4]``. Fewer suit small images: a stage after the last one named is never computed,
            and the anchors and RoI poolers follow the number of feature maps.
        norm: the ResNet's normalisation: ``batch`` (trainable BatchNorm), ``group``
            (GroupNorm, for batches of 1-2 images) or ``frozen`` (torchvision's
            FrozenBatchNorm, pretrained weights only). None: frozen for pretrained v1 ResNets,
            else batch (frozen BatchNorm with random statistics gives NaN losses).
        anchor_sizes: the RPN anchor size (pixels, at the model's input scale) of each FPN
            level, finest first; the first as many as there are levels are used.
            torchvision's are ``32, 64, 128, 256, 512``, sized for 800 px images. Aspect
            ratios stay 0.5, 1 and 2. Pretrained RPN weights still fit.
        head_channels: channels of the FPN outputs, the RPN head and the mask head;
            torchvision's 256. At small image sizes these heads, not the ResNet, cost most of a
            training step. Only 256 fits COCO-trained detector weights.
        box_head_size: width of the box head's fully connected layer(s) (torchvision: 1024).
        head_norm: normalisation in the FPN and the box and mask heads: ``none``
            (torchvision's v1 heads), ``batch`` or ``group``. Training from scratch needs it
            (He et al. 2019, "Rethinking ImageNet Pre-training").
        box_head_convs: 3x3 convolutions in the box head before its one fully connected layer
            (torchvision's v2 head: 4); 0 is the v1 head of two fully connected layers.
        mask_head_convs: 3x3 convolutions in the mask head (torchvision: 4).
        rpn_conv_depth: 3x3 convolutions in the RPN head (v1: 1, v2: 2).
        roi_sampling_ratio: bilinear samples per RoI bin side in the box and mask RoIAlign
            (torchvision: 2). On the CPU, RoIAlign is :mod:`mrcnn.model.roi_align` (parallel,
            bf16, torchvision's values); torchvision's serial kernel took about a third of a
            training step of the default model, and 1 sample per side roughly halved it.
        load_weights: False builds the same architecture without fetching any weights (used
            when a checkpoint's own state dict is loaded right after).
        detector_kwargs: ``MaskRCNN`` keyword arguments: ``min_size``, ``max_size``, RPN and
            RoI-head sizes, ...

    ``resnet50_v2`` is torchvision's v2 architecture whatever the head options say (BatchNorm
    in the FPN and heads, a 4-conv box head, a 2-conv RPN head), so its COCO weights fit.
    """
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.")
    if num_classes < 2:
        raise ConfigError(
            f"num_classes={num_classes}: Mask R-CNN needs background plus at least one class "
            "(num_classes >= 2). It is derived from the data set's categories."
        )
    resnet, imagenet_enum, detector_enum = BACKBONES[name]
    if weights is not None and detector_enum is None:
        raise ConfigError(
            f"backbone={name} has no COCO-trained Mask R-CNN in torchvision. Use "
            f"backbone.weights_backbone=DEFAULT for an ImageNet {name}, or backbone.weights_path "
            "for a detector you trained yourself."
        )
    if weights is not None and weights_path is not None:
        raise ConfigError("Give either backbone.weights or backbone.weights_path, not both.")
    v2 = name.endswith("_v2")
    if v2:
        head_norm, box_head_convs, rpn_conv_depth = "batch", 4, 2
    returned_layers = _returned_layers(returned_layers)
    torchvision_heads = (head_channels, box_head_size, mask_head_convs) == (256, 1024, 4) and (
        v2 or (head_norm, box_head_convs, rpn_conv_depth) == ("none", 0, 1)
    )
    if (weights or weights_path) and not (torchvision_heads and returned_layers == [1, 2, 3, 4]):
        raise ConfigError(
            f"model.detector.head_channels={head_channels} / box_head_size={box_head_size} / "
            f"model.detector.head_norm={head_norm} / backbone.returned_layers={returned_layers}: "
            "detector weights (backbone.weights / weights_path) fit torchvision's architecture "
            "only. Use model=fast or model=default with them, or backbone.weights_backbone for an "
            "ImageNet ResNet under other heads."
        )
    detector_weights = detector_enum.verify(weights) if weights is not None else None
    backbone_weights = (
        imagenet_enum.verify(weights_backbone)
        if weights_backbone is not None and detector_weights is None and weights_path is None
        else None
    )
    pretrained = any(w is not None for w in (weights, weights_backbone, weights_path))
    trainable_layers = _trainable_layers(pretrained, trainable_backbone_layers)

    body = resnet(
        weights=backbone_weights if load_weights else None,
        norm_layer=_body_norm(norm, pretrained, v2),
    )
    head_norm_layer = _norm_layer(head_norm, "model.detector.head_norm")
    backbone = _resnet_fpn_extractor(
        body, trainable_layers, returned_layers, norm_layer=head_norm_layer
    )
    if head_channels != 256:  # torchvision's extractor makes a 256-channel FPN
        in_channels = [body.inplanes // 8 * 2 ** (layer - 1) for layer in returned_layers]
        backbone.fpn = FeaturePyramidNetwork(
            in_channels, head_channels, extra_blocks=LastLevelMaxPool(), norm_layer=head_norm_layer
        )
        backbone.out_channels = head_channels
    maps = [str(level) for level in range(len(returned_layers))]  # the RoI heads' feature maps
    anchors = _anchor_generator(anchor_sizes, len(maps) + 1)  # + the max-pooled level
    channels = head_channels
    box_head = (
        FastRCNNConvFCHead(
            (channels, 7, 7),
            [channels] * box_head_convs,
            [box_head_size],
            norm_layer=head_norm_layer,
        )
        if box_head_convs
        else TwoMLPHead(channels * 7 * 7, box_head_size)
    )
    heads = {
        "rpn_anchor_generator": anchors,
        "rpn_head": RPNHead(
            channels, anchors.num_anchors_per_location()[0], conv_depth=rpn_conv_depth
        ),
        "box_roi_pool": MultiScaleRoIAlign(maps, output_size=7, sampling_ratio=roi_sampling_ratio),
        "box_head": box_head,
        "box_predictor": FastRCNNPredictor(box_head_size, num_classes),
        "mask_roi_pool": MultiScaleRoIAlign(
            maps, output_size=14, sampling_ratio=roi_sampling_ratio
        ),
        "mask_head": MaskRCNNHeads(
            channels, [channels] * mask_head_convs, 1, norm_layer=head_norm_layer
        ),
        "mask_predictor": MaskRCNNPredictor(channels, channels, num_classes),
    }
    model = MaskRCNN(backbone, num_classes=None, **heads, **detector_kwargs)

    if load_weights and detector_weights is not None:
        load_detector_weights(model, _download(detector_weights), str(detector_weights))
    elif load_weights and weights_path is not None:
        load_detector_weights(model, read_state_dict(weights_path), weights_path)
    return model


def _returned_layers(layers: Sequence[int] | None) -> list[int]:
    layers = [1, 2, 3, 4] if layers is None else sorted(int(layer) for layer in layers)
    if not layers or layers[0] < 1 or layers[-1] > 4 or len(set(layers)) != len(layers):
        raise ConfigError(
            f"backbone.returned_layers={layers}: name distinct ResNet stages from 1 to 4, e.g. "
            "[1, 2, 3] (torchvision: [1, 2, 3, 4])."
        )
    return layers


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer where the channels do not divide."""
    groups = 32
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


NORMS: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "batch": nn.BatchNorm2d,
    "group": group_norm,
}


def _norm_layer(norm: str | None, key: str) -> Callable[[int], nn.Module] | None:
    if str(norm).lower() not in NORMS:
        raise ConfigError(f"{key}={norm}: choose one of {sorted(NORMS)}.")
    return NORMS[str(norm).lower()]


def _body_norm(norm: str | None, pretrained: bool, v2: bool) -> Callable[[int], nn.Module]:
    """The ResNet's norm layer (see ``build_maskrcnn``'s ``norm``)."""
    if norm is None:
        # Pretrained v1 ResNets keep torchvision's frozen BatchNorm; a random backbone must
        # train its BatchNorm (frozen BN with random statistics gives NaN losses at step 1).
        return FrozenBatchNorm2d if pretrained and not v2 else nn.BatchNorm2d
    if norm == "frozen":
        if not pretrained:
            raise ConfigError(
                "backbone.norm=frozen needs pretrained weights (backbone.weights, "
                "weights_backbone or weights_path): frozen BatchNorm with random statistics "
                "gives NaN losses. Use backbone.norm=batch or group from scratch."
            )
        return FrozenBatchNorm2d
    layer = _norm_layer(norm, "backbone.norm")
    if layer is None:
        raise ConfigError(f"backbone.norm={norm}: choose batch, group or frozen.")
    return layer


_COUNTS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _anchor_generator(sizes: Sequence[int] | None, levels: int) -> AnchorGenerator:
    """One anchor size per FPN level (``levels`` maps), each with aspect ratios 0.5, 1 and 2."""
    sizes = [32 * 2**level for level in range(levels)] if sizes is None else list(sizes)
    sizes = [int(size) for size in sizes]
    if len(sizes) < levels or any(size <= 0 for size in sizes):
        raise ConfigError(
            f"model.detector.anchor_sizes={sizes}: give {_COUNTS.get(levels, levels)} positive "
            "sizes in pixels, one per FPN level from the finest to the coarsest (torchvision: "
            "[32, 64, 128, 256, 512]; backbone.returned_layers=[1, 2, 3] has four levels)."
        )
    return AnchorGenerator(tuple((size,) for size in sizes[:levels]), ((0.5, 1.0, 2.0),) * levels)


def _trainable_layers(pretrained: bool, requested: int | None) -> int:
    if requested is not None and not 0 <= requested <= 5:
        raise ConfigError(f"trainable_backbone_layers must be 0..5, got {requested}.")
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
        raise WeightsError(
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
        raise WeightsError(
            f"{path} is not a loadable weights file (read with weights_only=True): {error}"
        ) from error
    if isinstance(data, dict) and "state_dict" in data:  # Lightning checkpoint
        data = {
            key.removeprefix("model."): value
            for key, value in data["state_dict"].items()
            if key.startswith("model.")
        }
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors.")
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
        raise WeightsError(
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
