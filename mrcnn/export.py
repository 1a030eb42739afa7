"""`mrcnn export model=FILE.ckpt format=onnx output=model.onnx`: a checkpoint as a deployable
model file (ONNX or TorchScript), and its sidecar ``<output>.json`` saying how to use it. With
``quantize=int8``, also ``model.int8.onnx`` and the AP it costs (:mod:`mrcnn.deploy.quantize`).

``predict`` and ``evaluate`` take the file as they take a checkpoint (``model=model.onnx``); see
:mod:`mrcnn.deploy.exporter` for what the exported model takes and returns, and why the
exporter is the TorchScript-based one.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mrcnn.argv import prepare_command_line
from mrcnn.builders import build_datamodule
from mrcnn.config import CONFIG_DIR
from mrcnn.deploy.exporter import export_model
from mrcnn.deploy.quantize import check_quantize, export_int8
from mrcnn.errors import ConfigError
from mrcnn.task import command


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
@command("mrcnn export")
def main(cfg: DictConfig) -> None:
    """``mrcnn export`` (see module doc)."""
    if cfg.get("model_path") is None:
        raise ConfigError(
            "Give the checkpoint to export: model=outputs/DATE/TIME/checkpoints/last.ckpt (the "
            "config key model_path)."
        )
    quantize = cfg.get("quantize")
    check_quantize(quantize, str(cfg.format), int(cfg.calibration_images))
    summary = export_model(
        cfg.model_path, str(cfg.format), cfg.get("output"), int(cfg.opset), cfg.get("example")
    )
    if quantize:
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        export_int8(summary.output, datamodule, int(cfg.calibration_images))


def cli() -> None:
    """``mrcnn export``, ``mrcnn-export`` and ``python -m mrcnn.export``."""
    prepare_command_line("export")
    main()


if __name__ == "__main__":
    cli()
