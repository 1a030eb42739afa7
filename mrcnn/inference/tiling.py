"""Sliced inference on images larger than the model's input: :class:`TiledBackend`.

A Mask R-CNN resizes every image to its input size (``GeneralizedRCNNTransform``): a 2000 px
image run whole by a model trained at 128 px shrinks its objects 15 times. Tiling keeps them at
the scale the model learnt: the image is cut into overlapping ``tile_size`` squares, each tile is
predicted, detections are moved to full-image coordinates, and the duplicates the seams create
are merged. :class:`TiledBackend` is a *back end wrapper* (:mod:`mrcnn.inference`): it has the
contract of the back end it wraps (float32 [0,1] images [3,H,W] -> torchvision-style detections,
masks [N,1,H,W] probabilities at the image's size), so batching, thresholds, COCO results and
drawing are those of every other back end. ``python -m mrcnn.predict ... tile_size=512`` wraps
its back end in one.

**Tiles.** Along each side, tiles start every ``tile_size * (1 - overlap)`` pixels and the last
one ends on the image's edge; a side no longer than ``tile_size`` is one tile. An image that fits
in one tile is predicted whole (such images go to the inner back end together, ``batch_size`` at
a time); a larger image's tiles go ``batch_size`` at a time, and each tile's masks are cut down
to its detections' patches at once, so memory holds one batch of tile masks, not all of them.

**Merging.** An object in the overlap of two tiles is detected in both, whole in one and cut by
the tile edge in the other (or cut in both, when it is larger than the overlap). Two detections
are taken for the same object when they come from different tiles, have the same label, and
their binary masks (``> mask_threshold``) agree where both tiles looked: mask IoU *inside the
intersection of the two tiles* >= ``merge_iou``. Inside that shared window both tiles saw the
same pixels, so a cut twin matches its whole twin (IoU near 1) however much of the object lies
outside the window, while two different neighbouring objects do not (IoU near 0); a plain IoU
(or IoU of boxes, as NMS uses) would score a half-object against its whole at 0.5 or less, and
intersection-over-smaller would also join a small object lying on a large one. Groups are built
greedily by score (the highest first, a group holds at most one detection per tile: detections of
one tile are different objects, the model's own NMS already decided that). A group that holds a
detection its tile saw whole (its box keeps clear of the tile's edges inside the image) becomes
that detection, box, mask and score, as the model gives it for an uncut object; the cut twins'
boxes, regressed from a part, would only widen it (measured: tiled box AP 0.073 with the union of
the boxes against 0.082 this way, one by one 0.092, on a briefly trained model). An object cut
in every tile (larger than the overlap) is put back together from its parts: the highest score,
the union of the boxes and the pixel-wise maximum of the mask probabilities. Dropping detections
that touch an inner tile edge (another way, SAHI-style) would lose such objects.

**Why not a library.** sahi 0.12.8 and supervision 0.31.2 (``InferenceSlicer``) install beside
the pinned torch without pulling another one, but neither fits the data flow: both call the
model one slice at a time on numpy images (no batches of tiles), sahi wraps models in its own
``DetectionModel`` classes and pulls opencv-python (the GUI build), shapely, fire and requests,
and supervision pulls PyAV and merges masks as full-image numpy arrays for every detection of
every tile. The few lines here work on torch tensors, batch tiles, and keep only each detection's
mask patch until the merged masks are pasted once (the box pre-filter is
:func:`torchvision.ops.box_iou`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from mrcnn.errors import ConfigError
from mrcnn.inference.core import Backend, Detections

MIN_TILE_SIZE = 32
MAX_OVERLAP = 0.9


def check_tiling(tile_size: int, overlap: float) -> None:
    """Raise :class:`~mrcnn.errors.ConfigError` naming ``tile_size`` or ``tile_overlap``."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < MIN_TILE_SIZE:
        raise ConfigError(
            f"tile_size={tile_size!r}: a tile must be a whole number of at least "
            f"{MIN_TILE_SIZE} pixels (e.g. the image size the model was trained at), or null "
            "to predict images whole."
        )
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, int | float)
        or not (0 <= overlap <= MAX_OVERLAP)
    ):
        raise ConfigError(
            f"tile_overlap={overlap!r}: the overlap is a fraction of the tile between 0 and "
            f"{MAX_OVERLAP} (0.2 = neighbouring tiles share a fifth of their width)."
        )


def tile_starts(length: int, tile_size: int, overlap: float) -> list[int]:
    """Where tiles start along a side of ``length`` pixels; the last one ends on the edge."""
    if length <= tile_size:
        return [0]
    stride = max(1, int(tile_size * (1 - overlap)))
    starts = list(range(0, length - tile_size, stride))
    return [*starts, length - tile_size]


