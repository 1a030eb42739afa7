"""Shared fixtures: where the real example data sets live (../shared/data or MRCNN_DATA_DIR)."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The example data folder; tests that need it are skipped (with the reason) when absent."""
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    path = Path(os.environ.get("MRCNN_DATA_DIR", default)).resolve()
    if not path.is_dir():
        pytest.skip(f"example data not found at {path}; set MRCNN_DATA_DIR to the data folder")
    return path
