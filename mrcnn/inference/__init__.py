"""The one inference path (``core``: :class:`Inference` over a back end), the back ends of
exported models (``exported``), sliced inference on large images (``tiling``), and the model a
command runs, from its file (``loading``)."""

from mrcnn.inference.core import Backend, Detections, Inference, TorchBackend, as_float_image
from mrcnn.inference.exported import OnnxBackend, TorchScriptBackend
from mrcnn.inference.tiling import TiledBackend

__all__ = [
    "Backend",
    "Detections",
    "Inference",
    "OnnxBackend",
    "TiledBackend",
    "TorchBackend",
    "TorchScriptBackend",
    "as_float_image",
]
