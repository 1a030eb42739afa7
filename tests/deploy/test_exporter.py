"""Export: a briefly but really trained checkpoint as ONNX and TorchScript, run through ONNX
Runtime / TorchScript behind the same Inference, gives PyTorch's detections and COCO AP; the
export, predict and evaluate commands take the exported model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from mrcnn.config import compose_config
from mrcnn.errors import ConfigError
from tests.tiny import TINY, run_module

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# The validation images of the synthetic set the shared trained model learnt (tests/conftest.py:
# trained_checkpoint; tests/tiny.py: TRAINED_RUN).
DATA = [o for o in TINY if o.startswith("data.")] + ["data.val.num_images=4"]


@pytest.fixture(scope="module")
def trained(trained_checkpoint) -> Path:
    return trained_checkpoint


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict:
    """The checkpoint exported to ONNX and TorchScript (what ``mrcnn.export`` writes)."""
    from mrcnn.deploy.exporter import export_model

    out = tmp_path_factory.mktemp("exported")
    return {
        "onnx": export_model(trained, "onnx", out / "model.onnx"),
        "torchscript": export_model(trained, "torchscript", out / "model.pt"),
    }


@pytest.fixture(scope="module")
def val_images() -> list[torch.Tensor]:
    """The validation images of the data the model was trained on (float [3,H,W], 96-117 px:
    the model resizes them to 128, with scales that are not exact in float32)."""
    from mrcnn.builders import build_datamodule

    datamodule = build_datamodule(compose_config(DATA, config_name="evaluate"))
    datamodule.setup("validate")
    return [datamodule.val_set[i][0] for i in range(len(datamodule.val_set))]


def detections_of(
    model_path: Path, images: list[torch.Tensor], runtime=None, batch_size: int = 1
) -> list[dict]:
    """Through the one inference path; the file's suffix picks the back end (``runtime``: what
    runs an ONNX model). One image per call, as the exported models run (in a batch PyTorch
    pads images to a common size)."""
    from mrcnn.inference.loading import load_inference

    inference, _ = load_inference(
        model_path, "cpu", 32, batch_size, score_threshold=0.0, runtime=runtime
    )
    return inference(images)


def assert_same_detections(reference: dict, candidate: dict) -> int:
    """Every reference detection has a match (same label, best box IoU) within 1 px, 1e-3 in
    score and with mask IoU >= 0.99; returns the number of detections compared."""
    assert len(candidate["scores"]) == len(reference["scores"])
    if not len(reference["scores"]):
        return 0
    overlap = box_iou(reference["boxes"], candidate["boxes"])
    overlap[reference["labels"][:, None] != candidate["labels"][None, :]] = -1
    for i, j in enumerate(overlap.argmax(dim=1).tolist()):
        assert reference["labels"][i] == candidate["labels"][j]
        assert (reference["boxes"][i] - candidate["boxes"][j]).abs().max() <= 1.0
        assert abs(float(reference["scores"][i] - candidate["scores"][j])) <= 1e-3
        a, b = reference["masks"][i], candidate["masks"][j]
        union = int((a | b).sum())
        assert union == 0 or int((a & b).sum()) / union >= 0.99
    return len(reference["scores"])


@pytest.mark.slow
def test_the_sidecar_says_how_to_use_the_model(trained, exported):
    from mrcnn.model.checkpoint import load_module

    categories = load_module(trained).categories.to_dict()
    for fmt, summary in exported.items():
        info = json.loads(summary.sidecar.read_text())
        assert summary.sidecar == summary.output.with_name(summary.output.name + ".json")
        assert info["format"] == fmt and info["categories"] == categories
        assert info["input"]["min_size"] == [128] and info["input"]["max_size"] == 128
        assert info["thresholds"]["box_score_thresh"] == 0.0
        assert info["thresholds"]["box_detections_per_img"] == 20
        assert {"mrcnn", "torch", "torchvision"} <= set(info["versions"])
        assert summary.size_bytes == summary.output.stat().st_size > 0
    assert json.loads(exported["onnx"].sidecar.read_text())["opset"] == 17
    assert json.loads(exported["onnx"].sidecar.read_text())["versions"]["onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_detects_what_pytorch_detects(fmt, trained, exported, val_images):
    reference = detections_of(trained, val_images)
    candidate = detections_of(exported[fmt].output, val_images)
    compared = sum(map(assert_same_detections, reference, candidate))
    assert compared >= len(val_images)  # the trained model detects something on every image


@pytest.mark.slow
def test_openvino_detects_what_pytorch_detects(trained, exported, val_images):
    """On every image size: the graph's resize arithmetic, float64, gives 126x127 for 96x97 and
    125x128 for 96x98 in float32, which OpenVINO runs it in, not eager's 126x128 and 125x127
    (OpenVinoBackend feeds the size instead); a blank image has no detections, where
    torchvision's batched NMS gave OpenVINO a bogus one."""
    pytest.importorskip("openvino")
    images = [*val_images, torch.rand(3, 96, 97), torch.rand(3, 96, 98), torch.zeros(3, 100, 119)]
    reference = detections_of(trained, images)
    candidate = detections_of(exported["onnx"].output, images, "openvino", batch_size=4)
    assert sum(map(assert_same_detections, reference, candidate)) >= len(val_images)
    assert [c["masks"].shape[-2:] for c in candidate] == [i.shape[-2:] for i in images]


