"""Sliced inference (mrcnn.tiling.TiledBackend): tiles, seams merged, full-size masks.

The fast tests use a back end that really looks at the pixels of whatever tile it is given:
objects are flat colours on black, and it reports one detection per colour it sees (cut objects
included, as a model sees them at a tile edge). The same back end run on the whole image is the
answer the tiled one must give. The slow test runs a briefly trained model on large images made
of validation images, tiled against one by one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import masks_to_boxes

from mrcnn.config import compose_config
from mrcnn.data import ShapesDataset
from mrcnn.errors import ConfigError
from mrcnn.evaluation.coco import detections_to_coco_results, evaluate_coco, ground_truth_for
from mrcnn.inference import Inference
from mrcnn.predict import predict
from mrcnn.tiling import TiledBackend, tile_starts, tile_windows


class ColourBackend:
    """Detects flat-coloured objects on black: one detection per colour in the image given.

    Red is the label (x 40), green tells objects apart, blue is the score (/ 255). Masks are
    that colour's pixels (probability 1), boxes their pixel-edge bounds.
    """

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls.append([tuple(image.shape[-2:]) for image in images])
        outputs = []
        for image in images:
            pixels = (image * 255).round().long()
            code = pixels[0] * 65536 + pixels[1] * 256 + pixels[2]
            colours = code.unique()
            colours = colours[colours != 0]
            masks = code[None] == colours[:, None, None]
            boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
            outputs.append(
                {
                    "boxes": boxes,
                    "labels": colours // 65536 // 40,
                    "scores": (colours % 256).float() / 255,
                    "masks": masks[:, None].float(),
                }
            )
        return outputs


def paint(image: torch.Tensor, mask: torch.Tensor, label: int, ident: int, score: int) -> None:
    image[:, mask] = torch.tensor([40 * label, ident, score], dtype=torch.float32)[:, None] / 255


def scene(height: int = 200, width: int = 300) -> torch.Tensor:
    """Objects across seams, over several tiles, touching neighbours of one label, a disc."""
    image = torch.zeros(3, height, width)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")

    def rect(y0, x0, y1, x1):
        return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)

    paint(image, rect(10, 40, 30, 60), 1, 1, 250)  # across the first vertical seam (x 48-64)
    paint(image, rect(20, 100, 150, 200), 2, 2, 240)  # larger than a tile: cut in many tiles
    paint(image, rect(160, 50, 190, 58), 1, 3, 230)  # two of one label touching across a seam
    paint(image, rect(160, 58, 190, 66), 1, 4, 220)
    paint(image, ((yy - 50) ** 2 + (xx - 250) ** 2) < 15**2, 3, 5, 210)  # a disc on a corner
    paint(image, rect(180, 280, 200, 300), 2, 6, 200)  # in the last tile only, on the edge
    return image


def by_score(detections: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    order = detections["scores"].argsort(descending=True)
    return {key: value[order] for key, value in detections.items()}


def test_tiles_cover_the_image_and_end_on_its_edges():
    assert tile_starts(300, 64, 0.25) == [0, 48, 96, 144, 192, 236]
    assert tile_starts(64, 64, 0.25) == [0] and tile_starts(20, 64, 0.25) == [0]
    windows = tile_windows(100, 300, 64, 0.25)
    covered = torch.zeros(100, 300, dtype=torch.bool)
    for y0, x0, y1, x1 in windows:
        assert y1 - y0 == 64 and x1 - x0 == 64
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_tiled_detections_equal_the_whole_image_ones():
    image = scene()
    backend = ColourBackend()
    whole = by_score(backend([image])[0])
    tiled_backend = TiledBackend(backend, tile_size=64, overlap=0.25, batch_size=5)
    tiled = by_score(tiled_backend([image])[0])

    assert len(whole["scores"]) == 6
    assert tiled["masks"].shape == (6, 1, 200, 300)  # one per object, at the image's size
    assert torch.equal(tiled["labels"], whole["labels"])
    assert torch.equal(tiled["scores"], whole["scores"])
    assert torch.equal(tiled["masks"] > 0.5, whole["masks"] > 0.5)
    assert torch.equal(tiled["boxes"], whole["boxes"])
    # 4 x 6 tiles of 64 px, at most 5 per call.
    assert [len(call) for call in backend.calls[1:]] == [5, 5, 5, 5, 4]
    assert {shape for call in backend.calls[1:] for shape in call} == {(64, 64)}


def test_small_images_are_predicted_whole_together_and_large_ones_tiled():
    backend = ColourBackend()
    small = scene()[:, :60, :64]
    tiled = TiledBackend(backend, tile_size=64, overlap=0.2, batch_size=4)
    inference = Inference(tiled, batch_size=3)
    detections = inference([small, scene(), small])
    assert backend.calls[0] == [(60, 64), (60, 64)]  # the two small ones, whole, in one call
    assert all(shape == (64, 64) for call in backend.calls[1:] for shape in call)
    for detection, image in zip(detections, [small, scene(), small], strict=True):
        assert detection["masks"].shape[-2:] == image.shape[-2:]
        assert detection["masks"].dtype == torch.bool  # Inference's postprocessing, as ever
    assert len(detections[1]["scores"]) == 6


def test_an_image_without_detections_gives_empty_tensors():
    out = TiledBackend(ColourBackend(), tile_size=32, overlap=0.5)([torch.zeros(3, 70, 90)])[0]
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, 70, 90)
    assert out["labels"].shape == (0,) and out["scores"].shape == (0,)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"tile_size": 16}, "tile_size"),
        ({"tile_size": "big"}, "tile_size"),
        ({"tile_size": 128, "overlap": 0.95}, "tile_overlap"),
        ({"tile_size": 128, "overlap": -0.1}, "tile_overlap"),
        ({"tile_size": 128, "overlap": "x"}, "tile_overlap"),
    ],
)
def test_bad_tiling_values_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key):
        TiledBackend(ColourBackend(), **options)


def test_predict_refuses_bad_tiling_before_loading_a_model(tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    overrides = [f"input={image}", f"output={tmp_path / 'out'}", "ckpt_path=missing.ckpt"]
    for bad, key in (("tile_size=8", "tile_size"), ("tile_overlap=1.5", "tile_overlap")):
        cfg = compose_config([*overrides, "tile_size=64", bad], config_name="predict")
        with pytest.raises(ConfigError, match=key):
            predict(cfg)


# --------------------------------------------------------------------------- a trained model

TRAIN_RUN = [
    "model=light",
    "logger=none",
    "data.num_workers=0",
    "data.train.num_images=400",
    "data.val.num_images=4",
    "data.image_size=128",
    "data.max_image_size=128",
    "data.batch_size=4",
    "trainer.max_steps=200",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "model.detector.box_score_thresh=0.01",
]


def grid_samples(dataset: ShapesDataset, rows: int, cols: int, first: int):
    """A rows x cols grid of 128 px images and its exact target; and the pieces, id'd 1000+."""
    image = torch.zeros(3, 128 * rows, 128 * cols)
    masks, boxes, labels, pieces = [], [], [], []
    for r in range(rows):
        for c in range(cols):
            index = first + r * cols + c
            piece, target = dataset[index]
            piece = piece.as_subclass(torch.Tensor)
            image[:, 128 * r : 128 * (r + 1), 128 * c : 128 * (c + 1)] = piece.float() / 255
            for mask, label in zip(target["masks"], target["labels"], strict=True):
                full = torch.zeros(128 * rows, 128 * cols, dtype=torch.bool)
                full[128 * r : 128 * (r + 1), 128 * c : 128 * (c + 1)] = mask.bool()
                masks.append(full)
                labels.append(int(label))
            pieces.append((piece, {**target, "image_id": 1000 + index}))
    masks = torch.stack(masks)
    boxes = masks_to_boxes(masks)
    target = {"masks": masks, "boxes": boxes, "labels": torch.tensor(labels)}
    return image, target, pieces


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    from mrcnn.train import train

    run = tmp_path_factory.mktemp("tiling_train")
    train(compose_config(TRAIN_RUN, output_dir=run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def tiled_and_alone(trained_checkpoint):
    """4 grids of 3 x 2 validation images (256 x 384 px) predicted tiled (128 px, overlap 0.2),
    and their pieces predicted one by one."""
    from mrcnn.runner import checkpoint_inference

    inference, categories = checkpoint_inference(trained_checkpoint, "cpu", 32, 4, 0.05, 0.5)
    dataset = ShapesDataset(num_images=24, image_size=128, size_jitter=0, seed=1)
    grids, pieces = [], []
    for g in range(4):  # 4 grids of 3 x 2 validation images: 256 x 384 px
        image, target, parts = grid_samples(dataset, 2, 3, 6 * g)
        grids.append((image, {**target, "image_id": g + 1}))
        pieces += parts

    one_by_one = inference([piece for piece, _ in pieces])
    whole_results = detections_to_coco_results(
        one_by_one, [t["image_id"] for _, t in pieces], categories
    )
    whole = evaluate_coco(ground_truth_for(pieces, categories), whole_results)

    inference.backend = TiledBackend(inference.backend, 128, 0.2, 4, score_threshold=0.05)
    tiled_detections = inference([image for image, _ in grids])
    tiled_results = detections_to_coco_results(
        tiled_detections, [t["image_id"] for _, t in grids], categories
    )
    tiled = evaluate_coco(ground_truth_for(grids, categories), tiled_results)
    print(json.dumps({"one_by_one": whole, "tiled": tiled}, indent=1))
    return grids, pieces, one_by_one, tiled_detections, whole, tiled


@pytest.mark.slow
def test_trained_model_tiled_ap_matches_one_by_one(tiled_and_alone):
    grids, _, _, tiled_detections, whole, tiled = tiled_and_alone
    assert whole["segm_AP"] > 0.1, "the trained model should find the shapes"
    assert abs(tiled["segm_AP"] - whole["segm_AP"]) <= 0.02
    assert abs(tiled["bbox_AP"] - whole["bbox_AP"]) <= 0.02
    for (image, _), detection in zip(grids, tiled_detections, strict=True):
        assert detection["masks"].shape[-2:] == image.shape[-2:]


@pytest.mark.slow
def test_trained_model_tiled_finds_no_object_twice_across_a_seam(tiled_and_alone):
    """An object cut by a tile edge is found in both tiles, whole in one and cut in the other:
    merged, it is found once. Counted per object: confident detections lying on it (a cut part
    lies wholly on its object, whatever its box IoU), tiled against the same pieces predicted
    one by one. The model's own near-duplicates (one by one too) are allowed, and one
    detection per object always is: a part cut by a tile edge can score above 0.5 where the
    whole scored just below it.

    Measured with box IoU instead (2026-12-02, a 200-step model=light), 3 of 51 objects had one
    more confident detection tiled than one by one; none was a seam duplicate: two were merged
    twins whose best score crossed 0.5 (0.49 whole, 0.51 cut), one a near-duplicate the model
    made one by one too, whose merged box reached IoU 0.50.
    """
    grids, pieces, one_by_one, tiled_detections, _, _ = tiled_and_alone
    for g, ((image, target), detection) in enumerate(zip(grids, tiled_detections, strict=True)):
        assert detection["masks"].shape[-2:] == image.shape[-2:]
        tiled = detections_on_objects(target, detection)
        parts = zip(pieces[6 * g : 6 * g + 6], one_by_one[6 * g : 6 * g + 6], strict=True)
        alone = torch.cat([detections_on_objects(t, d) for (_, t), d in parts])
        assert (tiled <= alone.clamp(min=1)).all(), (tiled.tolist(), alone.tolist())


def detections_on_objects(target, detection, score: float = 0.5) -> torch.Tensor:
    """Per object: detections with ``score`` or more, of its label, with at least half of their
    mask on it."""
    confident = detection["scores"] >= score
    masks = detection["masks"][confident][:, 0].flatten(1).float()  # [D, H*W]
    objects = torch.as_tensor(target["masks"]).bool().flatten(1).float()  # [O, H*W]
    on_object = (objects @ masks.T) / masks.sum(dim=1).clamp(min=1)  # [O, D]
    same_label = target["labels"][:, None] == detection["labels"][confident][None, :]
    return ((on_object >= 0.5) & same_label).sum(dim=1)
