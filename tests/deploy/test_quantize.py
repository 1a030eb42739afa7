"""``mrcnn export quantize=int8``: an ONNX model with int8 convolutions beside the float32 one,
and the AP it costs, printed and kept in its sidecar (mrcnn/deploy/quantize.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import pytest
import torch

from mrcnn.config import compose_config
from mrcnn.deploy.quantize import (
    AP_KEYS,
    ap_of,
    check_quantize,
    export_int8,
    int8_path,
    needs_reduced_range,
)
from mrcnn.errors import ConfigError
from tests.tiny import TINY_DATA, assert_one_message, run_command, run_module


def dequantized_inputs(model_path: Path) -> tuple[int, int]:
    """How many Conv nodes the graph has, and how many take both their input and their weight
    from a DequantizeLinear node (an int8 convolution in QDQ form)."""
    graph = onnx.load(str(model_path)).graph
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    int8 = [c for c in convs if all(made_by.get(i) == "DequantizeLinear" for i in c.input[:2])]
    return len(convs), len(int8)


def printed_numbers(stdout: str) -> dict[str, tuple[float, float]]:
    """The float32 and int8 columns of the table ``mrcnn export`` prints."""
    rows = (line.split() for line in stdout.splitlines())
    return {row[0]: (float(row[1]), float(row[2])) for row in rows if row and row[0] in AP_KEYS}


def test_export_quantize_int8_writes_int8_convolutions_and_prints_the_ap_they_cost(
    tiny_checkpoint, tmp_path
):
    output = tmp_path / "model.onnx"
    done = run_module(
        "mrcnn.export",
        f"model={tiny_checkpoint}",
        f"output={output}",
        "quantize=int8",
        "calibration_images=4",
        *TINY_DATA,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    int8 = int8_path(output)
    assert int8 == tmp_path / "model.int8.onnx" and output.is_file()
    convs, quantized = dequantized_inputs(int8)
    assert convs > 20 and quantized == convs  # every convolution, backbone to mask head
    assert dequantized_inputs(output)[1] == 0  # the float32 model is left as it was
    assert int8.stat().st_size < 0.5 * output.stat().st_size

    float_info = json.loads(output.with_name("model.onnx.json").read_text())
    info = json.loads(int8.with_name("model.int8.onnx.json").read_text())
    assert info["categories"] == float_info["categories"]
    quantization = info["quantization"]
    assert quantization["ops"] == ["Conv"] and quantization["calibration_images"] == 4
    ap = quantization["ap"]
    assert ap["validation_images"] == 2
    assert printed_numbers(done.stdout) == {
        key: (round(ap["float32"][key], 3), round(ap["int8"][key], 3)) for key in AP_KEYS
    }


def test_weights_use_7_bits_only_on_x86_cpus_without_vnni():
    assert needs_reduced_range("flags\t\t: fpu sse2 avx2 fma\n")  # AVX2 only: can saturate
    assert not needs_reduced_range("flags\t\t: avx2 avx512f avx512_vnni\n")
    assert not needs_reduced_range("flags\t\t: avx2 avx_vnni\n")
    assert not needs_reduced_range("Features\t: fp asimd asimddp\n")  # ARM


def test_export_refuses_an_unknown_quantization_before_reading_the_checkpoint(tmp_path):
    model = f"model={tmp_path / 'gone.ckpt'}"  # the settings are checked before the file
    done = run_command("mrcnn.export", model, "quantize=int4", cwd=tmp_path)
    assert_one_message(done, "mrcnn export", "quantize=int4", "int8")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("int8", "torchscript", 32), "quantize=int8 needs format=onnx"),
        (("int8", "onnx", 0), "calibration_images=0: quantize=int8 reads"),
    ],
)
def test_quantization_settings_that_cannot_work_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        check_quantize(*settings)
    check_quantize(None, *settings[1:])  # without quantize, nothing to check


@pytest.mark.slow
def test_int8_costs_little_ap_on_a_trained_model_scored_as_evaluate_scores_it(
    trained_checkpoint, tmp_path
):
    from mrcnn.builders import build_datamodule
    from mrcnn.deploy.exporter import export_model
    from mrcnn.evaluate import evaluate

    data = [*TINY_DATA, "data.val.num_images=16"]
    datamodule = build_datamodule(compose_config(data, config_name="export"))
    datamodule.setup("fit")
    float32 = export_model(trained_checkpoint, "onnx", tmp_path / "model.onnx").output
    int8 = export_int8(float32, datamodule, calibration_images=32)
    ap = json.loads(Path(f"{int8}.json").read_text())["quantization"]["ap"]
    assert ap["float32"]["segm_AP"] > 0.3  # a model that detects
    for key in AP_KEYS:
        assert abs(ap["int8"][key] - ap["float32"][key]) <= 0.03, (key, ap)
    metrics = evaluate(
        compose_config(
            [*data, f"model_path={int8}", f"output={tmp_path / 'metrics.json'}"],
            config_name="evaluate",
            output_dir=tmp_path,
        )
    )
    assert {key: metrics[key] for key in AP_KEYS} == pytest.approx(ap["int8"], abs=1e-9)


class SlowToRead(torch.utils.data.Dataset):
    """A data set whose every item takes ``delay`` seconds to read, like images on a slow disk."""

    def __init__(self, dataset, delay: float) -> None:
        self.dataset, self.delay = dataset, delay

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        time.sleep(self.delay)
        return self.dataset[index]


def test_the_printed_speed_is_the_models_not_the_reading(tiny_checkpoint, tmp_path):
    from mrcnn.builders import build_datamodule
    from mrcnn.deploy.exporter import export_model
    from mrcnn.evaluation.ground_truth import ground_truth_for

    datamodule = build_datamodule(compose_config(TINY_DATA, config_name="export"))
    datamodule.setup("validate")
    categories = datamodule.categories
    slow = SlowToRead(datamodule.val_set, delay=1.0)
    model = export_model(tiny_checkpoint, "onnx", tmp_path / "model.onnx").output
    start = time.perf_counter()
    scored = ap_of(model, slow, categories, ground_truth_for(datamodule.val_set, categories))
    whole_pass = time.perf_counter() - start
    assert whole_pass > len(slow)  # every image was read, slowly
    assert 0 < scored.seconds < 1.0  # the model's own time, without the reading