@pytest.mark.slow
def test_runtime_auto_picks_a_runtime_that_keeps_parity_and_says_which(
    trained, exported, val_images, caplog
):
    pytest.importorskip("openvino")
    reference = detections_of(trained, val_images)
    # One batch of every image: auto compares the runtimes on its first batch.
    with caplog.at_level("INFO", logger="mrcnn"):
        candidate = detections_of(exported["onnx"].output, val_images, "auto", len(val_images))
    (line,) = [r.getMessage() for r in caplog.records if "runtime=auto" in r.getMessage()]
    assert line.startswith(("runtime=auto: onnxruntime", "runtime=auto: openvino"))
    assert "onnxruntime 0." in line and "openvino " in line  # both timed, s per image
    assert sum(map(assert_same_detections, reference, candidate)) >= len(val_images)


@pytest.mark.slow
def test_exported_model_takes_other_sizes_and_blank_images(trained, exported):
    # 113x106 and 77x129 resized one pixel smaller before EagerSizeTransform.
    images = [torch.rand(3, 96, 160), torch.rand(3, 113, 106), torch.rand(3, 77, 129)]
    images.append(torch.zeros(3, 128, 128))
    reference = detections_of(trained, images)
    for summary in exported.values():
        candidate = detections_of(summary.output, images)
        for ref, cand in zip(reference, candidate, strict=True):
            assert_same_detections(ref, cand)
            assert cand["masks"].shape[-2:] == ref["masks"].shape[-2:]


@pytest.mark.slow
def test_evaluate_scores_the_exported_models_as_the_checkpoint(trained, exported, tmp_path):
    from mrcnn.evaluate import evaluate

    def metrics(source: str) -> dict:
        cfg = compose_config(
            [*DATA, source, f"output={tmp_path / 'metrics.json'}"],
            output_dir=tmp_path,
            config_name="evaluate",
        )
        return evaluate(cfg)

    checkpoint = metrics(f"model_path={trained}")
    scored = {fmt: metrics(f"model_path={s.output}") for fmt, s in exported.items()}
    assert checkpoint["bbox_AP50"] > 0 and checkpoint["segm_AP50"] > 0
    for fmt, exported_metrics in scored.items():
        for key in ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50"):
            assert exported_metrics[key] == pytest.approx(checkpoint[key], abs=0.005), (fmt, key)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["model_path"] == str(exported["torchscript"].output.resolve())


@pytest.mark.slow
def test_evaluate_warns_when_an_exported_model_keeps_fewer_than_max_detections(exported, caplog):
    from mrcnn.inference.loading import keep_detections, load_inference

    for summary in exported.values():  # box_detections_per_img=20, fixed in the graph
        inference, _ = load_inference(summary.output, "cpu", 32, 1)
        caplog.clear()
        keep_detections(inference, 20, summary.output)
        assert not caplog.records
        keep_detections(inference, 300, summary.output)
        assert "keeps at most 20 detections per image" in caplog.text


