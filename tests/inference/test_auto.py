"""runtime=auto: the fastest back end whose detections match the reference's; a faster one that
changes the detections, or one that fails, is left out and the log says why."""

from __future__ import annotations

import time

import pytest
import torch

from mrcnn.inference.auto import AutoBackend, mismatch


def detections(boxes, scores, labels=None, size=64) -> dict:
    """Detections of one image whose masks fill their boxes."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), 1, size, size)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
        mask[:, y1:y2, x1:x2] = 1.0
    labels = torch.tensor(labels or [1] * len(boxes))
    return {"boxes": boxes, "labels": labels, "scores": torch.tensor(scores), "masks": masks}


REFERENCE = detections([[2, 2, 20, 20], [30, 30, 60, 50]], [0.9, 0.6], [1, 2])


def test_the_same_detections_in_another_order_match():
    swapped = {k: v.flip(0) for k, v in REFERENCE.items()}
    assert mismatch(REFERENCE, swapped) is None


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (detections([[2, 2, 22, 20], [30, 30, 60, 50]], [0.9, 0.6], [1, 2]), "2.0 px away"),
        (detections([[2, 2, 20, 20], [30, 30, 60, 50]], [0.9, 0.5], [1, 2]), "a score 0.5000"),
        (detections([[2, 2, 20, 20], [30, 30, 60, 50]], [0.9, 0.6], [1, 1]), "class 2"),
        (detections([[2, 2, 20, 20]], [0.9], [1]), "class 2"),
    ],
)
def test_a_moved_box_a_changed_score_or_class_or_a_missing_detection_is_named(candidate, reason):
    assert reason in mismatch(REFERENCE, candidate)


def test_detections_at_the_kept_score_may_differ():
    # Two runtimes round a score of 0.3004 differently around a kept score of 0.3.
    extra = detections([[2, 2, 20, 20], [30, 30, 60, 50], [5, 40, 15, 60]], [0.9, 0.6, 0.3004])
    base = detections([[2, 2, 20, 20], [30, 30, 60, 50]], [0.9, 0.6])
    assert mismatch(base, extra, min_score=0.3) is None
    assert "1 detection(s) the reference does not have" in mismatch(
        detections([], []), detections([[5, 40, 15, 60]], [0.8])
    )


class Runtime:
    """A back end with a given speed, whose detections move every box by ``shift`` px."""

    def __init__(self, seconds: float, shift: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.shift, self.fail, self.calls = seconds, shift, fail, 0

    def __call__(self, images):
        if self.fail:
            raise RuntimeError("unsupported operator RoiAlign")
        self.calls += 1
        time.sleep(self.seconds)
        moved = dict(REFERENCE, boxes=REFERENCE["boxes"] + self.shift)
        return [moved for _ in images]


def test_auto_runs_the_fastest_that_keeps_parity_and_logs_why(caplog):
    slow, fast_but_wrong, fast, broken = Runtime(0.05), Runtime(0.0, 3.0), Runtime(0.01), None
    candidates = {
        "reference": lambda: slow,
        "wrong": lambda: fast_but_wrong,
        "broken": lambda: Runtime(0.0, fail=True),
        "fast": lambda: fast,
    }
    auto = AutoBackend(candidates)
    images = [torch.zeros(3, 64, 64)] * 2
    with caplog.at_level("INFO", logger="mrcnn"):
        first = auto(images)
        auto(images)
    assert auto.chosen == "fast" and broken is None
    assert first[0]["boxes"].equal(REFERENCE["boxes"])
    assert fast.calls == 3 and slow.calls == 2  # warm-up and timed run each, then only "fast"
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("runtime=auto: fast (s per image on the first 2 image(s): reference ")
    assert "wrong left out: its detections differ (image 0: a box 3.0 px away" in line
    assert "broken failed (RuntimeError: unsupported operator RoiAlign)" in line


def test_a_reference_that_fails_stops_the_command():
    auto = AutoBackend({"reference": lambda: Runtime(0.0, fail=True), "other": lambda: Runtime(0)})
    with pytest.raises(RuntimeError, match="unsupported operator"):
        auto([torch.zeros(3, 8, 8)])
