"""A built-in data set of filled shapes, generated on the fly: nothing to download.

Each sample is a pure function of ``(seed, index)``, so runs are reproducible and data loader
workers need no shared state. Images vary in size (so batches are lists, never stacked), shapes
overlap (the one in front hides part of the one behind), and some images hold no object at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mrcnn.data.base import InstanceDataset, RawSample
from mrcnn.data.categories import Categories
from mrcnn.errors import ConfigError

SHAPES = ("circle", "square", "triangle")


class ShapesDataset(InstanceDataset):
    """Circles, squares and triangles in random colours on gradient, noisy backgrounds.

    ``class_weights`` (one per shape) make some shapes rarer than others, e.g. ``[1, 1, 0.1]``:
    triangles about 10x rarer (the class-imbalanced variant of docs/benchmarks.md); None draws
    every shape equally often, the same images as always.
    """

    def __init__(
        self,
        num_images: int = 512,
        image_size: int = 256,
        size_jitter: float = 0.25,
        max_objects: int = 4,
        empty_fraction: float = 0.08,
        object_size: tuple[float, float] = (0.15, 0.4),
        max_occlusion: float = 0.4,
        seed: int = 0,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        if num_images < 1:
            raise ConfigError(f"num_images must be at least 1, got {num_images}.")
        if class_weights is not None and (
            len(class_weights) != len(SHAPES)
            or any(w < 0 for w in class_weights)
            or not sum(class_weights) > 0
        ):
            raise ConfigError(
                f"class_weights={list(class_weights)}: give {len(SHAPES)} weights of 0 or more "
                f"({', '.join(SHAPES)}), not all 0, e.g. [1,1,0.1] for rare triangles; or null."
            )
        self.num_images = num_images
        self.image_size = image_size
        self.size_jitter = size_jitter
        self.max_objects = max_objects
        self.empty_fraction = empty_fraction
        self.object_size = tuple(object_size)
        self.max_occlusion = max_occlusion
        self.seed = seed
        # None: every shape equally likely (drawn as before weights existed: same images).
        self.class_weights = None if class_weights is None else list(map(float, class_weights))
        self.categories = Categories.from_names(SHAPES)

    def __len__(self) -> int:
        return self.num_images

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def image_hw(self, index: int) -> tuple[int, int]:
        """Image height and width without drawing it (for aspect-ratio grouping)."""
        return self._draw_hw(self._rng(index))

    def _draw_hw(self, rng: np.random.Generator) -> tuple[int, int]:
        low = max(1, round(self.image_size * (1 - self.size_jitter)))
        return int(rng.integers(low, self.image_size + 1)), int(
            rng.integers(low, self.image_size + 1)
        )

    def source(self, index: int) -> str:
        return f"synthetic shapes (seed {self.seed}), image {index}"

    def describe(self) -> str:
        weights = (
            ""
            if self.class_weights is None
            else f" (class weights {dict(zip(SHAPES, self.class_weights, strict=True))})"
        )
        return (
            f"synthetic shapes (seed {self.seed}): {self.num_images} images of about "
            f"{self.image_size} px, up to {self.max_objects} of {', '.join(SHAPES)} each{weights}"
        )

    def load_raw(self, index: int) -> RawSample:
        rng = self._rng(index)
        height, width = self._draw_hw(rng)
        image = gradient_background(rng, height, width)
        background_mean = image.reshape(-1, 3).mean(0)

        masks: list[np.ndarray] = []
        labels: list[int] = []
        num_objects = (
            0 if rng.random() < self.empty_fraction else int(rng.integers(1, self.max_objects + 1))
        )
        for _ in range(num_objects):
            for _attempt in range(10):
                label = self._draw_label(rng)
                mask = _draw_shape(rng, SHAPES[label - 1], height, width, self.object_size)
                if mask.sum() == 0:
                    continue
                # Keep every earlier instance mostly visible, so its label stays meaningful.
                if all((m & mask).sum() <= self.max_occlusion * m.sum() for m in masks):
                    break
            else:
                continue
            masks = [m & ~mask for m in masks]
            masks.append(mask)
            labels.append(label)
            image[mask] = _contrasting_colour(rng, background_mean)
        return RawSample(image, masks, labels)

    def _draw_label(self, rng: np.random.Generator) -> int:
        if self.class_weights is None:
            return int(rng.integers(1, len(SHAPES) + 1))
        weights = np.asarray(self.class_weights) / sum(self.class_weights)
        return int(rng.choice(len(SHAPES), p=weights)) + 1


def gradient_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear gradient between two random colours, plus pixel noise."""
    start, end = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image = start + ramp[..., None] * (end - start)
    image += rng.normal(0, rng.uniform(2, 12), size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background).sum() > 150:
            break
    return colour.astype(np.uint8)


def _draw_shape(
    rng: np.random.Generator, shape: str, height: int, width: int, size_range: tuple[float, float]
) -> np.ndarray:
    """A boolean mask [H,W] of one shape at a random place, size and rotation."""
    radius = rng.uniform(*size_range) * min(height, width) / 2
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    else:
        corners = 4 if shape == "square" else 3
        rotation = rng.uniform(0, 2 * math.pi)
        points = [
            (
                cx + radius * math.cos(rotation + 2 * math.pi * k / corners),
                cy + radius * math.sin(rotation + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=1)
    return np.array(canvas, dtype=bool)
