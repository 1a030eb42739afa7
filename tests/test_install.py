"""The pinned torch/torchvision pair must have working C++ ops on CPU (a broken pair exists)."""

import torch


def test_torchvision_ops_import_and_run_on_cpu():
    from torchvision.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    pooled = roi_align(torch.ones(1, 1, 8, 8), [boxes[:1]], output_size=(2, 2))
    assert pooled.shape == (1, 1, 2, 2)
