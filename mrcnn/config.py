"""Compose mrcnn's Hydra config from Python (notebooks, tests, scripts), as the CLI would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# The configs ship inside the package (a wheel holds them: pyproject.toml's package-data), and
# every command's @hydra.main takes this absolute path: Hydra reads a relative config_path as a
# Python package when the command runs as an installed script (mrcnn-train), and a folder beside
# the package is in no wheel ("Primary config directory not found ... site-packages/conf").
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    config_name: str = "train",
) -> DictConfig:
    """The config ``python -m mrcnn.train <overrides>`` would run with.

    Outside a Hydra run there is no run directory, so ``output_dir`` (where logs and
    checkpoints go) must be given when the config will be used to train.
    """
    extra = [f"paths.output_dir={Path(output_dir).resolve()}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=[*overrides, *extra])
