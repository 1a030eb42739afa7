"""notebooks/quickstart.ipynb runs top to bottom, so it cannot rot; it is stored without outputs."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_quickstart_executes_and_shows_metrics_and_pictures(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_QUICKSTART_DIR", str(tmp_path))  # the kernel inherits it
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # this checkout
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error

    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "segm" in text and "bbox" in text and "AP50" in text  # the COCO metrics table
    pictures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(pictures) == 2  # ground truth | prediction grid, and one drawn predict PNG
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "predictions" / "predictions.json").is_file()
    assert len(list((tmp_path / "predictions").glob("shape_*.png"))) == 4