def tile_windows(height: int, width: int, tile_size: int, overlap: float) -> list[tuple[int, ...]]:
    """The tiles of an image as ``(y0, x0, y1, x1)`` pixel windows, row by row."""
    return [
        (y, x, min(y + tile_size, height), min(x + tile_size, width))
        for y in tile_starts(height, tile_size, overlap)
        for x in tile_starts(width, tile_size, overlap)
    ]


def cut_by_tile_edges(
    boxes: Tensor, windows: list[tuple[int, int, int, int]], height: int, width: int, margin: int
) -> list[bool]:
    """Whether each box (full-image XYXY) comes within ``margin`` pixels of an edge of its tile
    ``(y0, x0, y1, x1)`` that lies inside the image: its object may go on beyond the tile."""
    cut = []
    for (bx0, by0, bx1, by1), (y0, x0, y1, x1) in zip(boxes.tolist(), windows, strict=True):
        cut.append(
            (x0 > 0 and bx0 < x0 + margin)
            or (y0 > 0 and by0 < y0 + margin)
            or (x1 < width and bx1 > x1 - margin)
            or (y1 < height and by1 > y1 - margin)
        )
    return cut


@dataclass
class _Patch:
    """One tile detection in full-image coordinates: its mask probabilities inside ``window``."""

    tile: int
    window: tuple[int, int, int, int]  # the tile's (y0, x0, y1, x1)
    origin: tuple[int, int]  # full-image (y, x) of probs[0, 0]
    probs: Tensor  # [h, w] float, the bounding rectangle of the non-zero probabilities
    binary: Tensor  # probs > mask_threshold


