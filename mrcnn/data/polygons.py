"""The one way polygons become masks, for every format that stores them (COCO, YOLO, LabelMe).

Coordinates are pixels in COCO's convention (pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``),
rasterised by pycocotools, so a polygon gives the same mask whichever file it came from.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def decode_rle(rle: dict | list[dict]) -> np.ndarray:
    """A uint8 mask [H,W] from a pycocotools RLE."""
    with warnings.catch_warnings():  # pycocotools 2.0.11 on numpy 2: a harmless copy= warning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A uint8 mask [H,W], the union of polygons ``[x1, y1, x2, y2, ...]`` (parts of one instance).

    A part with fewer than 3 points covers no pixel and is left out; with none left the mask is
    empty, and target validation drops and counts the instance.
    """
    parts = [p for p in polygons if len(p) >= 6]
    if not parts:
        return np.zeros((height, width), dtype=np.uint8)
    return decode_rle(mask_utils.merge(mask_utils.frPyObjects(parts, height, width)))
