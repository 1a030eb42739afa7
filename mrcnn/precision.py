"""Choose the numeric precision that makes sense on the device the run will use."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path

import torch
from torch import nn

from mrcnn.errors import ConfigError

log = logging.getLogger(__name__)

_FP16 = {"16", "16-mixed"}
_BF16 = {"bf16", "bf16-mixed"}
_FP32 = {"32", "32-true"}
_UNSUPPORTED = {"16-true", "bf16-true", "64", "64-true", "transformer-engine"}
# `auto` on a CPU with bf16 hardware takes bf16 autocast only when a probe step runs at least
# this much faster: the gain must beat the noise of a one-second measurement.
AUTO_BF16_MIN_SPEEDUP = 1.1


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def x86_cpu_flags(cpuinfo: str) -> set[str] | None:
    """The feature flags of an x86 ``/proc/cpuinfo`` text (None when it has no ``flags`` line,
    as on ARM, whose line is ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    Without it, bf16 autocast is emulated: a ResNet convolution ran about 65x slower than in
    float32 on an AVX2-only AMD EPYC (2 cores), and the default model's training step 0.72x as
    fast as float32 on an AVX512 Ice Lake Xeon without AVX512-BF16, against 1.46x faster on a
    Zen 5 EPYC and 3.17x on an AMX Xeon. oneDNN's own answer
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is yes on any AVX512 CPU, emulation
    included, so on x86 Linux the CPU's flags decide; elsewhere oneDNN's answer is used.
    """
    flags = this_cpu_flags()
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@cache
def this_cpu_flags() -> set[str] | None:
    """This machine's x86 CPU flags, from ``/proc/cpuinfo`` (None: not x86 Linux)."""
    try:
        return x86_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def cuda_has_native_bf16() -> bool:
    """Whether the CUDA GPU in use computes bf16 in hardware: compute capability 8.0 (Ampere)
    and later.

    ``torch.cuda.is_bf16_supported()`` counts emulation and says yes on a V100 or T4 (7.x) as
    well, where bf16 runs emulated and slow; there fp16 with a gradient scaler is the fast
    mixed precision.
    """
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


@cache
def cpu_bf16_speedup(repeats: int = 5) -> float:
    """float32 time / bf16-autocast time of a small convolutional training step on this CPU.

    A ResNet-18-like block at 128 channels on 4 images of 64x64 (the light default model's
    FPN level), forward and backward, best of ``repeats`` each after one warm-up: about a
    second in all. Measured because bf16 hardware alone does not promise a faster step.
    """
    # Its own random numbers: the probe runs once per process (cached) after the run was
    # seeded, and must leave the training's random stream as it found it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = nn.Sequential(
            *[m for _ in range(3) for m in (nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128))]
        )
        images = torch.randn(4, 128, 64, 64)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = block(images).float().square().mean()
        loss.backward()
        return time.perf_counter() - start

    times = {bf16: min(step(bf16) for _ in range(repeats + 1)) for bf16 in (False, True)}
    return times[False] / times[True]


# The probe of a run's own model: at most this many seconds of steps (a float32 step of R50-FPN at
# 800 px takes seconds on a CPU), and at most this many steps of each precision.
STEP_PROBE_BUDGET_S = 15.0
STEP_PROBE_STEPS = 3


def training_step_speedup(model: nn.Module, image_size: int, batch_size: int) -> float:
    """float32 time / bf16-autocast time of a forward and backward pass of ``model`` itself
    (a copy: the model's weights, BatchNorm statistics and gradients stay as they were) on
    ``batch_size`` random images of ``image_size`` px with one object each, the steps of the
    two precisions alternated, the best of up to :data:`STEP_PROBE_STEPS` each after a warm-up.

    What the run will do, unlike a convolution alone: measured on an AMX Xeon, three bf16
    convolutions ran 3.17x as fast as float32 while a whole step gained 1.45x (RoIAlign, NMS,
    losses and copies do not speed up)."""
    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        images = [torch.rand(3, image_size, image_size) for _ in range(batch_size)]
    mask = torch.zeros(1, image_size, image_size, dtype=torch.uint8)
    quarter = image_size // 4
    mask[:, quarter : 3 * quarter, quarter : 3 * quarter] = 1
    box = torch.tensor([[quarter, quarter, 3 * quarter, 3 * quarter]], dtype=torch.float32)
    target = {"boxes": box, "labels": torch.tensor([1]), "masks": mask}

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # RoI sampling must not move the run's stream
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses = probe(images, [dict(target) for _ in images])
            sum(losses.values()).backward()
        probe.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up: first calls allocate and pick kernels
    times: dict[bool, list[float]] = {False: [], True: []}
    spent = 0.0
    while len(times[True]) < STEP_PROBE_STEPS and (spent < STEP_PROBE_BUDGET_S or not times[True]):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
            spent += times[bf16][-1]
    return min(times[False]) / min(times[True])


