"""The search: an Optuna study asked for ``n_jobs`` trials at a time, each batch launched as Hydra
jobs by the configured launcher, and told what each job returned. (A ``_`` module: Hydra's plugin
scan skips it, so Optuna is imported only when a search starts.)"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.mrcnn_optuna_sweeper._search_space import (
    SearchSpace,
    SweeperConfigError,
    search_space,
)

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
RESULTS_FILE = "optimization_results.yaml"


class NoTrialCompleted(CompactHydraException):
    """Every trial of the study failed: there is no best one to report."""


class TrialFailed(Exception):
    """A job that gave Optuna nothing to record: it raised, or returned no usable value."""


class OptunaSearch:
    """One invocation of the sweeper: ``n_trials`` trials added to the study."""

    def __init__(
        self,
        *,
        config: DictConfig,
        launcher: Launcher,
        direction: Any,
        study_name: str | None,
        storage: Any,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        params: Any,
    ) -> None:
        for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SweeperConfigError(
                    f"hydra.sweeper.{key}: a whole number from 1, not {value}."
                )
        self.config = config
        self.launcher = launcher
        self.directions = directions_of(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.params = params

    def run(self, arguments: Sequence[str]) -> None:
        """Run the trials, then write ``optimization_results.yaml`` into the sweep dir."""
        space = search_space(self.params, arguments, self.config)
        study = self._study()
        log.info(
            "Optuna study %r (%s), %s, sampler %s: %d trial(s) here, %d at a time",
            study.study_name,
            self.storage or "in memory",
            " and ".join(self.directions),
            type(study.sampler).__name__,
            self.n_trials,
            min(self.n_jobs, self.n_trials),
        )
        for key, distribution in space.distributions.items():
            log.info("  %s: %s", key, describe(distribution))
        if not space.searched:
            log.warning("hydra.sweeper.params is empty: every trial runs the same config.")

        job_num, failed = 0, 0
        while job_num < self.n_trials:
            batch = [
                study.ask(space.distributions)
                for _ in range(min(self.n_jobs, self.n_trials - job_num))
            ]
            returns = self._launch(study, batch, space, job_num)
            for offset, (trial, job) in enumerate(zip(batch, returns, strict=True)):
                failed += not self._tell(study, trial, job, job_num + offset)
            # Every trial its own job folder: numbering goes on across batches.
            job_num += len(batch)
        if failed:
            log.warning("%d of %d trial(s) failed here; their jobs' logs say why.", failed, job_num)
        self._write_results(study)

    def _study(self) -> optuna.Study:
        # The sampler first: a bad one stops the search before a study is stored.
        sampler = make_sampler(self.sampler)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=make_storage(self.storage),
            sampler=sampler,
            directions=self.directions,
            load_if_exists=True,
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise SweeperConfigError(
                f"hydra.sweeper.direction: study {study.study_name!r} in {self.storage} was made "
                f"to {' and '.join(stored)}, not {' and '.join(self.directions)}; use the same "
                "direction, or another hydra.sweeper.study_name for a new study."
            )
        previous = len(study.trials)
        if previous:
            log.info("Study %r has %d trial(s) already: adding to it.", study.study_name, previous)
            study.sampler = make_sampler(self.sampler, seed_offset=previous)
        return study

    def _launch(
        self, study: optuna.Study, batch: list[Trial], space: SearchSpace, job_num: int
    ) -> Sequence[JobReturn]:
        for offset, trial in enumerate(batch):
            log.info("Trial %d (job %d): %s", trial.number, job_num + offset, trial.params)
        overrides = [space.trial_overrides(trial.params) for trial in batch]
        try:
            return self.launcher.launch(overrides, initial_job_idx=job_num)
        except BaseException:
            # A launch that stops (Ctrl-C, a config that does not compose) would leave the batch
            # RUNNING in a stored study for good.
            for trial in batch:
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
            raise

    def _tell(self, study: optuna.Study, trial: Trial, job: JobReturn, job_num: int) -> bool:
        """Record ``job``'s value(s) for ``trial``; False when the trial failed. A failed trial does
        not stop the search."""
        output_dir = OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir", default=None)
        if output_dir is not None:
            trial.set_user_attr("output_dir", str(output_dir))
        try:
            values = objective_values(job, len(self.directions))
        except TrialFailed as failure:
            log.warning("Trial %d (job %d) failed: %s", trial.number, job_num, failure)
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, values)
        log.info("Trial %d (job %d) returned %s", trial.number, job_num, _format(values))
        return True

    def _write_results(self, study: optuna.Study) -> None:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            raise NoTrialCompleted(
                f"No trial of study {study.study_name!r} completed: see the jobs' logs under "
                f"{self.config.hydra.sweep.dir}."
            )
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
        if len(self.directions) == 1:
            best = study.best_trial
            results |= {
                "best_trial": best.number,
                "best_params": best.params,
                "best_value": best.value,
            }
            log.info("Best trial %d%s: %s", best.number, _where(best), best.value)
            log.info("Best parameters: %s", best.params)
        else:
            # Several objectives have no single best: the trials that no other trial beats.
            results["solutions"] = [
                {"trial": t.number, "params": t.params, "values": t.values}
                for t in study.best_trials
            ]
            log.info("%d Pareto-optimal trial(s):", len(study.best_trials))
            for t in study.best_trials:
                log.info("  trial %d%s: %s %s", t.number, _where(t), t.values, t.params)
        path = Path(str(self.config.hydra.sweep.dir)) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), path)
        log.info("Results: %s", path)


def directions_of(direction: Any) -> list[str]:
    """``hydra.sweeper.direction`` as a list of Optuna directions (one per returned value)."""
    given = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    names = [str(d).lower() for d in given]
    if not names or any(name not in DIRECTIONS for name in names):
        raise SweeperConfigError(
            f"hydra.sweeper.direction: {direction!r} is not a direction; write minimize or "
            "maximize, or a list of them for a task that returns several values."
        )
    return names


def make_sampler(config: Any, seed_offset: int = 0) -> BaseSampler:
    """The sampler of ``hydra.sweeper.sampler`` (a ``_target_`` config; null: Optuna's default).

    A study resumed from storage gets seed + the number of trials it has: with the same seed, the
    sampler would propose the first invocation's parameters again (TPE's random start-up trials).
    """
    if config is None:
        return optuna.samplers.TPESampler()
    if not isinstance(config, (Mapping, DictConfig)) or "_target_" not in config:
        raise SweeperConfigError(
            f"hydra.sweeper.sampler: {config!r} is not a sampler config; write "
            "{_target_: optuna.samplers.TPESampler, seed: 0} (or another optuna.samplers class)."
        )
    overrides = {}
    if seed_offset and isinstance(config.get("seed"), int):
        overrides["seed"] = config["seed"] + seed_offset
    try:
        sampler = instantiate(config, **overrides)
    except Exception as error:
        raise SweeperConfigError(
            f"hydra.sweeper.sampler: cannot make {config['_target_']} ({error}). Keys of another "
            "sampler left in the block? Remove them with ~hydra.sweeper.sampler.KEY."
        ) from error
    if not isinstance(sampler, BaseSampler):
        raise SweeperConfigError(
            f"hydra.sweeper.sampler: {config['_target_']} is not an Optuna sampler "
            "(optuna.samplers.BaseSampler)."
        )
    return sampler


def make_storage(storage: Any) -> Any:
    """``hydra.sweeper.storage`` for ``optuna.create_study``: null, a database URL, or a
    ``_target_`` config of an Optuna storage."""
    if storage is None:
        return None
    if isinstance(storage, str):
        _create_sqlite_folder(storage)
        return storage
    if isinstance(storage, (Mapping, DictConfig)) and "_target_" in storage:
        try:
            return instantiate(storage)
        except Exception as error:
            raise SweeperConfigError(
                f"hydra.sweeper.storage: cannot make {storage['_target_']}: {error}"
            ) from error
    raise SweeperConfigError(
        f"hydra.sweeper.storage: {storage!r} is not a storage; write a database URL such as "
        "sqlite:///optuna.db, or null to keep the study in memory."
    )


def _create_sqlite_folder(url: str) -> None:
    """SQLite makes the database file but not its folder (sqlite:///outputs/optuna.db would fail
    in a fresh directory: the sweep dir under outputs/ is only made when jobs start)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def objective_values(job: JobReturn, n_objectives: int) -> list[float]:
    """The finite value(s) ``job`` returned, one per direction; :class:`TrialFailed` otherwise."""
    try:
        returned = job.return_value  # raises what the job raised
    except Exception as error:
        raise TrialFailed(f"the job raised {type(error).__name__}: {error}") from error
    if returned is None:
        raise TrialFailed(
            "the job returned None (mrcnn train does when its optimized_metric was not logged)"
        )
    if n_objectives > 1 and not isinstance(returned, (list, tuple, ListConfig)):
        raise TrialFailed(f"the job returned {returned!r}, not a list of {n_objectives} numbers")
    items = returned if n_objectives > 1 else [returned]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError) as error:
        expected = f"{n_objectives} numbers" if n_objectives > 1 else "a number"
        raise TrialFailed(f"the job returned {returned!r}, not {expected}") from error
    if len(values) != n_objectives:
        raise TrialFailed(
            f"the job returned {len(values)} values for {n_objectives} directions: {returned!r}"
        )
    if not all(math.isfinite(v) for v in values):
        raise TrialFailed(f"the job returned {_format(values)}, not a finite number")
    return values


def describe(distribution: BaseDistribution) -> str:
    """``distribution`` in words, for the log."""
    if isinstance(distribution, CategoricalDistribution):
        return f"one of {list(distribution.choices)}"
    assert isinstance(distribution, (FloatDistribution, IntDistribution)), distribution
    kind = "integers" if isinstance(distribution, IntDistribution) else "floats"
    scale = ", log scale" if distribution.log else ""
    step = f" in steps of {distribution.step}" if distribution.step not in (None, 1) else ""
    return f"{kind} from {distribution.low} to {distribution.high}{step}{scale}"


def _format(values: list[float]) -> str:
    return str(values[0]) if len(values) == 1 else str(values)


def _where(trial: FrozenTrial) -> str:
    output_dir = trial.user_attrs.get("output_dir")
    return f" ({output_dir})" if output_dir else ""
