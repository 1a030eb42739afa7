import pytest
import torch

from mrcnn.model.schedule import lr_factor, warmup_schedule
from mrcnn.precision import resolve_precision


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
        warmup_schedule(optimizer, 10, decay="linear")


@pytest.mark.parametrize(
    ("asked", "accelerator", "chosen"),
    [
        (32, "cpu", "32-true"),
        (16, "cpu", "bf16-mixed"),
        ("16-mixed", "cpu", "bf16-mixed"),
        (16, "gpu", "16-mixed"),
        ("bf16", "cpu", "bf16-mixed"),
        ("bf16-mixed", "cuda", "bf16-mixed"),
    ],
)
def test_precision_is_what_makes_sense_on_the_device(asked, accelerator, chosen, caplog):
    caplog.set_level("INFO")
    assert resolve_precision(asked, accelerator) == chosen
    assert f"-> {chosen}" in caplog.text


@pytest.mark.parametrize("asked", ["16-true", "bf16-true", "8"])
def test_unusable_precision_is_refused(asked):
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(asked, "cpu")
