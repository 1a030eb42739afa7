"""Validation losses and detections from one backbone pass, without touching model state."""

import torch

from mrcnn.data import ShapesDataset
from mrcnn.data.transforms import build_transforms, to_model_input
from mrcnn.model.builder import build_maskrcnn
from mrcnn.model.forward import detect, losses_and_detections


def _batch(n=2):
    dataset, transform = ShapesDataset(n, 96, seed=7), build_transforms("none")
    samples = [to_model_input(*transform(*dataset[i])) for i in range(n)]
    return [s[0] for s in samples], [s[1] for s in samples]


def test_losses_and_detections_leave_every_buffer_and_mode_unchanged():
    torch.manual_seed(0)
    model = build_maskrcnn(num_classes=4, name="resnet50_v2", min_size=96, max_size=96)
    images, targets = _batch()
    model.train()
    with torch.no_grad():  # a couple of train-mode passes give BatchNorm real running statistics
        model(images, targets)
        model(images, targets)
    model.train()
    model.roi_heads.eval()  # an unusual mix of modes must come back exactly as it was
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    losses, detections = losses_and_detections(model, images, targets)

    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    with torch.no_grad():
        expected = model(images)
    assert len(detections) == len(expected)
    for ours, theirs in zip(detections, expected, strict=True):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key])


def test_losses_only_skips_detection():
    model = build_maskrcnn(num_classes=4, min_size=96, max_size=96)
    images, targets = _batch(1)
    losses, detections = losses_and_detections(model, images, targets, detect=False)
    assert detections is None and len(losses) == 5


def test_detect_matches_torchvisions_eval_forward_in_float32():
    torch.manual_seed(0)
    model = build_maskrcnn(num_classes=4, min_size=96, max_size=96, box_score_thresh=0.0).eval()
    images, _ = _batch()
    with torch.no_grad():
        expected = model(images)
    detections = detect(model, images)
    for ours, theirs in zip(detections, expected, strict=True):
        assert len(theirs["scores"]) > 0
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key])