def resolve_precision(
    precision: str | int,
    accelerator: str = "auto",
    native_bf16: bool | None = None,
    bf16_speedup: float | Callable[[], float] | None = None,
    cuda_bf16: bool | None = None,
) -> str:
    """Lightning's precision string for the requested one on this device, with one log line.

    ``16`` means fp16 AMP with a grad scaler on CUDA. On a CPU fp16 has no fast kernels, so it
    becomes bf16 autocast where the CPU has bf16 hardware, and float32 where it does not (there
    emulated bf16 is many times slower than float32). An explicit ``bf16`` on such a CPU is kept
    with a warning. ``*-true`` half precisions fail inside torchvision (``nms`` has no half
    kernels) and are refused with the alternative. ``native_bf16`` defaults to
    :func:`cpu_has_native_bf16`.

    ``auto`` picks for the machine: on CUDA bf16 autocast where the GPU has bf16 hardware
    (``cuda_bf16``, default :func:`cuda_has_native_bf16`: Ampere and later), else fp16 with a
    scaler; an explicit ``bf16`` on an older GPU is kept with a warning. On a CPU bf16
    autocast only with bf16 hardware and a probe step at least ``AUTO_BF16_MIN_SPEEDUP``
    faster, else float32. ``bf16_speedup`` is that probe's answer, or a function that
    measures it (training gives :func:`training_step_speedup` of its own model); default
    :func:`cpu_bf16_speedup`, a convolution block.
    """
    asked = str(precision)
    cuda = _uses_cuda(str(accelerator))
    device = "CUDA" if cuda else "CPU"
    if cuda and cuda_bf16 is None:
        cuda_bf16 = cuda_has_native_bf16()
    if native_bf16 is None:
        native_bf16 = cuda_bf16 if cuda else cpu_has_native_bf16()
    if asked in _UNSUPPORTED:
        raise ConfigError(
            f"trainer.precision={asked} is not supported: torchvision's detection ops (nms, "
            "roi_align) have no pure half-precision kernels. Use 16 (mixed) or bf16 (mixed)."
        )
    if asked == "auto" and cuda:
        chosen, why = (
            ("bf16-mixed", "the GPU has bf16 hardware")
            if cuda_bf16
            else ("16-mixed", "fp16 with a gradient scaler: no bf16 hardware before Ampere")
        )
    elif asked == "auto" and not native_bf16:
        chosen, why = "32-true", "float32: no bf16 hardware on this CPU (no AVX512-BF16/AMX)"
    elif asked == "auto":
        if bf16_speedup is None:
            speedup, probed = cpu_bf16_speedup(), "a probe convolution block"
        elif callable(bf16_speedup):
            speedup, probed = bf16_speedup(), "a training step of this run's model"
        else:
            speedup, probed = bf16_speedup, "the probe"
        faster = speedup >= AUTO_BF16_MIN_SPEEDUP
        chosen = "bf16-mixed" if faster else "32-true"
        why = (
            f"this CPU has bf16 hardware and {probed} ran {speedup:.2f}x as fast in bf16 as in "
            f"float32 (bf16 is taken from {AUTO_BF16_MIN_SPEEDUP}x)"
        )
    elif asked in _FP32:
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
    elif asked in _BF16 and cuda and not cuda_bf16:
        log.warning(
            "trainer.precision=%s on a GPU without bf16 hardware (compute capability below 8.0, "
            "e.g. V100, T4): bf16 is emulated and slow. Use trainer.precision=16 (fp16 with a "
            "gradient scaler) on this GPU.",
            asked,
        )
        chosen, why = "bf16-mixed", "bf16 autocast, emulated on this GPU"
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
        raise ConfigError(f"Unknown trainer.precision={asked!r}; use auto, 32, 16 or bf16.")
    log.info("Precision: trainer.precision=%s on %s -> %s (%s).", asked, device, chosen, why)
    return chosen


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is the CUDA GPU when there is one, else the CPU; anything else as torch reads
    it. A CUDA device that is not there is named with the way out (the key is ``device``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(
            f"device={device}: {error}. Use auto (a GPU when there is one), cpu or cuda[:N]."
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device}, but torch sees no CUDA GPU here (no GPU, no driver, or a "
            f"CPU-only torch build: torch {torch.__version__}). Use device=cpu, or device=auto "
            "(a GPU when there is one)."
        )
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device}, but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
            "(numbered from 0)."
        )
    return chosen


def autocast_context(chosen: str, device: torch.device) -> AbstractContextManager:
    """Inference autocast for a precision from :func:`resolve_precision` (no-op for 32-true)."""
    if chosen == "32-true":
        return nullcontext()
    dtype = torch.bfloat16 if chosen.startswith("bf16") else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
