"""``runtime=auto``: the fastest back end whose detections are the reference's, picked on the
run's own first images.

Why on the run's images: which runtime is fastest depends on the CPU (ONNX Runtime has no bf16
path on x86; OpenVINO runs bf16 where the CPU has it), the model and the image size, and a
runtime that converts a model may still change its detections (OpenVINO's Mask R-CNN
conversions have failed before: openvinotoolkit/openvino#13057). So each candidate runs the
first batch twice (the first run warms it up), its detections are compared with the reference
back end's (the first candidate) as the export parity tests compare them, and the fastest that
matches runs the rest; the log says what was measured and picked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from torch import Tensor
from torchvision.ops import box_iou

from mrcnn.inference.core import Backend, Detections

log = logging.getLogger(__name__)

# What "the same detections" means, as tests/deploy/test_exporter.py checks an exported model:
# every detection matched (same label, best box IoU), its box within 1 px, its score within
# 1e-3, its mask (at 0.5) with IoU >= 0.99. Detections scoring within SCORE_MARGIN of the lowest
# kept score may be in one list and not the other: two runtimes round differently there.
BOX_PX = 1.0
SCORE_TOLERANCE = 1e-3
MASK_IOU = 0.99
SCORE_MARGIN = 0.01


def mismatch(reference: Detections, candidate: Detections, min_score: float = 0.0) -> str | None:
    """Why ``candidate``'s detections of one image are not ``reference``'s (None: they are),
    counting detections that score at least ``min_score + SCORE_MARGIN``."""
    keep = min_score + SCORE_MARGIN
    ref = {k: v[reference["scores"] >= keep] for k, v in reference.items()}
    cand = {k: v[candidate["scores"] >= keep - 2 * SCORE_TOLERANCE] for k, v in candidate.items()}
    if not len(ref["scores"]):
        extra = int((cand["scores"] >= keep + SCORE_TOLERANCE).sum())
        return f"{extra} detection(s) the reference does not have" if extra else None
    if not len(cand["scores"]):
        return f"none of the reference's {len(ref['scores'])} detection(s)"
    overlap = box_iou(ref["boxes"], cand["boxes"])
    overlap[ref["labels"][:, None] != cand["labels"][None, :]] = -1
    for i, j in enumerate(overlap.argmax(dim=1).tolist()):
        if ref["labels"][i] != cand["labels"][j]:
            return f"no detection of class {int(ref['labels'][i])} where the reference has one"
        shift = float((ref["boxes"][i] - cand["boxes"][j]).abs().max())
        if shift > BOX_PX:
            return f"a box {shift:.1f} px away from the reference's"
        if abs(float(ref["scores"][i] - cand["scores"][j])) > SCORE_TOLERANCE:
            return f"a score {float(cand['scores'][j]):.4f} for {float(ref['scores'][i]):.4f}"
        a, b = ref["masks"][i] > 0.5, cand["masks"][j] > 0.5
        union = int((a | b).sum())
        if union and int((a & b).sum()) / union < MASK_IOU:
            return f"a mask with IoU {int((a & b).sum()) / union:.3f} to the reference's"
    return None


class AutoBackend:
    """The fastest of ``candidates`` (name -> a function that builds the back end; the first is
    the reference) whose detections of the first batch match the reference's (module doc);
    then only that one runs. ``chosen`` names it after the first call."""

    def __init__(self, candidates: dict[str, Callable[[], Backend]], min_score: float = 0.0):
        self.candidates = candidates
        self.min_score = min_score
        self.chosen: str | None = None
        self.backend: Backend | None = None
        self.device = None

    def __call__(self, images: list[Tensor]) -> list[Detections]:
        if self.backend is None:
            return self.choose(images)
        return self.backend(images)

    def choose(self, images: list[Tensor]) -> list[Detections]:
        """Run every candidate on ``images``, keep the fastest that matches; its detections."""
        timed: dict[str, float] = {}
        reference: list[Detections] | None = None
        kept: dict[str, tuple[Backend, list[Detections]]] = {}
        notes = []
        for name, build in self.candidates.items():
            try:
                backend, detections, timed[name] = _timed_run(build, images)
            except Exception as error:  # a runtime that cannot run this model: say so, go on
                if reference is None:
                    raise
                notes.append(f"{name} failed ({type(error).__name__}: {error})")
                continue
            if reference is None:
                reference = detections
            elif why := self._first_mismatch(reference, detections):
                notes.append(f"{name} left out: its detections differ ({why})")
                continue
            kept[name] = (backend, detections)
        self.chosen = min(kept, key=timed.__getitem__)
        self.backend, detections = kept[self.chosen]
        self.device = getattr(self.backend, "device", None)
        speeds = ", ".join(f"{name} {timed[name] / len(images):.3f}" for name in timed)
        log.info(
            "runtime=auto: %s (s per image on the first %d image(s): %s)%s.",
            self.chosen,
            len(images),
            speeds,
            "; " + "; ".join(notes) if notes else "",
        )
        return detections

    def _first_mismatch(
        self, reference: list[Detections], detections: list[Detections]
    ) -> str | None:
        """The first image whose detections differ from the reference's, and how."""
        for i, (ref, cand) in enumerate(zip(reference, detections, strict=True)):
            if reason := mismatch(ref, cand, self.min_score):
                return f"image {i}: {reason}"
        return None


def _timed_run(
    build: Callable[[], Backend], images: list[Tensor]
) -> tuple[Backend, list[Detections], float]:
    """The back end ``build`` makes, its detections of ``images`` and the seconds they took,
    timed on a second run: the first allocates and picks kernels."""
    backend = build()
    backend(images)
    start = time.perf_counter()
    detections = backend(images)
    return backend, detections, time.perf_counter() - start
