"""mrcnn.inference: any back end gets the same batching, input scaling and postprocessing."""

import pytest
import torch
from torchvision import tv_tensors

from mrcnn.data.transforms import build_transforms
from mrcnn.inference import Inference


class RecordingBackend:
    """A back end that is not a torch model: records its inputs, answers in bf16 like autocast."""

    def __init__(self) -> None:
        self.calls: list[list[torch.Tensor]] = []

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls.append(images)
        outputs = []
        for image in images:
            height, width = image.shape[-2:]
            masks = torch.zeros(3, 1, height, width)
            masks[:, :, : height // 2] = torch.tensor([0.3, 0.6, 0.9]).reshape(3, 1, 1, 1)
            outputs.append(
                {
                    "boxes": torch.tensor([[1.0, 2.0, 300.0, 400.0]] * 3).bfloat16(),
                    "labels": torch.tensor([1, 2, 3]),
                    "scores": torch.tensor([0.2, 0.5, 0.9]).bfloat16(),
                    "masks": masks.bfloat16(),
                }
            )
        return outputs


def test_any_backend_gets_batches_of_float_images_scaled_as_in_training():
    backend = RecordingBackend()
    images = [torch.randint(0, 256, (3, 20 + i, 30), dtype=torch.uint8) for i in range(5)]
    detections = Inference(backend, batch_size=2)(images)
    assert [len(call) for call in backend.calls] == [2, 2, 1]
    seen = [image for call in backend.calls for image in call]
    transform = build_transforms("none")
    for image, given in zip(images, seen, strict=True):
        assert given.dtype == torch.float32
        # Bit for bit what the validation transforms give: evaluate and predict see the same.
        no_boxes = tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        labels = torch.zeros(0, dtype=torch.int64)
        expected, _ = transform(tv_tensors.Image(image), {"boxes": no_boxes, "labels": labels})
        assert torch.equal(given, expected)
    assert len(detections) == 5


def test_detections_come_back_float32_on_the_cpu_filtered_with_binary_masks():
    inference = Inference(RecordingBackend(), score_threshold=0.5, mask_threshold=0.5)
    (detection,) = inference([torch.rand(3, 8, 6)])
    assert detection["scores"].dtype == detection["boxes"].dtype == torch.float32
    assert detection["scores"].tolist() == [0.5, 0.8984375]  # >= 0.5 kept (bf16 values)
    assert detection["labels"].tolist() == [2, 3]
    assert detection["boxes"][0].tolist() == [1.0, 2.0, 300.0, 400.0]
    masks = detection["masks"]
    assert masks.dtype == torch.bool and masks.shape == (2, 1, 8, 6)
    assert masks[:, 0, :4].all() and not masks[:, 0, 4:].any()  # 0.6 and 0.9 > 0.5
    assert all(value.device.type == "cpu" for value in detection.values())


def test_a_backend_that_loses_images_is_an_error():
    with pytest.raises(ValueError, match="1 results for 2 images"):
        Inference(lambda images: RecordingBackend()(images[:1]))([torch.rand(3, 4, 4)] * 2)
