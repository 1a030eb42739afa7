"""Validation losses and detections from one backbone pass, with every piece of model state kept.

torchvision's MaskRCNN returns losses only in ``train()`` mode and detections only in ``eval()``
mode. Running it twice doubles the cost, and the train-mode pass would update trainable
BatchNorm statistics with validation data. Here the transform and backbone run once (in eval
mode, so BatchNorm uses and keeps its running statistics); the RPN head runs once; only the
proposal filtering and the RoI heads run in both regimes, because training losses are defined on
sampled proposals and detections on the test-time ones.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.rpn import concat_box_prediction_layers


@contextmanager
def _preserved_modes(model: nn.Module):
    """Put the model in eval mode and restore every module's own ``training`` flag afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def detect(
    model: MaskRCNN, images: list[Tensor], backbone_autocast: AbstractContextManager | None = None
) -> list[dict[str, Tensor]]:
    """torchvision's eval-mode forward, with only the backbone under ``backbone_autocast``.

    Under autocast the whole model would decode boxes and paste masks in bf16/fp16, which moves
    box corners by pixels (bf16 keeps 8 bits: 2 px steps at 256-512 px). The backbone is most
    of the cost; everything after it (RPN, RoI heads, box decoding, mask pasting, resizing
    back to the image) runs in float32. The model must be in eval mode.
    """
    original_sizes = [tuple(image.shape[-2:]) for image in images]
    batch, _ = model.transform(images)
    with backbone_autocast or nullcontext():
        features = model.backbone(batch.tensors)
    with torch.autocast(device_type=batch.tensors.device.type, enabled=False):
        features = {name: feature.float() for name, feature in features.items()}
        proposals, _ = model.rpn(batch, features)
        detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
        return model.transform.postprocess(detections, batch.image_sizes, original_sizes)


@torch.no_grad()
def losses_and_detections(
    model: MaskRCNN,
    images: list[Tensor],
    targets: list[dict[str, Any]],
    detect: bool = True,
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]] | None]:
    """The five training losses and (if ``detect``) the eval-mode detections for one batch.

    Detections are in original image coordinates, exactly what ``model.eval()(images)`` returns.
    No parameter, buffer or mode flag of the model changes.
    """
    with _preserved_modes(model):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, targets = model.transform(images, targets)
        features = model.backbone(image_list.tensors)

        rpn = model.rpn
        feature_maps = list(features.values())
        objectness, deltas = rpn.head(feature_maps)
        anchors = rpn.anchor_generator(image_list, feature_maps)
        anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)

        rpn.training = True  # selects the training pre/post-NMS top-n, as in training
        train_proposals, _ = rpn.filter_proposals(
            proposals, objectness, image_list.image_sizes, anchors_per_level
        )
        labels, matched_boxes = rpn.assign_targets_to_anchors(anchors, targets)
        regression_targets = rpn.box_coder.encode(matched_boxes, anchors)
        loss_objectness, loss_rpn_box_reg = rpn.compute_loss(
            objectness, deltas, labels, regression_targets
        )
        rpn.training = False

        # Only the RoIHeads' own flag (proposal sampling, losses); its submodules stay in eval
        # mode, so BatchNorm in v2's box and mask heads neither uses nor updates batch statistics.
        model.roi_heads.training = True
        _, roi_losses = model.roi_heads(features, train_proposals, image_list.image_sizes, targets)
        model.roi_heads.training = False
        losses = {
            **roi_losses,
            "loss_objectness": loss_objectness,
            "loss_rpn_box_reg": loss_rpn_box_reg,
        }
        if not detect:
            return losses, None

        test_proposals, _ = rpn.filter_proposals(
            proposals, objectness, image_list.image_sizes, anchors_per_level
        )
        # Detections in float32 even under bf16/fp16 autocast: half-precision box decoding
        # loses 2-4 px at a few hundred pixels, which moves AP.
        with torch.autocast(device_type=image_list.tensors.device.type, enabled=False):
            features = {name: feature.float() for name, feature in features.items()}
            test_proposals = [p.float() for p in test_proposals]
            detections, _ = model.roi_heads(features, test_proposals, image_list.image_sizes)
            detections = model.transform.postprocess(
                detections, image_list.image_sizes, original_sizes
            )
        return losses, detections
