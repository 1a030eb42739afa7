"""precision=auto and friends: what makes sense on the device, refused combinations, the bf16
probe's manners."""

from pathlib import Path

import pytest
import torch

from mrcnn.precision import (
    cpu_bf16_speedup,
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    resolve_precision,
    x86_cpu_flags,
)


@pytest.mark.parametrize(
    ("asked", "accelerator", "native_bf16", "chosen"),
    [
        (32, "cpu", True, "32-true"),
        (16, "cpu", True, "bf16-mixed"),
        ("16-mixed", "cpu", True, "bf16-mixed"),
        (16, "cpu", False, "32-true"),  # emulated bf16 would be far slower than float32
        ("16-mixed", "cpu", False, "32-true"),
        (16, "gpu", None, "16-mixed"),
        ("bf16", "cpu", True, "bf16-mixed"),
        ("bf16-mixed", "cuda", None, "bf16-mixed"),
    ],
)
def test_precision_is_what_makes_sense_on_the_device(
    asked, accelerator, native_bf16, chosen, caplog
):
    caplog.set_level("INFO")
    assert resolve_precision(asked, accelerator, native_bf16=native_bf16) == chosen
    assert f"-> {chosen}" in caplog.text


def test_explicit_bf16_on_a_cpu_without_bf16_hardware_is_kept_with_a_warning(caplog):
    caplog.set_level("INFO")
    assert resolve_precision("bf16", "cpu", native_bf16=False) == "bf16-mixed"
    warning = next(r for r in caplog.records if r.levelname == "WARNING")
    assert "trainer.precision=32" in warning.getMessage()


@pytest.mark.parametrize(
    ("cuda_bf16", "chosen"),
    [(True, "bf16-mixed"), (False, "16-mixed")],  # A100/H100 (8.x, 9.0); V100/T4 (7.x)
)
def test_auto_on_a_gpu_takes_bf16_only_with_bf16_hardware(cuda_bf16, chosen, caplog):
    caplog.set_level("INFO")
    assert resolve_precision("auto", "gpu", cuda_bf16=cuda_bf16) == chosen
    assert not any(r.levelname == "WARNING" for r in caplog.records)


def test_explicit_bf16_on_a_gpu_without_bf16_hardware_is_kept_with_a_warning(caplog):
    assert resolve_precision("bf16", "gpu", cuda_bf16=False) == "bf16-mixed"
    warning = next(r for r in caplog.records if r.levelname == "WARNING")
    assert "trainer.precision=16" in warning.getMessage()


def test_gpu_bf16_hardware_is_read_from_the_compute_capability_not_emulation():
    # torch.cuda.is_bf16_supported() says True on a V100 (emulated); the capability does not.
    expected = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
    assert cuda_has_native_bf16() == expected


def test_this_machines_cpu_answer_decides_cpu_fp16(caplog):
    expected = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert resolve_precision(16, "cpu") == expected


ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bitalg\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\nbugs\t\t: spectre_v1\n"
ZEN_5 = "flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(ICE_LAKE, False), (SAPPHIRE_RAPIDS, True), (ZEN_5, True)]
)
def test_bf16_hardware_is_read_from_the_cpu_flags_not_onednn(cpuinfo, native):
    # oneDNN says yes on any AVX512 CPU; on an Ice Lake Xeon (AVX512, no AVX512-BF16) the
    # default model's bf16 step ran 0.72x as fast as float32.
    assert bool(x86_cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"}) is native
    assert x86_cpu_flags(ARM) is None  # elsewhere oneDNN's answer is used


def test_this_machines_bf16_answer_matches_its_flags():
    cpuinfo = Path("/proc/cpuinfo")
    flags = x86_cpu_flags(cpuinfo.read_text()) if cpuinfo.exists() else None
    if flags is None:
        pytest.skip("not an x86 Linux machine")
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.parametrize("asked", ["16-true", "bf16-true", "8"])
def test_unusable_precision_is_refused(asked):
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(asked, "cpu")


def test_the_bf16_probe_leaves_the_training_random_stream_alone():
    # precision=auto probes once per process, after the run was seeded: two same-seed runs in
    # one process (a notebook, a sweep) must still draw the same random numbers.
    cpu_bf16_speedup.cache_clear()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    cpu_bf16_speedup()
    assert torch.equal(torch.rand(3), expected)
