"""Polygons and masks, both ways: the one place for them.

Polygons become masks for every format that stores them (COCO, YOLO, LabelMe):
:func:`polygons_to_mask`. Coordinates are pixels in COCO's convention (pixel ``(x, y)`` covers
``[x, x+1) x [y, y+1)``), rasterised by pycocotools, so a polygon gives the same mask whichever
file it came from.

Masks become polygons for COCO polygon results (``predict mask_format=polygon``):
:func:`mask_to_polygons` traces the boundary with scikit-image's marching squares
(``find_contours`` at level 0.5 on the zero-padded mask, so the line runs on the pixels' outer
edges, not through the boundary pixels' centres: a contour through the centres, as OpenCV's
``findContours`` gives, loses half a pixel all round, IoU 0.90 on the synthetic shapes against 1.0
here) and simplifies it with Douglas-Peucker (``approximate_polygon``, ``tolerance`` pixels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from skimage.measure import approximate_polygon, find_contours


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


def mask_to_polygons(
    mask: np.ndarray, tolerance: float = 0.5, max_hole_fraction: float = 0.05
) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` for a binary mask [H,W]; ``[]`` if none fit.

    Each part (8-connected) is one polygon, traced on the pixels' outer edges and simplified to
    within ``tolerance`` pixels (0 keeps every contour point). Parts that simplify to fewer than
    3 points or to no area are dropped. COCO polygons cannot cut holes: holes are filled when
    they cover at most ``max_hole_fraction`` of the parts' area (tiny gaps of a predicted mask),
    and otherwise the mask is not polygon-shaped: ``[]``, and the caller keeps it as RLE, as it
    does for a mask with no part left.
    """
    padded = np.pad(np.asarray(mask) != 0, 1).astype(np.uint8)
    # positive_orientation="low": outer boundaries wind positively (shoelace area > 0 in x, y),
    # holes negatively.
    contours = find_contours(padded, 0.5, fully_connected="high", positive_orientation="low")
    polygons, outer, holes = [], 0.0, 0.0
    for contour in contours:
        area = _signed_area(contour)
        if area < 0:
            holes -= area
            continue
        outer += area
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        points = contour[:-1, ::-1] - 0.5  # closed (last = first); (row, col) -> (x, y), unpad
        if len(points) >= 3 and _signed_area(contour) > 0:
            polygons.append([round(float(v), 2) for v in points.reshape(-1)])
    if holes > max_hole_fraction * outer:
        return []
    return polygons


def _signed_area(contour: np.ndarray) -> float:
    """Shoelace area of a closed (row, col) contour: > 0 around a part, < 0 around a hole."""
    y, x = contour[:, 0], contour[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))
