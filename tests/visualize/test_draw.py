"""Drawing masks, boxes and labels: what the pixels say, for every input form the model produces."""

import warnings

import pytest
import torch

from mrcnn.data import ShapesDataset
from mrcnn.visualize.draw import (
    binary_masks,
    class_colour,
    draw_instances,
    draw_prediction,
    draw_target,
    font_path,
    panel_grid,
    side_by_side,
)
from tests.visualize.pixels import CATEGORIES, blended, grey, square_mask


def test_mask_interior_is_blended_with_the_class_colour_and_background_untouched():
    image = grey(100, 120)
    mask = square_mask(100, 120, 20, 30, 60)
    box = torch.tensor([[30.0, 20, 90, 80]])
    out = draw_instances(image, box, [2], mask[None], mask_alpha=0.45)
    assert out.dtype == torch.uint8 and out.shape == (3, 100, 120)
    lower_middle = out[:, 65, 60].float()  # below the label, inside the mask
    assert torch.allclose(lower_middle, blended(100, class_colour(2)), atol=1.01), lower_middle
    assert torch.equal(out[:, 95, 5], image[:, 95, 5])  # far from the instance: unchanged
    bottom_edge = out[:, 79, 60]
    assert torch.equal(bottom_edge, torch.tensor(class_colour(2), dtype=torch.uint8))


def test_each_class_keeps_one_colour_across_images_and_classes_differ():
    colours = {}
    for value in (40, 200):
        out = draw_instances(
            grey(value=value),
            torch.tensor([[10.0, 10, 30, 30], [40, 10, 60, 30]]),
            [1, 3],
            torch.stack([square_mask(64, 80, 10, 10, 20), square_mask(64, 80, 10, 40, 20)]),
        )
        colours[value] = (out[:, 29, 20].clone(), out[:, 29, 50].clone())  # bottom box edges
    assert torch.equal(colours[40][0], colours[200][0])
    assert torch.equal(colours[40][1], colours[200][1])
    assert not torch.equal(colours[40][0], colours[40][1])


def test_overlapping_predicted_masks_are_not_painted_black():
    # draw_segmentation_masks blackens pixels where masks of one call overlap.
    masks = torch.stack([square_mask(64, 80, 10, 10, 30), square_mask(64, 80, 20, 20, 30)])
    out = draw_instances(
        grey(),
        torch.tensor([[10.0, 10, 40, 40], [20, 20, 50, 50]]),
        [1, 2],
        masks.float()[:, None],
        scores=torch.tensor([0.9, 0.8]),
    )
    # In both masks (below the labels): the better-scoring class 1 blended over class 2.
    expected = blended(blended(100, class_colour(2)), class_colour(1)).float()
    assert torch.allclose(out[:, 37, 25].float(), expected, atol=2.01), out[:, 37, 25]


def test_score_threshold_hides_weak_detections_and_float_masks_use_strict_threshold():
    probabilities = torch.zeros(2, 1, 64, 80)
    probabilities[0, 0, 10:30, 10:30] = 0.9
    probabilities[0, 0, 12, 12] = 0.5  # exactly at the threshold: not part of the mask (p > t)
    probabilities[1, 0, 40:60, 50:70] = 0.9
    prediction = {
        "boxes": torch.tensor([[10.0, 10, 30, 30], [50, 40, 70, 60]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.3]),
        "masks": probabilities,
    }
    out = draw_prediction(grey(), prediction, CATEGORIES, score_threshold=0.5)
    assert not torch.equal(out[:, 20, 20], grey()[:, 20, 20])
    assert torch.equal(out[:, 50, 60], grey()[:, 50, 60])  # score 0.3 < 0.5: not drawn
    assert binary_masks(probabilities, 0.5)[0, 12, 12].item() is False
    assert binary_masks(probabilities, 0.5)[0, 13, 13].item() is True
    everything = draw_prediction(grey(), prediction, CATEGORIES, score_threshold=0.0)
    assert not torch.equal(everything[:, 50, 60], grey()[:, 50, 60])
    best_only = draw_prediction(
        grey(), prediction, CATEGORIES, score_threshold=0.0, max_instances=1
    )
    assert torch.equal(best_only, out)