@pytest.mark.slow
def test_export_and_predict_commands(trained, exported, tmp_path):
    from PIL import Image

    out = tmp_path / "cli"
    run_module(
        "mrcnn.export",
        f"model_path={trained}",
        "format=onnx",
        f"output={out / 'model.onnx'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert (out / "model.onnx").is_file() and (out / "model.onnx.json").is_file()

    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        pixels = (torch.rand(3, 128, 128) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(images / f"{index}.png")
    common = [
        f"input={images}",
        "evaluation.score_threshold=0.0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    written = {}
    for name, *source in (
        ("onnx", f"model={out / 'model.onnx'}"),  # as users type it (the key model_path)
        ("ckpt", f"model_path={trained}"),
        ("auto", f"model={out / 'model.onnx'}", "runtime=auto"),
    ):
        if name == "auto" and importlib.util.find_spec("openvino") is None:
            continue
        done = run_module(
            "mrcnn.predict", *source, *common, f"output={tmp_path / name}", cwd=tmp_path
        )
        assert name != "auto" or "runtime=auto: " in done.stdout + done.stderr
        assert {p.name for p in (tmp_path / name).iterdir()} == {
            "0.png",
            "1.png",
            "predictions.json",
            "images.json",
        }
        written[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert len(written["onnx"]) == len(written["ckpt"]) == len(written.get("auto", written["onnx"]))
    assert written["ckpt"]
    key = lambda r: (r["image_id"], r["category_id"], round(r["score"], 2))  # noqa: E731
    pairs = zip(sorted(written["onnx"], key=key), sorted(written["ckpt"], key=key), strict=True)
    for onnx, ckpt in pairs:
        assert onnx["image_id"] == ckpt["image_id"] and onnx["category_id"] == ckpt["category_id"]
        assert max(abs(a - b) for a, b in zip(onnx["bbox"], ckpt["bbox"], strict=True)) <= 1.0

    run_module(
        "mrcnn.evaluate",
        f"model={out / 'model.onnx'}",
        *DATA,
        f"output={tmp_path / 'metrics.json'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["model_path"] == str((out / "model.onnx").resolve())
    assert written["metrics"]["segm_AP50"] > 0


@pytest.mark.parametrize("command", ["mrcnn.predict", "mrcnn.evaluate"])
def test_model_on_the_command_line_is_an_exported_model(command, tmp_path):
    """``model=model.onnx``, as users type it, means ``model_path=`` (Hydra alone would look
    for a conf/model option and fail with "Could not find 'model/model.onnx'")."""
    from PIL import Image

    from tests.tiny import assert_one_message, run_command

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    where = [f"input={tmp_path}", f"output={tmp_path / 'o'}"] if command == "mrcnn.predict" else []
    done = run_command(command, f"model={tmp_path / 'model.onnx'}", *where, cwd=tmp_path)
    assert_one_message(done, command.replace(".", " "), "model.onnx: no such file")


def test_user_errors_name_the_fix(tmp_path):
    from PIL import Image

    from mrcnn.deploy.exporter import export_model
    from mrcnn.deploy.sidecar import ExportError
    from mrcnn.predict import predict

    with pytest.raises(ConfigError, match=r"format=tflite.*onnx, torchscript"):
        export_model(tmp_path / "any.ckpt", "tflite", tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(tmp_path / "missing.ckpt", "onnx", tmp_path / "m.onnx")

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.new("RGB", (32, 32)).save(image_dir / "a.png")

    def run_predict(*overrides: str):
        cfg = compose_config(
            [f"input={image_dir}", f"output={tmp_path / 'o'}", *overrides], config_name="predict"
        )
        return predict(cfg)

    model = tmp_path / "model.onnx"
    with pytest.raises(FileNotFoundError, match=r"model.onnx: no such file"):
        run_predict(f"model_path={model}")
    model.write_bytes(b"not read before the sidecar")
    with pytest.raises(ExportError, match="no sidecar"):
        run_predict(f"model_path={model}")
    with pytest.raises(ConfigError, match=r"Give the model: model=FILE.ckpt .*model_path"):
        run_predict()
    sidecar = {"format": "onnx", "categories": {"names": ["a"], "dataset_ids": [7]}}
    (tmp_path / "model.onnx.json").write_text(json.dumps(sidecar))
    with pytest.raises(ConfigError, match="precision=bf16"):
        run_predict(f"model_path={model}", "precision=bf16")
    with pytest.raises(ConfigError, match=r"runtime=openvino runs ONNX models.*mrcnn export"):
        run_predict(f"model_path={tmp_path / 'any.ckpt'}", "runtime=openvino")
    with pytest.raises(ConfigError, match=r"runtime=tensorrt is none of onnxruntime, openvino"):
        run_predict(f"model_path={model}", "runtime=tensorrt")
    with pytest.raises(ConfigError, match=r"images_in_parallel=0: .* 1 or more"):
        run_predict(f"model_path={tmp_path / 'any.ckpt'}", "images_in_parallel=0")


def test_export_command_reports_a_bad_format_in_one_line(tmp_path):
    from tests.tiny import assert_one_message, run_command

    done = run_command("mrcnn.export", "model_path=x.ckpt", "format=tflite", cwd=tmp_path)
    assert_one_message(done, "mrcnn export", "format=tflite", "onnx, torchscript")


# Sizes that torchvision's scripted/traced transform resized one pixel smaller than eager
# PyTorch (float32 scale), measured with min_size = max_size = 128, plus exact ones.
ODD_SIZES = [(113, 106), (106, 113), (200, 150), (77, 129), (131, 101), (96, 160), (128, 128)]


def test_exported_transform_resizes_as_eager_pytorch(tmp_path):
    """The exported models' input transform gives every image eager PyTorch's size and pixels,
    scripted and in ONNX Runtime."""
    import onnxruntime
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from mrcnn.deploy.export_transform import EagerSizeTransform

    settings = dict(min_size=128, max_size=128, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    eager = GeneralizedRCNNTransform(**settings).eval()
    exact = EagerSizeTransform(**settings).eval()

    class Resized(torch.nn.Module):
        def __init__(self, transform: torch.nn.Module) -> None:
            super().__init__()
            self.transform = transform

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.transform.resize(image)[0]

    scripted = torch.jit.script(Resized(exact))
    path = tmp_path / "resize.onnx"
    torch.onnx.export(
        Resized(exact),
        (torch.rand(3, 128, 128),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        dynamic_axes={"image": {1: "height", 2: "width"}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in ODD_SIZES:
        image = torch.rand(3, height, width)
        expected = eager.resize(image)[0]
        assert scripted(image).shape == expected.shape, (height, width)
        assert torch.allclose(scripted(image), expected, atol=1e-5)
        from_onnx = torch.from_numpy(session.run(None, {"image": image.numpy()})[0])
        assert from_onnx.shape == expected.shape, (height, width)
        assert torch.allclose(from_onnx, expected, atol=1e-4)
