"""Learning-rate schedules (warm-up, then decay) and the rule that scales the learning rate with the
global batch."""

import pytest
import torch

from mrcnn.model.schedule import lr_factor, scaled_lr, warmup_schedule


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


# A constant learning rate: train/lr is then exactly the scaled lr.
CONSTANT_LR = ["scheduler=constant", "scheduler.warmup_steps=0"]


@pytest.mark.parametrize(
    ("batch", "world", "accumulate", "expected"),
    [
        (2, 8, 1, 0.02),  # torchvision's reference: 8 GPUs x 2 images at lr 0.02
        (4, 1, 1, 0.005),  # the default CPU run
        (4, 4 * 2, 1, 0.04),  # trainer.devices=4 trainer.num_nodes=2
        (2, 2, 4, 0.02),  # 2 processes, 4 accumulated batches
    ],
)
def test_lr_grows_linearly_with_the_global_batch(batch, world, accumulate, expected):
    assert scaled_lr(0.02, batch, world, accumulate, 16) == pytest.approx(expected)
