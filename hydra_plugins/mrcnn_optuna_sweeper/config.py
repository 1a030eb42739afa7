"""The sweeper's settings (``hydra.sweeper``), stored in Hydra's ConfigStore as
``hydra/sweeper=mrcnn_optuna``: a name of its own, so that it never clashes with
hydra-optuna-sweeper's ``optuna`` where that package is installed too."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class MrcnnOptunaSweeperConf:
    """``hydra.sweeper`` (documented in mrcnn/conf/hparams_search/optuna.yaml)."""

    _target_: str = "hydra_plugins.mrcnn_optuna_sweeper.optuna_sweeper.MrcnnOptunaSweeper"
    # The sampler and storage reach the sweeper as configs, not objects: it makes them itself, so
    # that a bad one is reported under its key and a resumed study's sampler gets a new seed.
    _recursive_: bool = False
    # minimize | maximize, or a list of them when the task returns several values.
    direction: Any = "minimize"
    # null: Optuna makes up a name (give one to resume a study kept in storage).
    study_name: str | None = None
    # null: in memory; a database URL (sqlite:///optuna.db) or a `_target_` config of a storage.
    storage: Any = None
    # Trials this invocation runs (added to those already in a stored study).
    n_trials: int = 20
    # Trials asked for and launched at once (in parallel where the launcher runs jobs in
    # parallel, e.g. hydra/launcher=slurm).
    n_jobs: int = 1
    # A `_target_` config of an Optuna sampler.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # The search space: config key -> a value in Hydra's override grammar, e.g. interval(0, 1).
    params: dict[str, Any] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="mrcnn_optuna", node=MrcnnOptunaSweeperConf, provider="mrcnn"
)
