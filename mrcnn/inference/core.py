"""The one inference path: detections for images, prepared the same way for every caller.

``mrcnn.predict``, ``mrcnn.evaluate`` and the quickstart notebook run models through
:class:`Inference` (validation during training keeps its single losses-and-detections pass,
:func:`mrcnn.model.forward.losses_and_detections`). It wraps a *back end*: anything callable on a
list of float32 [0,1] RGB images [3,H,W] that returns torchvision-style detections per image
(``boxes`` XYXY in the image's pixels, ``labels`` 1..K, ``scores``, ``masks`` [N,1,H,W]
probabilities at the image's size). :class:`TorchBackend` runs a torchvision Mask R-CNN,
:class:`~mrcnn.inference.exported.OnnxBackend` and
:class:`~mrcnn.inference.exported.TorchScriptBackend` a model from ``mrcnn export``; another back
end (:class:`~mrcnn.inference.tiling.TiledBackend`, over large images) plugs in the same way and
gets the same batching, input scaling and postprocessing. Around the back end, once for all of them:

- at most ``batch_size`` images per back-end call;
- uint8 images are scaled to float32 [0,1] exactly as training's transforms scale them;
- detections come back on the CPU in float32 (a bf16 backbone must not cost box pixels), those
  with ``score < score_threshold`` dropped and masks made binary (``p > mask_threshold``, the
  rule of torchvision's reference) before they leave the device: a quarter of the bytes of
  float masks, and drawings and COCO results cannot threshold differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as F

from mrcnn.evaluation.calibration import label_thresholds
from mrcnn.model.forward import detect
from mrcnn.precision import autocast_context

Detections = dict[str, Tensor]
# Float32 [0,1] images [3,H,W] -> torchvision-style detections, one dict per image.
Backend = Callable[[list[Tensor]], list[Detections]]


class TorchBackend:
    """A torchvision Mask R-CNN in eval mode on ``device``, without gradients.

    ``precision`` is what :func:`mrcnn.precision.resolve_precision` returns (``32-true``,
    ``bf16-mixed``, ``16-mixed``): only the backbone runs under autocast, the heads, box decoding
    and mask pasting in float32 (:func:`mrcnn.model.forward.detect`).
    """

    def __init__(
        self, model: nn.Module, device: torch.device | str = "cpu", precision: str = "32-true"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.precision = precision

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        images = [image.to(self.device) for image in images]
        with torch.inference_mode():
            return detect(self.model, images, autocast_context(self.precision, self.device))


@dataclass
class Inference:
    """Runs ``backend`` over images in batches and prepares its detections (see module doc)."""

    backend: Backend
    batch_size: int = 4
    # One number, or one per label 1..K (calibrated thresholds; a label without one keeps 0.5).
    score_threshold: float | dict[int, float] = 0.0
    mask_threshold: float = 0.5

    def __call__(self, images: Sequence[Tensor]) -> list[Detections]:
        """Detections for uint8 or float [0,1] images [3,H,W] of any sizes, one dict per image."""
        detections: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = [as_float_image(image) for image in images[start : start + self.batch_size]]
            outputs = self.backend(batch)
            if len(outputs) != len(batch):
                raise ValueError(
                    f"The back end gave {len(outputs)} results for {len(batch)} images."
                )
            detections += [self.postprocess(output) for output in outputs]
        return detections

    def postprocess(self, output: Detections) -> Detections:
        """One image's detections on the CPU: float32, ``score >= score_threshold``, bool masks."""
        keep = output["scores"].float() >= label_thresholds(
            self.score_threshold, output["labels"]
        ).to(output["scores"].device)
        drop_some = not bool(keep.all())
        prepared = {}
        for key, value in output.items():
            if drop_some:
                value = value[keep]
            if key == "masks":
                value = value.float() > self.mask_threshold
            elif value.is_floating_point():
                value = value.float()
            prepared[key] = value.cpu()
        return prepared


def lowest_threshold(score_threshold: float | dict[int, float]) -> float:
    """The lowest score any class keeps (a safe pre-filter before per-class thresholds)."""
    if isinstance(score_threshold, dict):
        return min(score_threshold.values(), default=0.5)
    return float(score_threshold)


def as_float_image(image: Tensor) -> Tensor:
    """A float32 [0,1] image from uint8 (scaled as training's ``ToDtype(scale=True)``) or float."""
    return F.to_dtype(image.as_subclass(Tensor), torch.float32, scale=True)
