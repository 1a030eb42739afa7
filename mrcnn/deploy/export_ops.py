"""Exportable forms of the steps torchvision traces into slow or fragile ONNX graphs: pasting the
masks into the image, merging the FPN levels' RoIAlign results, and batched NMS.

Why: torchvision exports them through code that runs only while exporting. Mask pasting becomes
an ONNX ``Loop`` over the detections that concatenates each pasted mask onto a growing tensor
(``roi_heads._onnx_paste_masks_in_image_loop``), and the level merge a ``ScatterElements``
with an index expanded to detections x channels x 7 x 7 (``poolers._onnx_merge_levels``). In
ONNX Runtime's profile of the R50-FPN model they cost 8 % and 6.5 % of the time.

- :func:`paste_masks` pastes every mask at once. Resizing a mask to its box and placing it in
  the image is separable: the image's rows take bilinear weights over the mask's rows (zero
  outside the box), its columns likewise, so the pasted masks are two batched products
  ``Wy [N,H,M] @ mask [N,M,M] @ Wx [N,M,W]``, what torchvision's ``interpolate`` (bilinear,
  ``align_corners=False``) and slice assignment compute, with the same integer boxes.
- :class:`ExportPooler` pools each level's RoIs as torchvision does, concatenates the results
  and puts them back in the RoIs' order with a ``Gather`` by the inverse permutation (a 1-D
  scatter of N indices instead of N x C x 7 x 7 values).
- :func:`exportable_batched_nms` is torchvision's batched NMS without its branch for no boxes,
  which exports as an ONNX ``If`` whose empty result OpenVINO reads as one element: on an image
  without detections OpenVINO then gathered one box from an empty tensor and returned a
  detection of label 841691604 at score 0.9999 (3 of the default model's 64 validation images,
  measured 2026-12-06, openvino 2026.4.1).

No ``from __future__ import annotations``: TorchScript reads the annotations of the functions it
meets (as unused stubs) as real types.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torchvision.ops.boxes
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.ops import MultiScaleRoIAlign, nms, roi_align

from mrcnn.model.roi_align import pooling_inputs


def _axis_weights(start: Tensor, length: Tensor, size: Tensor, mask_size: int) -> Tensor:
    """[N, size, mask_size]: per detection, each image row's (or column's) bilinear weights over
    the mask's rows, zero outside ``[start, start + length)``. Sampling as ``interpolate``
    resizes ``mask_size`` to ``length``: source ``(i + 0.5) * mask_size / length - 0.5``,
    clamped to the mask, weights from the hat function ``max(0, 1 - |source - row|)``."""
    pixel = torch.arange(size, device=start.device)[None, :] - start[:, None]  # [N, size]
    scale = float(mask_size) / length.to(torch.float32)
    source = ((pixel.to(torch.float32) + 0.5) * scale[:, None] - 0.5).clamp(0, mask_size - 1)
    rows = torch.arange(mask_size, device=start.device).to(torch.float32)
    weights = (1.0 - (source[:, :, None] - rows).abs()).clamp(min=0.0)
    inside = (pixel >= 0) & (pixel < length[:, None])
    return weights * inside[:, :, None].to(torch.float32)


def paste_masks(masks: Tensor, boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """torchvision's ``paste_masks_in_image`` (masks [N,1,M,M] in their boxes [N,4] of an image
    ``height`` x ``width``, 0-dim int64 tensors) as two batched products: [N,1,H,W]."""
    padded, scale = expand_masks(masks, padding=1)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    mask_size = padded.shape[-1]
    x0, y0, x1, y1 = boxes.unbind(1)
    box_w = (x1 - x0 + 1).clamp(min=1)
    box_h = (y1 - y0 + 1).clamp(min=1)
    rows = _axis_weights(y0, box_h, height, mask_size)  # [N, H, M]
    cols = _axis_weights(x0, box_w, width, mask_size)  # [N, W, M]
    pasted = torch.matmul(torch.matmul(rows, padded[:, 0].to(torch.float32)), cols.transpose(1, 2))
    return pasted[:, None]


@torch.jit.unused
def traced_paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """:func:`paste_masks` with the image's size as graph values (each image its own size)."""
    height = torch.scalar_tensor(image_size[0], dtype=torch.int64)
    width = torch.scalar_tensor(image_size[1], dtype=torch.int64)
    return paste_masks(masks, boxes, height, width)


class ExportPooler(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same levels, scales and values) whose levels are
    merged by a gather, not torchvision's export-only scatter (module doc). For ONNX export;
    TorchScript keeps torchvision's class (it compiles no subclass ``forward`` of this kind)."""

    def forward(
        self,
        x: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> Tensor:
        features, rois = pooling_inputs(self, x, boxes, image_shapes)
        size, ratio = self.output_size, self.sampling_ratio
        if len(features) == 1:
            return roi_align(features[0], rois, size, self.scales[0], ratio)
        levels = self.map_levels(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            index = torch.where(levels == level)[0]
            pooled.append(roi_align(feature, rois[index], size, scale, ratio))
            order.append(index)
        order = torch.cat(order)
        # Where each RoI's result lies in the level-ordered results: order's inverse permutation.
        position = torch.ones_like(order).cumsum(0) - 1
        inverse = torch.zeros_like(order).scatter(0, order, position)
        return torch.cat(pooled)[inverse]


def exportable_poolers(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every torchvision ``MultiScaleRoIAlign`` pooling as :class:`ExportPooler`."""
    for module in model.modules():
        if isinstance(module, MultiScaleRoIAlign):
            module.__class__ = ExportPooler
    return model


def exportable_batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float
) -> Tensor:
    """torchvision's ``batched_nms`` as it traces (its coordinate trick: each class's boxes
    moved beyond the others'), with the same offsets and so the same kept boxes, but no branch
    for no boxes: the largest coordinate is taken with a 0 beside it, so no boxes give no kept
    boxes without an ``If`` (module doc). The boxes are clipped to the image before NMS in the
    RPN and the box head, so their largest coordinate is at least 0 and the offsets are
    torchvision's."""
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


@contextmanager
def exportable_nms() -> Iterator[None]:
    """While exporting, torchvision's detection models (which call
    ``torchvision.ops.boxes.batched_nms``) run :func:`exportable_batched_nms`."""
    original = torchvision.ops.boxes.batched_nms
    torchvision.ops.boxes.batched_nms = exportable_batched_nms
    try:
        yield
    finally:
        torchvision.ops.boxes.batched_nms = original
