"""Small images, masks and the colour a blend gives: what the drawing tests compare pixels with."""

import torch

from mrcnn.data import Categories

CATEGORIES = Categories.from_names(["circle", "square", "triangle"])


def square_mask(height: int, width: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def grey(height: int = 64, width: int = 80, value: int = 100) -> torch.Tensor:
    return torch.full((3, height, width), value, dtype=torch.uint8)


def blended(value, colour, alpha: float = 0.45) -> torch.Tensor:
    """The pixel ``draw_segmentation_masks`` gives ``colour`` over ``value`` at ``alpha``."""
    values = value if isinstance(value, torch.Tensor) else torch.full((3,), float(value))
    pairs = zip(values.tolist(), colour, strict=True)
    return torch.tensor([v * (1 - alpha) + c * alpha for v, c in pairs])
