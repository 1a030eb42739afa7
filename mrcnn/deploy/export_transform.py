"""The input transform of an exported model: torchvision's, resizing every image to the size eager
PyTorch gives it (:class:`EagerSizeTransform`).

No ``from __future__ import annotations`` here: TorchScript compiles this code and reads its
annotations as real types.
"""

import math

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from mrcnn.deploy.export_ops import traced_paste_masks


def eager_resized_size(height: int, width: int, min_size: float, max_size: float) -> list[int]:
    """The ``[height, width]`` eager PyTorch resizes an image to: the short side to
    ``min_size`` unless the long side would pass ``max_size``, floored, in float64."""
    scale = min(min_size / float(min(height, width)), max_size / float(max(height, width)))
    return [math.floor(float(height) * scale), math.floor(float(width) * scale)]


@torch.jit.unused
def _traced_resize_size(image: Tensor, min_size: float, max_size: float) -> list[int]:
    """The resized ``[height, width]`` as graph values (so the ONNX model resizes each image to
    its own size), computed in float64 as eager PyTorch computes it."""
    from torch.onnx import operators

    shape = operators.shape_as_tensor(image)[-2:].to(torch.float64)
    # No Python or 0-dim numbers in this arithmetic: the exporter's type promotion casts them,
    # and the tensors they meet, to float32.
    limits = torch.tensor([min_size, max_size], dtype=torch.float64)
    sides = torch.cat([shape.amin(0, keepdim=True), shape.amax(0, keepdim=True)])
    scale = (limits / sides).amin(0, keepdim=True)
    size = torch.floor(shape * scale).to(torch.int64)
    return [size[0], size[1]]  # tensors: only the tracer sees this


class EagerSizeTransform(GeneralizedRCNNTransform):
    """torchvision's input transform (eval mode), resizing every image to the size eager PyTorch
    gives it, and pasting masks without a loop while exporting to ONNX.

    torchvision computes the resize scale in float64 in eager mode (Python floats) but in
    float32 when scripted or traced (``transform._resize_image_and_masks``), and the traced
    ``interpolate`` floors the output size in float32 too, so an exported model resized some
    images one pixel smaller (a 113x106 image to 127x120, not 128x120) and its detections
    moved: boxes by up to 4.8 px, scores by 0.015 on a briefly trained model. Here the size is
    computed in float64 on every path and handed to ``interpolate`` as a size, which then
    samples as eager's ``recompute_scale_factor=True`` does (scale = input / output size).
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        min_size = float(self.min_size[-1])
        max_size = float(self.max_size)
        if self.fixed_size is not None:
            size = [self.fixed_size[1], self.fixed_size[0]]
        elif torchvision._is_tracing():
            size = _traced_resize_size(image, min_size, max_size)
        else:
            size = eager_resized_size(image.shape[-2], image.shape[-1], min_size, max_size)
        image = nn.functional.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False
        )[0]
        return image, target

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """torchvision's (boxes back to the image's size, masks pasted into it), pasting the
        masks by :func:`~mrcnn.deploy.export_ops.paste_masks` while exporting: one pair of
        products instead of torchvision's export-only loop over the detections."""
        if self.training:
            return result
        # zip without strict=: TorchScript compiles this method and knows no keyword there.
        for i, (pred, im_s, o_im_s) in enumerate(
            zip(result, image_shapes, original_image_sizes)  # noqa: B905
        ):
            boxes = resize_boxes(pred["boxes"], im_s, o_im_s)
            result[i]["boxes"] = boxes
            if "masks" in pred:
                if torchvision._is_tracing():
                    result[i]["masks"] = traced_paste_masks(pred["masks"], boxes, o_im_s)
                else:
                    result[i]["masks"] = paste_masks_in_image(pred["masks"], boxes, o_im_s)
        return result


def with_eager_size_transform(model: nn.Module) -> nn.Module:
    """``model`` (eval mode) with :class:`EagerSizeTransform` in place of its transform."""
    old = model.transform
    model.transform = EagerSizeTransform(
        old.min_size,
        old.max_size,
        old.image_mean,
        old.image_std,
        size_divisible=old.size_divisible,
        fixed_size=old.fixed_size,
    )
    return model.eval()
