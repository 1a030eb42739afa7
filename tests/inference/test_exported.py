"""The ONNX back ends run several images of a batch at once (``images_in_parallel``) and give
each image the detections it gets alone, in the batch's order (mrcnn/inference/exported.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrcnn.errors import ConfigError
from mrcnn.inference.exported import OnnxBackend, OpenVinoBackend, parallel_streams

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_model(tiny_checkpoint, tmp_path_factory) -> Path:
    from mrcnn.deploy.exporter import export_model

    return export_model(tiny_checkpoint, "onnx", tmp_path_factory.mktemp("onnx") / "m.onnx").output


def images_of_sizes() -> list[torch.Tensor]:
    """Five images of different sizes: a result given to the wrong image has the wrong size."""
    generator = torch.Generator().manual_seed(0)
    sizes = [(96, 128), (128, 80), (112, 112), (64, 128), (128, 100)]
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def assert_same(one_by_one: list[dict], at_once: list[dict]) -> None:
    assert len(at_once) == len(one_by_one)
    for alone, together in zip(one_by_one, at_once, strict=True):
        assert alone.keys() == together.keys()
        for key in alone:
            torch.testing.assert_close(together[key], alone[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", [OnnxBackend, OpenVinoBackend], ids=["onnxruntime", "openvino"])
def test_images_run_in_parallel_get_the_detections_they_get_alone(backend, onnx_model):
    if backend is OpenVinoBackend:
        pytest.importorskip("openvino")
    images = images_of_sizes()
    alone = backend(onnx_model, threads=2, images_in_parallel=1)
    together = backend(onnx_model, threads=2, images_in_parallel=2)
    assert (alone.streams, together.streams) == (1, 2)
    one_by_one = [alone([image])[0] for image in images]
    assert sum(len(d["scores"]) for d in one_by_one) > 0  # there is something to compare
    for result, image in zip(one_by_one, images, strict=True):
        assert result["masks"].shape[-2:] == image.shape[-2:]
    assert_same(one_by_one, together(images))
    assert_same(one_by_one[:1], together(images[:1]))  # a batch of one, too


def test_images_in_parallel_share_the_threads_and_refuse_zero():
    assert parallel_streams(None, 2) == (2, 1)
    assert parallel_streams(2, 1) == (1, 1)  # never more images at once than threads
    assert parallel_streams(1, 4) == (1, 4)
    assert parallel_streams(3, 8) == (3, 2)
    with pytest.raises(ConfigError, match=r"images_in_parallel=0: .* 1 or more"):
        parallel_streams(0, 2)
