"""The sweeper Hydra instantiates for ``hydra/sweeper=mrcnn_optuna``. Only Hydra is imported here
(Hydra imports this module on every run of every app when it scans for plugins): the search and
Optuna are in ``_impl``, imported when a sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

INSTALL = "pip install 'mrcnn[sweeps]'"


class MrcnnOptunaSweeper(Sweeper):
    """An Optuna search over ``hydra.sweeper.params``, each trial a Hydra job (settings:
    ``config.MrcnnOptunaSweeperConf``)."""

    def __init__(
        self,
        direction: Any,
        study_name: str | None,
        storage: Any,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        params: Any,
    ) -> None:
        self.settings = {
            "direction": direction,
            "study_name": study_name,
            "storage": storage,
            "n_trials": n_trials,
            "n_jobs": n_jobs,
            "sampler": sampler,
            "params": params,
        }
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the composed config and make the launcher (hydra.launcher) the trials run on."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run ``n_trials`` trials with the command-line ``arguments`` applied to the search."""
        assert self.config is not None and self.launcher is not None, "setup() comes first"
        try:
            from hydra_plugins.mrcnn_optuna_sweeper._impl import OptunaSearch
        except ModuleNotFoundError as error:
            if error.name not in {"optuna", "sqlalchemy"}:
                raise
            raise ModuleNotFoundError(
                f"hydra/sweeper=mrcnn_optuna needs {error.name}, which does not import here: "
                f"{INSTALL}"
            ) from error
        OptunaSearch(config=self.config, launcher=self.launcher, **self.settings).run(arguments)
