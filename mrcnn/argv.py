"""The command line before Hydra reads it: ``model=FILE``, old spellings, and the extras a
command line needs.

- ``model=FILE`` in ``evaluate``, ``predict`` and ``export`` names a model file (the key
  ``model_path``): Hydra alone reads ``model=`` as a pick from the ``model`` config group, which
  these commands do not compose, and fails with "Could not find 'model/model.onnx'".
- Settings renamed so that every command spells them the same way (``evaluation.*``, and the
  model file as ``model=``) are read under their new names, with one line saying so.
- ``hparams_search=optuna`` and the submitit launchers need the ``sweeps`` extra: without it one
  message says how to install it, instead of Hydra's "Could not find 'hydra/sweeper/...'".
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from mrcnn.errors import EXIT_USER_ERROR

# Old key -> the key every command now shares, per command.
RENAMED = {
    "train": {
        "evaluation.panel_score_threshold": "evaluation.score_threshold",
        "evaluation.confusion_score_threshold": "evaluation.score_threshold",
    },
    "evaluate": {
        "ckpt_path": "model_path",
        "max_detections": "evaluation.max_detections",
        "mask_threshold": "evaluation.mask_threshold",
        "backend": "evaluation.backend",
        "confusion_score_threshold": "evaluation.score_threshold",
    },
    "predict": {
        "ckpt_path": "model_path",
        "score_threshold": "evaluation.score_threshold",
        "mask_threshold": "evaluation.mask_threshold",
    },
    "export": {"ckpt_path": "model_path"},
}
MODEL_FILE_COMMANDS = ("evaluate", "predict", "export")
SWEEPS_INSTALL = 'pip install "mrcnn[sweeps]"'
# Overrides that need a package of the sweeps extra, and the module that must import. mrcnn's
# own Optuna sweeper ships with mrcnn (hydra_plugins/mrcnn_optuna_sweeper); Optuna does not.
PLUGINS = {
    "hparams_search=optuna": "optuna",
    "hydra/sweeper=mrcnn_optuna": "optuna",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
}


def rewrite(command: str, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``args`` with ``model=FILE`` and old spellings rewritten, and a notice per rename."""
    renamed = RENAMED.get(command, {})
    rewritten, notices = [], []
    for arg in args:
        key, equals, value = arg.partition("=")
        if equals and command in MODEL_FILE_COMMANDS and key == "model":
            arg = f"model_path={value}"
        elif equals and key in renamed:
            arg = f"{renamed[key]}={value}"
            shown = "model" if renamed[key] == "model_path" else renamed[key]
            notices.append(
                f"mrcnn {command}: {key}= is now {shown}= (the same key in every command); "
                f"read as {shown}={value}."
            )
        rewritten.append(arg)
    return rewritten, notices


def missing_extras(args: Sequence[str]) -> list[tuple[str, str]]:
    """The overrides in ``args`` whose Hydra plugin does not import here, with that plugin."""
    missing = []
    for arg in args:
        plugin = PLUGINS.get(arg.lstrip("+"))
        if plugin and importlib.util.find_spec(plugin) is None:
            missing.append((arg, plugin))
    return missing


def prepare_command_line(command: str) -> None:
    """Rewrite ``sys.argv`` for ``command`` (see module doc), or stop with one message when the
    command line needs an extra that is not installed."""
    args, notices = rewrite(command, sys.argv[1:])
    for notice in notices:
        print(notice, file=sys.stderr)
    for arg, plugin in missing_extras(args):
        print(
            f"mrcnn {command}: error: {arg} needs the sweeps extra ({plugin} does not import "
            f"here). Install it: {SWEEPS_INSTALL}",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    sys.argv = [sys.argv[0], *args]
