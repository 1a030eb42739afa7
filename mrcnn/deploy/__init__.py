"""Deployment: a checkpoint exported as ONNX or TorchScript (``exporter``), the sidecar that says
how to use the file (``sidecar``), and the exported model's input transform
(``export_transform``). The back ends that run exported models live in
:mod:`mrcnn.inference.exported`."""

from mrcnn.deploy.exporter import ExportSummary, export_model
from mrcnn.deploy.sidecar import ExportError, read_sidecar, sidecar_path

__all__ = ["ExportError", "ExportSummary", "export_model", "read_sidecar", "sidecar_path"]
