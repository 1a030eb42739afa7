"""One folder per run: a time-named run or sweep folder is claimed before the run starts, so
that runs started in the same second never share one.

Hydra names a run's folder by the clock (``outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}``), to the
second: two ``mrcnn train`` started together from a shell both logged "Outputs in
.../00-50-27" and wrote one ``checkpoints/``, one ``train.log`` and one TensorBoard folder.
:class:`UniqueRunDir` (a Hydra callback, ``mrcnn/conf/hydra/default.yaml``) creates the folder
with an exclusive ``mkdir`` before Hydra uses it; when another run has it already, the run
takes ``<name>-2``, ``<name>-3``, ... A run started alone keeps the plain name. ``mkdir`` is
atomic on local and network file systems, so this holds between shells and between machines.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Characters Hydra's override grammar takes unquoted in a value.
_PLAIN_VALUE = re.compile(r"[\w./:@+~-]+")


def claim_folder(path: str | Path) -> Path:
    """Create ``path``, or the first of ``path-2``, ``path-3``, ... that no one else has, and
    return it. Parent folders are made as needed; the folder returned is new and empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        candidate = path if number == 1 else path.with_name(f"{path.name}-{number}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            number += 1
            continue
        return candidate


def is_time_named(node: DictConfig, key: str) -> bool:
    """Whether ``node.key`` is named by Hydra's clock (``${now:...}``): a folder the user did
    not name themselves (``hydra.run.dir=outputs/demo`` is theirs, and is used as given)."""
    written = OmegaConf.to_container(node, resolve=False).get(key)
    return isinstance(written, str) and "${now:" in written


def override_value(text: str) -> str:
    """``text`` as a value of a Hydra command-line override, quoted where the grammar needs it."""
    if _PLAIN_VALUE.fullmatch(text):
        return text
    # In a quoted value a backslash is an escape only before a quote (the closing one too).
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


class UniqueRunDir(Callback):
    """Claims a time-named ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a multirun) before
    any job starts, and pins the config to the folder claimed (see the module doc)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_time_named(config.hydra.run, "dir"):
            return
        folder = claim_folder(str(config.hydra.run.dir))
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_time_named(config.hydra.sweep, "dir"):
            return
        folder = claim_folder(str(config.hydra.sweep.dir))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(folder)
            # Launchers compose every job's config again from the command line (Hydra's
            # load_sweep_config: the hydra overrides plus the job's own), where the folder
            # would be named by the clock once more: the claimed one goes in as an override.
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={override_value(str(folder))}")
