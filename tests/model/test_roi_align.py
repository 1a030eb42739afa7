"""mrcnn's CPU RoIAlign computes torchvision's values, forward and backward, on every case the
detector meets (boxes on and beyond the borders, tiny and empty boxes, 1, 2 or adaptive samples,
aligned or not), in float32, float64, bf16 and channels_last, and the detector uses it."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from mrcnn.model import roi_align as module
from mrcnn.model.builder import build_maskrcnn
from mrcnn.model.roi_align import MultiScaleRoIAlign, roi_align, torchvision_poolers


def features_and_rois(dtype: torch.dtype, count: int = 40, scale: float = 0.25):
    """Random maps [2, 16, 23, 31] and RoIs in image pixels (1 / scale): inside, across and
    beyond every border, one far outside, one larger than the image, one under a pixel."""
    generator = torch.Generator().manual_seed(0)
    height, width = 23, 31
    features = torch.randn(2, 16, height, width, generator=generator, dtype=dtype)
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) / scale
    corner = corner * 1.2 - 10
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) / scale * 0.6
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[:3] = torch.tensor(
        [[-50, -50, -20, -30], [0, 0, width / scale + 40, height / scale + 40], [5, 5, 5.2, 5.1]]
    )
    batch = torch.randint(0, 2, (count, 1), generator=generator).float()
    return features, torch.cat([batch, boxes], dim=1).to(dtype)


@pytest.mark.parametrize("pool", ["points", "windows"])
@pytest.mark.parametrize(
    ("sampling_ratio", "aligned", "output_size"),
    [(1, False, 7), (2, True, (14, 5)), (0, False, (14, 5)), (0, True, 7)],
)
def test_forward_and_backward_equal_torchvisions(
    pool, sampling_ratio, aligned, output_size, monkeypatch
):
    # Both ways of pooling, each over chunks of a few RoIs (the gather's memory cap).
    chosen = module._pool_points if pool == "points" else module._pool_windows
    monkeypatch.setattr(module, "_pool_points", chosen)
    monkeypatch.setattr(module, "_pool_windows", chosen)
    monkeypatch.setattr(module, "MAX_GATHERED", 4000)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        features, rois = features_and_rois(dtype)
        expected_input = features.clone().requires_grad_()
        ours_input = features.contiguous(memory_format=torch.channels_last).requires_grad_()
        args = (output_size, 0.25, sampling_ratio, aligned)
        expected = torchvision_roi_align(expected_input, rois, *args)
        ours = roi_align(ours_input, rois, *args)
        # Its own generator: the global stream depends on which tests ran before.
        generator = torch.Generator().manual_seed(1)
        upstream = torch.randn(expected.shape, generator=generator, dtype=dtype)
        (expected * upstream).sum().backward()
        (ours * upstream).sum().backward()
        assert ours.shape == expected.shape
        assert (ours - expected).abs().max() <= tolerance
        # Gradients sum many products (up to ~16 here): float32 rounding grows with them, so
        # within the tolerance of the largest (8.6e-6 apart at most over 30 upstream seeds).
        largest = max(1.0, float(expected_input.grad.abs().max()))
        assert (ours_input.grad - expected_input.grad).abs().max() <= tolerance * largest


def test_no_rois_give_an_empty_result():
    features, rois = features_and_rois(torch.float32)
    assert roi_align(features, rois[:0], 7, 0.25, 2).shape == (0, 16, 7, 7)


def test_bf16_stays_bf16_and_close_to_float32():
    features, rois = features_and_rois(torch.float32)
    expected = torchvision_roi_align(features, rois, 7, 0.25, 2)
    ours = roi_align(features.bfloat16(), rois, 7, 0.25, 2)
    assert ours.dtype == torch.bfloat16  # no cast to float32 and back
    assert (ours.float() - expected).abs().max() <= 0.02 * expected.abs().max()


def test_the_detector_pools_with_it_on_the_cpu_and_exports_torchvisions():
    model = build_maskrcnn(3, "resnet18", load_weights=False, min_size=64, max_size=64)
    pools = [model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool]
    assert all(type(pool) is MultiScaleRoIAlign for pool in pools)
    model.eval()
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        ours = model(image)[0]
        torchvision_poolers(model)
        assert all(type(pool) is TorchvisionMultiScaleRoIAlign for pool in pools)
        theirs = model(image)[0]
    assert torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-4)
    assert torch.allclose(ours["masks"], theirs["masks"], atol=1e-4)
