"""Evaluation test fixtures: coco128 ground truth and one real, briefly trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.runs import CHECKPOINT_RUN


@pytest.fixture(scope="session")
def coco_gt_path(coco128_dir: Path) -> Path:
    """coco128's ground truth (``coco128_dir``: tests/conftest.py, from MRCNN_DATA_DIR)."""
    return coco128_dir / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="session")
def coco_gt(coco_gt_path) -> dict:
    return json.loads(coco_gt_path.read_text())


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a real 2-step training run on the synthetic set (about 15 s)."""
    from mrcnn.config import compose_config
    from mrcnn.train import train

    run_dir = tmp_path_factory.mktemp("train_run")
    train(compose_config(CHECKPOINT_RUN, output_dir=run_dir))
    path = run_dir / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path
