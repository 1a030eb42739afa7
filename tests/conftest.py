"""Shared fixtures: where the real example data sets live (../shared/data or MRCNN_DATA_DIR),
and the two real checkpoints the tests share, each trained once per session.

Each data fixture skips the tests that use it, with the reason, when its data is absent.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_CHECKPOINT_RUN, TRAINED_RUN, TRAINED_THREADS


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The example data folder; tests that need it are skipped (with the reason) when absent."""
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    path = Path(os.environ.get("MRCNN_DATA_DIR", default)).resolve()
    if not path.is_dir():
        pytest.skip(f"example data not found at {path}; set MRCNN_DATA_DIR to the data folder")
    return path


@pytest.fixture(scope="session")
def coco128_dir(data_dir: Path) -> Path:
    """``<data_dir>/coco128``: ``val2017/`` and ``annotations/instances_val2017.json``."""
    path = data_dir / "coco128"
    if not (path / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"coco128 not found under {data_dir} (set MRCNN_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def pennfudan_dir(data_dir: Path) -> Path:
    """``<data_dir>/PennFudanPed``: ``PNGImages/`` and their ``PedMasks/`` (``*_mask.png``)."""
    path = data_dir / "PennFudanPed"
    if not (path / "PNGImages").is_dir() or not (path / "PedMasks").is_dir():
        pytest.skip(f"PennFudanPed not found under {data_dir} (set MRCNN_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def coco_gt_path(coco128_dir: Path) -> Path:
    """coco128's ground truth."""
    return coco128_dir / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="session")
def coco_gt(coco_gt_path) -> dict:
    return json.loads(coco_gt_path.read_text())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a real 2-step training run on the synthetic set (about 15 s): weak but
    real detections, every file a run writes (``tests/tiny.py: TINY_CHECKPOINT_RUN``)."""
    from mrcnn.config import compose_config
    from mrcnn.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(compose_config(TINY_CHECKPOINT_RUN, output_dir=run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a real 600-step training run on the synthetic set
    (``tests/tiny.py: TRAINED_RUN``), trained once per session with the same thread count on
    every machine."""
    from mrcnn.config import compose_config
    from mrcnn.train import train

    run_dir = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINED_THREADS)
    try:
        train(compose_config(TRAINED_RUN, output_dir=run_dir))
    finally:
        torch.set_num_threads(threads)
    return run_dir / "checkpoints" / "last.ckpt"