def test_zero_instances_give_the_image_back_without_warnings():
    image = torch.rand(3, 40, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = draw_instances(
            image, torch.zeros(0, 4), [], torch.zeros(0, 1, 40, 50), torch.zeros(0)
        )
        assert torch.equal(out, (image * 255).round().to(torch.uint8))
        low = {"boxes": torch.ones(1, 4), "labels": torch.ones(1), "scores": torch.tensor([0.1])}
        assert torch.equal(draw_prediction(image, low), out)


def test_bf16_inputs_draw_like_float32():
    dataset = ShapesDataset(num_images=4, image_size=96, seed=5, empty_fraction=0)
    image, target = dataset[0]
    n = len(target["labels"])
    prediction = {
        "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
        "labels": target["labels"],
        "scores": torch.linspace(0.99, 0.6, n),
        "masks": target["masks"].as_subclass(torch.Tensor).float()[:, None] * 0.875,
    }
    as_bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in prediction.items()}
    reference = draw_prediction(image.float() / 255, prediction, dataset.categories)
    out = draw_prediction((image.float() / 255).bfloat16(), as_bf16, dataset.categories)
    assert out.dtype == torch.uint8
    # bf16 keeps 8 bits of mantissa: a few pixels move by a grey level or a box by a pixel.
    assert (out.int() - reference.int()).abs().gt(3).float().mean() < 0.01


def test_label_is_drawn_above_its_box_readable_and_inside_the_image():
    boxes = torch.tensor([[10.0, 60, 190, 190], [150, 5, 199, 40]])
    out = draw_instances(
        torch.zeros(3, 200, 200, dtype=torch.uint8),
        boxes,
        [1, 2],
        scores=torch.tensor([0.93, 0.8]),
        categories=CATEGORIES,
    )
    colour = torch.tensor(class_colour(1), dtype=torch.uint8)[:, None, None]
    above = out[:, :60, :140]  # above box 1, left of box 2
    label_fill = (above == colour).all(dim=0)
    rows = torch.nonzero(label_fill.any(dim=1)).flatten()
    cols = torch.nonzero(label_fill.any(dim=0)).flatten()
    assert len(rows) > 0, "no label above the box"
    assert rows[-1] == 59 and cols[0] == 10  # sits on the box's top-left corner
    label = above[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    text = (label != colour).any(dim=0)  # white glyphs on the label background
    assert 0.05 < text.float().mean() < 0.6
    assert (out[:, 64:186, 14:186] == 0).all()  # nothing drawn inside the box
    if font_path() is not None:
        assert len(rows) >= 10 and len(cols) >= 50, f"label only {len(cols)}x{len(rows)} px"
    # Box 2 touches the top and right edges: its label moves inside the box and left, whole.
    colour2 = torch.tensor(class_colour(2), dtype=torch.uint8)[:, None, None]
    fill2 = (out[:, 7:38, :] == colour2).all(dim=0)
    cols2 = torch.nonzero(fill2.any(dim=0)).flatten()
    assert cols2[-1] == 199 and cols2[0] < 150  # "square 0.80" does not fit in 50 px


def test_masks_of_another_size_are_refused():
    with pytest.raises(ValueError, match="image is 80x64"):
        draw_instances(grey(), torch.tensor([[0.0, 0, 5, 5]]), [1], torch.ones(1, 32, 32))


def test_side_by_side_and_grid_pad_panels_of_different_sizes():
    left = draw_target(*ShapesDataset(2, 64, seed=0)[0], CATEGORIES)
    right = torch.rand(3, 50, 70)  # float, smaller
    pair = side_by_side(left, right, gap=4)
    height, width = max(left.shape[1], 50), max(left.shape[2], 70)
    assert pair.dtype == torch.uint8 and pair.shape == (3, height, 2 * width + 4)
    assert torch.equal(pair[:, : left.shape[1], : left.shape[2]], left)
    assert (pair[:, :, width : width + 4] == 255).all()  # the gap
    grid = panel_grid([pair, pair, pair], columns=2, gap=6)
    assert grid.shape == (3, 2 * height + 6, 2 * pair.shape[2] + 6)
    assert (grid[:, height + 6 :, pair.shape[2] + 6 :] == 255).all()  # empty fourth cell