def _intersect(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    y0, x0, y1, x1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def _crop(patch: _Patch, region: tuple[int, int, int, int]) -> Tensor:
    """The patch's binary mask over ``region`` (full-image coordinates), zeros outside it."""
    y0, x0, y1, x1 = region
    out = torch.zeros((y1 - y0, x1 - x0), dtype=torch.bool)
    py, px = patch.origin
    ph, pw = patch.binary.shape
    inside = _intersect(region, (py, px, py + ph, px + pw))
    if inside is not None:
        iy0, ix0, iy1, ix1 = inside
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = patch.binary[
            iy0 - py : iy1 - py, ix0 - px : ix1 - px
        ]
    return out


def seam_iou(a: _Patch, b: _Patch) -> float:
    """Mask IoU of two detections inside the window both their tiles saw (0 if none)."""
    shared = _intersect(a.window, b.window)
    if shared is None:
        return 0.0
    mask_a, mask_b = _crop(a, shared), _crop(b, shared)
    union = int((mask_a | mask_b).sum())
    return int((mask_a & mask_b).sum()) / union if union else 0.0


class TiledBackend:
    """Runs ``backend`` on overlapping tiles of each image and merges the seams' duplicates.

    Same contract as any back end (:mod:`mrcnn.inference`); see the module doc for the tiles and
    the merging rule. ``score_threshold`` drops tile detections before merging (the caller drops
    them afterwards anyway; merging fewer is faster); ``mask_threshold`` binarises masks for the
    merging test only: the merged masks stay probabilities.
    """

    def __init__(
        self,
        backend: Backend,
        tile_size: int,
        overlap: float = 0.2,
        batch_size: int = 4,
        merge_iou: float = 0.5,
        mask_threshold: float = 0.5,
        score_threshold: float = 0.0,
    ) -> None:
        check_tiling(tile_size, overlap)
        self.backend = backend
        self.tile_size = int(tile_size)
        self.overlap = float(overlap)
        self.batch_size = max(1, int(batch_size))
        self.merge_iou = float(merge_iou)
        self.mask_threshold = float(mask_threshold)
        self.score_threshold = float(score_threshold)
        # Boxes regress a few pixels short of a tile edge that cuts their object.
        self.margin = max(4, self.tile_size // 32)

    def __getattr__(self, name: str):
        # The wrapped back end's attributes (e.g. ``device``, logged by predict) show through.
        if name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        detections: list[Detections | None] = [None] * len(images)
        whole = [i for i, image in enumerate(images) if len(self.windows(image)) == 1]
        for start in range(0, len(whole), self.batch_size):
            chunk = whole[start : start + self.batch_size]
            for index, output in zip(chunk, self._run([images[i] for i in chunk]), strict=True):
                detections[index] = output
        for index, image in enumerate(images):
            if detections[index] is None:
                detections[index] = self.predict_tiled(image)
        return detections

    def windows(self, image: Tensor) -> list[tuple[int, int, int, int]]:
        """The image's tiles as ``(y0, x0, y1, x1)``; one window = predicted whole."""
        height, width = (int(s) for s in image.shape[-2:])
        return tile_windows(height, width, self.tile_size, self.overlap)

    def _run(self, images: list[Tensor]) -> list[Detections]:
        outputs = self.backend(images)
        if len(outputs) != len(images):
            raise ValueError(f"The back end gave {len(outputs)} results for {len(images)} images.")
        return outputs

    def predict_tiled(self, image: Tensor) -> Detections:
        """One image's detections from its tiles, the seams' duplicates merged.

        Each tile's masks are cut down to their detections' patches as soon as the tile is
        predicted, so memory holds a batch of tiles' masks, not every tile's.
        """
        windows = self.windows(image)
        boxes, labels, scores, patches = [], [], [], []
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            outputs = self._run([image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])
            for tile, (window, output) in enumerate(zip(chunk, outputs, strict=True), start):
                keep = output["scores"].float() >= self.score_threshold
                y0, x0 = window[0], window[1]
                shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
                boxes.append(output["boxes"][keep].detach().float().cpu() + shift)
                labels.append(output["labels"][keep].detach().cpu())
                scores.append(output["scores"][keep].detach().float().cpu())
                for mask in output["masks"][keep].detach().float().cpu()[:, 0]:
                    patches.append(self._patch(tile, window, mask))
        boxes_all, labels_all, scores_all = torch.cat(boxes), torch.cat(labels), torch.cat(scores)
        groups = self._groups(boxes_all, labels_all, scores_all, patches)
        height, width = (int(s) for s in image.shape[-2:])
        cut = cut_by_tile_edges(boxes_all, [p.window for p in patches], height, width, self.margin)
        # A group with a detection its tile saw whole is that detection (the best scored such:
        # box, mask, score); the others are its cut twins. Only an object cut in every tile is
        # put together: the best score, the union of the boxes, the maximum of the masks.
        parts = [[m for m in members if not cut[m]][:1] or members for members in groups]

        masks = torch.zeros((len(parts), 1, height, width), dtype=torch.float32)
        merged_boxes = torch.zeros((len(parts), 4))
        for g, members in enumerate(parts):
            for m in members:
                (py, px), (ph, pw) = patches[m].origin, patches[m].probs.shape
                region = masks[g, 0, py : py + ph, px : px + pw]
                torch.maximum(region, patches[m].probs, out=region)
            merged_boxes[g, :2] = boxes_all[members, :2].amin(dim=0)  # the union of the boxes
            merged_boxes[g, 2:] = boxes_all[members, 2:].amax(dim=0)
        best = torch.tensor([members[0] for members in parts], dtype=torch.long)
        return {
            "boxes": merged_boxes,
            "labels": labels_all[best],
            "scores": scores_all[best],
            "masks": masks,
        }

    def _patch(self, tile: int, window: tuple[int, int, int, int], mask: Tensor) -> _Patch:
        y0, x0 = window[0], window[1]
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        if len(rows) == 0:
            probs = mask[:0, :0]
            return _Patch(tile, window, (y0, x0), probs, probs > self.mask_threshold)
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        probs = mask[r0:r1, c0:c1].clone()
        return _Patch(tile, window, (y0 + r0, x0 + c0), probs, probs > self.mask_threshold)

    def _groups(
        self, boxes: Tensor, labels: Tensor, scores: Tensor, patches: list[_Patch]
    ) -> list[list[int]]:
        """Detection indices per object: greedy by score, one detection per tile at most."""
        order = scores.argsort(descending=True, stable=True).tolist()
        rank = {index: position for position, index in enumerate(order)}
        tiles = torch.tensor([p.tile for p in patches], dtype=torch.long)
        # Candidates: same label, another tile, boxes that touch (grown by a pixel).
        grown = boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0])
        near = box_iou(grown, grown) > 0
        near &= labels[:, None] == labels[None, :]
        near &= tiles[:, None] != tiles[None, :]
        taken = torch.zeros(len(patches), dtype=torch.bool)
        groups = []
        for seed in order:
            if taken[seed]:
                continue
            members, seen_tiles = [seed], {patches[seed].tile}
            taken[seed] = True
            grew = True
            while grew:  # a new member can bring in parts that touch it only
                grew = False
                candidates = (near[members].any(dim=0) & ~taken).nonzero().flatten().tolist()
                for other in sorted(candidates, key=rank.__getitem__):
                    if patches[other].tile in seen_tiles:
                        continue
                    if any(
                        seam_iou(patches[m], patches[other]) >= self.merge_iou
                        for m in members
                        if near[m, other]
                    ):
                        members.append(other)
                        seen_tiles.add(patches[other].tile)
                        taken[other] = True
                        grew = True
            groups.append(sorted(members, key=rank.__getitem__))  # best score first
        return groups
