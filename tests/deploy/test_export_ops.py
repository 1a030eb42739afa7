"""The exportable mask pasting, level merge and batched NMS give torchvision's values, in eager
PyTorch and through ONNX Runtime (and OpenVINO) on image sizes and detection counts other than
the traced ones."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision.ops.boxes
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign, batched_nms

from mrcnn.deploy.export_ops import (
    ExportPooler,
    exportable_batched_nms,
    exportable_nms,
    paste_masks,
)


def random_detections(count: int, height: int, width: int, seed: int = 0):
    """Mask probabilities [N,1,28,28] and boxes that start inside the image (the model clips
    its boxes to the image), some reaching past its borders, one thinner than a pixel."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, 1, 28, 28, generator=generator)
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.9
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.8 + 1
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[0] = torch.tensor([5.0, 7.0, 5.5, 7.2])  # thinner than a pixel
    boxes[1] = torch.tensor([0.0, 0.0, width, height])  # the whole image: expanded past it
    return masks, boxes


@pytest.mark.parametrize(("height", "width"), [(97, 131), (64, 64), (300, 41)])
def test_pasted_masks_equal_torchvision(height, width):
    masks, boxes = random_detections(12, height, width)
    expected = paste_masks_in_image(masks, boxes, (height, width))
    pasted = paste_masks(masks, boxes, torch.tensor(height), torch.tensor(width))
    assert pasted.shape == expected.shape == (12, 1, height, width)
    torch.testing.assert_close(pasted, expected, atol=1e-5, rtol=0)


def test_pasting_no_detections_gives_an_empty_stack():
    masks, boxes = torch.zeros(0, 1, 28, 28), torch.zeros(0, 4)
    assert paste_masks(masks, boxes, torch.tensor(50), torch.tensor(60)).shape == (0, 1, 50, 60)


def feature_pyramid(seed: int = 0) -> OrderedDict:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (name, torch.randn(2, 8, 64 // 2**i, 80 // 2**i, generator=generator))
        for i, name in enumerate(["0", "1", "2", "3"])
    )


@pytest.mark.parametrize("count", [0, 1, 40])
def test_export_pooler_equals_torchvision(count):
    features, shapes = feature_pyramid(), [(256, 320), (250, 300)]
    generator = torch.Generator().manual_seed(count)
    boxes = []
    for _ in shapes:  # sizes from 2 to 300 px: every FPN level gets some
        scale = torch.tensor([200.0, 300.0])[:, None, None]
        corner, size = torch.rand(2, count, 2, generator=generator) * scale
        boxes.append(torch.cat([corner, corner + 2 + size], dim=1))
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    expected = pooler(features, boxes, shapes)
    pooler.__class__ = ExportPooler
    torch.testing.assert_close(pooler(features, boxes, shapes), expected, atol=0, rtol=0)


class _Paste(torch.nn.Module):
    def forward(self, image, masks, boxes):
        from mrcnn.deploy.export_ops import traced_paste_masks

        return traced_paste_masks(masks, boxes, (image.shape[-2], image.shape[-1]))


def test_exported_pasting_runs_on_other_sizes_and_counts(tmp_path):
    """Traced on one image size and detection count, the ONNX graph pastes others."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    masks, boxes = random_detections(5, 60, 70)
    path = tmp_path / "paste.onnx"
    torch.onnx.export(
        _Paste(),
        (torch.zeros(3, 60, 70), masks, boxes),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image", "masks", "boxes"],
        output_names=["pasted"],
        dynamic_axes={"image": {1: "h", 2: "w"}, "masks": {0: "n"}, "boxes": {0: "n"}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for count, height, width in [(9, 111, 47), (1, 60, 70), (0, 30, 30)]:
        masks, boxes = random_detections(max(count, 2), height, width, seed=count)
        masks, boxes = masks[:count], boxes[:count]
        feed = {"image": torch.zeros(3, height, width).numpy(), "masks": masks.numpy()}
        (pasted,) = session.run(None, {**feed, "boxes": boxes.numpy()})
        expected = paste_masks_in_image(masks, boxes, (height, width))
        assert pasted.shape == (count, 1, height, width)
        torch.testing.assert_close(torch.from_numpy(pasted), expected, atol=1e-5, rtol=0)


def boxes_in_classes(count: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Overlapping boxes inside a 100 px image (clipped, as the model's are), scores, classes."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 70
    boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 30], dim=1)
    scores = torch.rand(count, generator=generator)
    return boxes, scores, torch.randint(1, 4, (count,), generator=generator)


@pytest.mark.parametrize("count", [0, 1, 40])
def test_exportable_batched_nms_keeps_torchvisions_boxes(count):
    boxes, scores, classes = boxes_in_classes(count)
    kept = exportable_batched_nms(boxes, scores, classes, 0.5)
    assert torch.equal(kept, batched_nms(boxes, scores, classes, 0.5))


class _BatchedNms(torch.nn.Module):
    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor):
        # Called as torchvision's detection models call it (roi_heads, rpn).
        import torchvision.ops.boxes as box_ops

        return box_ops.batched_nms(boxes, scores, classes, 0.5)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_batched_nms_of_no_boxes_keeps_none(runtime, tmp_path):
    """With torchvision's batched NMS, OpenVINO kept one (garbage) index of no boxes: an image
    without detections got one, of label 841691604 (export_ops module doc)."""
    pytest.importorskip("onnx")
    pytest.importorskip(runtime)
    path = tmp_path / "nms.onnx"
    with exportable_nms():
        torch.onnx.export(
            _BatchedNms(),
            boxes_in_classes(6),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["boxes", "scores", "classes"],
            dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "classes": {0: "n"}},
        )
    assert batched_nms is torchvision.ops.boxes.batched_nms  # put back after the export
    for count in (0, 1, 40):
        boxes, scores, classes = boxes_in_classes(count, seed=count)
        feed = [boxes.numpy(), scores.numpy(), classes.numpy()]
        if runtime == "openvino":
            import openvino

            compiled = openvino.Core().compile_model(str(path), "CPU")
            (kept,) = compiled(feed).values()
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            (kept,) = session.run(None, dict(zip(names, feed, strict=True)))
        assert torch.equal(torch.from_numpy(kept), batched_nms(boxes, scores, classes, 0.5))
