"""Test-time augmentation: the identity view gives the model's own detections, a mirrored view
is mirrored back, views of one object merge, and what cannot run says so."""

import pytest
import torch

from mrcnn.errors import ConfigError
from mrcnn.inference import Inference, TorchBackend
from mrcnn.inference.tta import TTABackend, flip_detections, merge_views, parse_views
from mrcnn.model.builder import build_maskrcnn


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    """A real (untrained) light Mask R-CNN that keeps every detection: 100 of them per image,
    with masks, to compare."""
    torch.manual_seed(0)
    model = build_maskrcnn(
        name="resnet18",
        num_classes=4,
        weights=None,
        weights_backbone=None,
        load_weights=False,
        min_size=64,
        max_size=64,
        box_score_thresh=0.0,
        returned_layers=[1, 2, 3],
        head_channels=32,
        box_head_size=64,
    )
    return TorchBackend(model)


def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 60, 80, generator=generator), torch.rand(3, 70, 50, generator=generator)]


def test_tta_of_the_identity_view_returns_the_models_own_detections(backend):
    own = backend(images())
    augmented = TTABackend(backend, ["identity"])(images())
    assert sum(len(d["scores"]) for d in own) > 50  # something to compare
    for mine, theirs in zip(augmented, own, strict=True):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(mine[key], theirs[key]), key
    # Behind Inference (thresholds, binary masks) too.
    plain = Inference(backend, score_threshold=0.05)(images())
    viewed = Inference(TTABackend(backend, parse_views(["identity"])), score_threshold=0.05)
    for mine, theirs in zip(viewed(images()), plain, strict=True):
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_mirrored_view_is_mirrored_back(backend):
    image = images()[0]
    mirrored = backend([image.flip(-1)])[0]
    back = flip_detections(mirrored, width=80)
    assert torch.equal(back["masks"], mirrored["masks"].flip(-1))
    assert torch.allclose(back["boxes"][:, 0], 80 - mirrored["boxes"][:, 2])
    assert torch.allclose(back["boxes"][:, 2], 80 - mirrored["boxes"][:, 0])
    assert (back["boxes"][:, 2] >= back["boxes"][:, 0]).all()
    # TTA of the hflip view alone: the mirrored image's detections, mirrored back.
    (alone,) = TTABackend(backend, ["hflip"])([image])
    assert torch.equal(alone["boxes"], back["boxes"])


def detection(box, label, score, mask_value, size=(20, 20)):
    masks = torch.full((1, 1, *size), float(mask_value))
    return {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([label]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def concat(*parts):
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def test_views_of_one_object_merge_and_an_object_of_one_view_keeps_its_share():
    view_a = concat(
        detection([0, 0, 10, 10], 1, 0.8, 0.9), detection([12, 12, 18, 18], 2, 0.6, 0.7)
    )
    view_b = detection([1, 1, 11, 11], 1, 0.4, 0.5)
    merged = merge_views([view_a, view_b], "mean", iou=0.55)
    assert merged["labels"].tolist() == [1, 2]
    assert merged["scores"].tolist() == pytest.approx([(0.8 + 0.4) / 2, 0.6 / 2])
    assert merged["boxes"][0].tolist() == pytest.approx([0.5, 0.5, 10.5, 10.5])  # the mean
    assert merged["masks"][0].unique().tolist() == pytest.approx([0.7])  # probabilities averaged
    assert merged["boxes"][1].tolist() == [12, 12, 18, 18]  # alone: unchanged
    wbf = merge_views([view_a, view_b], "wbf", iou=0.55)
    weights = torch.tensor([0.8, 0.4]) / 1.2
    assert wbf["boxes"][0].tolist() == pytest.approx(
        (weights[0] * 0 + weights[1] * 1).repeat(2).tolist()
        + (weights[0] * 10 + weights[1] * 11).repeat(2).tolist()
    )
    # Another class, or too little overlap: not the same object.
    other = merge_views([view_a, detection([0, 0, 10, 10], 2, 0.5, 0.5)], "mean")
    assert len(other["scores"]) == 3


def test_bad_views_and_scales_on_an_exported_model_are_refused():
    assert parse_views(False) == [] and parse_views(None) == []
    assert parse_views(True) == ["identity", "hflip"]
    assert parse_views(["identity", "hflip", 0.8, 1.2]) == ["identity", "hflip", 0.8, 1.2]
    for bad in (["vflip"], [0.01], ["hflip", "hflip"]):
        with pytest.raises(ConfigError, match="tta"):
            parse_views(bad)

    def exported(images):  # a back end without a torchvision model: its input size is fixed
        return [detection([0, 0, 1, 1], 1, 0.5, 0.5) for _ in images]

    with pytest.raises(ConfigError, match="input size is fixed"):
        TTABackend(exported, ["identity", 1.2])
    assert len(TTABackend(exported, ["identity", "hflip"])([torch.rand(3, 20, 20)])) == 1
    with pytest.raises(ConfigError, match="tta_merge"):
        TTABackend(exported, ["hflip"], merge="max")


def test_a_scale_view_changes_the_models_input_size_and_restores_it(backend):
    transform = backend.model.transform
    seen = []
    original = transform.resize

    def recording(image, target=None):
        seen.append(tuple(transform.min_size))
        return original(image, target)

    transform.resize = recording
    try:
        TTABackend(backend, ["identity", 1.5])([images()[0]])
    finally:
        del transform.resize
    assert seen == [(64,), (96,)]
    assert transform.min_size == (64,) and transform.max_size == 64


@pytest.mark.slow  # three evaluations of the tiny checkpoint
def test_evaluate_with_tta_from_the_command_line(tiny_checkpoint, tmp_path):
    """``mrcnn evaluate tta=...``: the identity view scores exactly as no TTA; ``tta=true`` runs
    and says so in the metrics json; store_calibration=false leaves the model file alone."""
    import json

    from mrcnn.config import compose_config
    from mrcnn.evaluate import evaluate
    from mrcnn.evaluation.calibration import CHECKPOINT_KEY
    from tests.tiny import TINY_EVAL_DATA

    def run(name: str, *overrides: str) -> dict:
        output = tmp_path / f"{name}.json"
        cfg = compose_config(
            [
                f"model_path={tiny_checkpoint}",
                f"output={output}",
                "store_calibration=false",
                *TINY_EVAL_DATA,
                *overrides,
            ],
            config_name="evaluate",
        )
        evaluate(cfg)
        return json.loads(output.read_text())

    before = tiny_checkpoint.read_bytes()
    plain, identity = run("plain"), run("identity", "tta=[identity]")
    assert identity["metrics"] == plain["metrics"]
    flipped = run("flipped", "tta=true", "tta_merge=wbf")
    assert flipped["calibration"]["tta"] == ["identity", "hflip"]
    assert 0 <= flipped["metrics"]["segm_AP"] <= 1
    assert flipped["num_detections"] > 0
    assert tiny_checkpoint.read_bytes() == before
    assert CHECKPOINT_KEY not in torch.load(tiny_checkpoint, weights_only=True)
