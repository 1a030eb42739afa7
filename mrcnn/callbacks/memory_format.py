"""The memory layout a run's convolutions compute in."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class ChannelsLast(Callback):
    """Puts the model's 4-D weights in channels-last (NHWC) layout before training starts.

    A convolution with a channels-last weight returns channels-last activations, so the whole
    backbone and FPN then run in NHWC, the layout tensor cores (mixed precision on GPUs from
    Volta on) and oneDNN's bf16 CPU kernels prefer (PyTorch's channels-last tutorial recommends
    it with mixed precision). torchvision's ``roi_align`` copies its input back to NCHW
    (one copy per FPN level), so for Mask R-CNN the gain is measured, not assumed
    (``python -m benchmarks.gpu``). Done in ``setup``, before Lightning moves the model and
    wraps it in DDP, so every process and the optimizer see the converted weights; checkpoints
    keep the layout and load into either.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
