"""Choose the numeric precision that makes sense on the device the run will use."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

import torch

log = logging.getLogger(__name__)

_FP16 = {"16", "16-mixed"}
_BF16 = {"bf16", "bf16-mixed"}
_FP32 = {"32", "32-true"}
_UNSUPPORTED = {"16-true", "bf16-true", "64", "64-true", "transformer-engine"}


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as oneDNN reports it.

    Without it, bf16 autocast is emulated: a ResNet convolution ran about 65x slower than in
    float32 on an AVX2-only AMD EPYC (2 cores), against 1.7-2.2x faster on CPUs that have it.
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(
    precision: str | int, accelerator: str = "auto", native_bf16: bool | None = None
) -> str:
    """Lightning's precision string for the requested one on this device, with one log line.

    ``16`` means fp16 AMP with a grad scaler on CUDA. On a CPU fp16 has no fast kernels, so it
    becomes bf16 autocast where the CPU has bf16 hardware, and float32 where it does not (there
    emulated bf16 is many times slower than float32). An explicit ``bf16`` on such a CPU is kept
    with a warning. ``*-true`` half precisions fail inside torchvision (``nms`` has no half
    kernels) and are refused with the alternative. ``native_bf16`` defaults to
    :func:`cpu_has_native_bf16`.
    """
    asked = str(precision)
    cuda = _uses_cuda(str(accelerator))
    device = "CUDA" if cuda else "CPU"
    if native_bf16 is None:
        native_bf16 = cuda or cpu_has_native_bf16()
    if asked in _UNSUPPORTED:
        raise ValueError(
            f"trainer.precision={asked} is not supported: torchvision's detection ops (nms, "
            "roi_align) have no pure half-precision kernels. Use 16 (mixed) or bf16 (mixed)."
        )
    if asked in _FP32:
        chosen, why = "32-true", "full float32"
    elif asked in _FP16 and cuda:
        chosen, why = "16-mixed", "fp16 autocast with a gradient scaler"
    elif asked in _FP16 and native_bf16:
        chosen, why = "bf16-mixed", "bf16 autocast instead of fp16 (fp16 has no fast CPU kernels)"
    elif asked in _FP16:
        chosen, why = (
            "32-true",
            "float32: this CPU has neither fast fp16 nor bf16 hardware (no AVX512-BF16/AMX), "
            "and emulated half precision runs many times slower than float32",
        )
    elif asked in _BF16 and not native_bf16:
        log.warning(
            "trainer.precision=%s on a CPU without bf16 hardware (no AVX512-BF16/AMX): bf16 is "
            "emulated and trains many times slower than float32 (a convolution ran ~65x slower "
            "on an AVX2 CPU). Use trainer.precision=32 on this machine.",
            asked,
        )
        chosen, why = "bf16-mixed", "bf16 autocast, emulated on this CPU"
    elif asked in _BF16:
        chosen, why = "bf16-mixed", "bf16 autocast, float32 weights, no gradient scaler needed"
    else:
        raise ValueError(f"Unknown trainer.precision={asked!r}; use 32, 16 or bf16.")
    log.info("Precision: trainer.precision=%s on %s -> %s (%s).", asked, device, chosen, why)
    return chosen


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is the CUDA GPU when there is one, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_context(chosen: str, device: torch.device) -> AbstractContextManager:
    """Inference autocast for a precision from :func:`resolve_precision` (no-op for 32-true)."""
    if chosen == "32-true":
        return nullcontext()
    dtype = torch.bfloat16 if chosen.startswith("bf16") else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
