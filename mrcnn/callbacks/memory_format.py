"""The memory layout a run's convolutions compute in."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from mrcnn.errors import ConfigError


class ChannelsLast(Callback):
    """Puts the model's 4-D weights in channels-last (NHWC) layout before training starts.

    A convolution with a channels-last weight returns channels-last activations, so the whole
    backbone and FPN then run in NHWC, the layout oneDNN's CPU kernels and tensor cores (mixed
    precision on GPUs from Volta on) prefer. mrcnn's CPU RoIAlign takes NHWC maps as they come;
    torchvision's CUDA ``roi_align`` copies each FPN level back to NCHW, so on a GPU the gain is
    measured, not assumed (``python -m benchmarks.gpu``). Done in ``setup``, before Lightning
    moves the model and wraps it in DDP, so every process and the optimizer see the converted
    weights; checkpoints keep the layout and load into either.

    ``devices``: ``cpu`` converts only when the run trains on the CPU (the default callbacks:
    a training step of the default model took 0.91-0.92x the NCHW step on a Zen 5 EPYC and an Ice
    Lake Xeon, docs/benchmarks.md), ``all`` on any device (the ``channels_last`` preset).
    """

    def __init__(self, devices: str = "all") -> None:
        if devices not in ("cpu", "all"):
            raise ConfigError(f"callbacks.channels_last.devices={devices}: use cpu or all.")
        self.devices = devices

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.devices == "cpu" and trainer.strategy.root_device.type != "cpu":
            return
        pl_module.to(memory_format=torch.channels_last)
