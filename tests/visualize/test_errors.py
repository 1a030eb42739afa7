"""Evaluation's errors marked on an image, each kind in its own colour, with a legend."""

import pytest
import torch

from tests.visualize.pixels import blended, grey, square_mask


def test_errors_are_marked_in_their_own_colours_with_a_legend():
    from mrcnn.visualize.errors import ERROR_COLOURS, draw_errors

    image = grey(100, 100)
    kinds = ["missed", "false positive", "wrong class", "correct"]
    masks = torch.stack(
        [square_mask(100, 100, 10 + 22 * i, 10 + 22 * i, 12) for i in range(len(kinds))]
    )
    boxes = torch.tensor([[10 + 22 * i, 10 + 22 * i, 22 + 22 * i, 22 + 22 * i] for i in range(4)])
    drawn = draw_errors(image, kinds, boxes, kinds, masks, min_size=200)
    assert drawn.dtype == torch.uint8 and drawn.shape[2] == 200  # enlarged 2x
    assert drawn.shape[1] > 200  # the legend below the image
    # Inside each mask (2x: 20 + 44 * i + 6), errors are filled with their colour, correct is not.
    for i, kind in enumerate(kinds):
        centre = drawn[:, 2 * (16 + 22 * i), 2 * (16 + 22 * i)].float()
        if kind == "correct":
            assert centre.tolist() == [100.0, 100.0, 100.0]
        else:
            expected = blended(100, ERROR_COLOURS[kind], alpha=0.35)
            assert torch.allclose(centre, expected, atol=1.5), kind
    legend = drawn[:, 200:].reshape(3, -1).T
    for colour in ERROR_COLOURS.values():
        assert (legend == torch.tensor(colour, dtype=torch.uint8)).all(dim=1).any()
    with pytest.raises(ValueError, match="Unknown kinds"):
        draw_errors(image, ["lost"], boxes[:1], ["lost"])
