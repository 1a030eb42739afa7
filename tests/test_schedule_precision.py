import pytest
import torch

from mrcnn.model.schedule import lr_factor, warmup_schedule
from mrcnn.precision import cpu_bf16_speedup, resolve_precision


def test_warmup_then_multistep():
    factors = [
        lr_factor(s, 100, warmup_steps=10, warmup_factor=0.001, milestones=[0.5, 0.8])
        for s in range(100)
    ]
    assert factors[0] == pytest.approx(0.001)
    assert factors[5] == pytest.approx(0.5005)
    assert factors[10:50] == [1.0] * 40
    assert factors[50] == pytest.approx(0.1) and factors[79] == pytest.approx(0.1)
    assert factors[80] == pytest.approx(0.01)


def test_cosine_decays_to_min_factor():
    assert lr_factor(0, 100, decay="cosine", min_factor=0.1) == pytest.approx(1.0)
    assert lr_factor(50, 100, decay="cosine", min_factor=0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, decay="cosine", min_factor=0.1) == pytest.approx(0.1)


def test_linear_decays_to_zero_at_the_last_step_after_a_fractional_warmup():
    factors = [
        lr_factor(s, 100, warmup_steps=0.1, warmup_factor=0.0, decay="linear") for s in range(101)
    ]
    assert factors[0] == 0.0 and factors[5] == pytest.approx(0.5)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert factors[99] == pytest.approx(1 / 90) and factors[100] == 0.0


def test_schedule_drives_the_optimizer_and_rejects_unknown_decay():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = warmup_schedule(optimizer, 10, warmup_steps=2, warmup_factor=0.5, decay="constant")
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.05, 0.075, 0.1])
    with pytest.raises(ValueError, match="Unknown decay"):
        warmup_schedule(optimizer, 10, decay="exponential")


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


def test_this_machines_cpu_answer_decides_cpu_fp16(caplog):
    expected = "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"
    assert resolve_precision(16, "cpu") == expected


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
