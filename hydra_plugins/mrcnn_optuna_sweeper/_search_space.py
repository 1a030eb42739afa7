"""The search space: ``hydra.sweeper.params`` and the command line, written in Hydra's override
grammar and read by Hydra's own parser, as Optuna distributions plus the overrides every trial
gets. (A ``_`` module: Hydra's plugin scan skips it, so Optuna is imported only for a search.)"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    OverrideType,
    RangeSweep,
)
from hydra.errors import CompactHydraException, HydraException
from omegaconf import Container, DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

GRAMMAR = (
    "interval(a, b), tag(log, interval(a, b)), int(interval(a, b)), choice(x, y, ...), "
    "range(a, b[, step]) or a plain value"
)
KNOWN_TAGS = frozenset({"log"})
_ABSENT = object()


class SweeperConfigError(CompactHydraException, ValueError):
    """A setting of the sweeper it cannot use, named with its key and how to write it instead.
    (Compact: Hydra prints the message alone, without a stack trace.)"""


@dataclass(frozen=True)
class Searched:
    """One key of the search space."""

    written_key: str  # as the override writes it, prefix included: "optimizer.lr", "+model.x"
    distribution: BaseDistribution
    # True when the categories are override texts ("[a,b]"), for choices of lists or dicts, which
    # Optuna cannot store as values: they go into the trial's overrides as they are.
    verbatim: bool = False


@dataclass
class SearchSpace:
    """What Optuna samples (keyed by config key) and what every trial gets as it is."""

    searched: dict[str, Searched] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # config key -> override, as written

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna's search space: config key -> distribution."""
        return {key: searched.distribution for key, searched in self.searched.items()}

    def trial_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: the fixed ones, then the values Optuna sampled."""
        sampled = []
        for key, value in params.items():
            searched = self.searched[key]
            text = value if searched.verbatim else value_text(value)
            sampled.append(f"{searched.written_key}={text}")
        return [*self.fixed.values(), *sampled]


def search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str] = (),
    config: DictConfig | None = None,
) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` with the command line ``arguments`` applied:
    a key given there with a plain value is fixed (it leaves the search), one given with sweep
    syntax replaces that key's search space, and the rest go to every trial unchanged. With
    ``config`` (the composed config), every key of the search space must be one of its keys."""
    parser = _parser()
    space = SearchSpace()
    if isinstance(params, Container):
        # Not resolved: a ${...} in a value is the trial's config to resolve, not the sweeper's.
        params = OmegaConf.to_container(params, resolve=False)
    if not isinstance(params, (Mapping, type(None))):
        raise SweeperConfigError(
            f"hydra.sweeper.params: {params!r} is not a mapping; write one config key per line "
            "with its values, e.g. optimizer.lr: tag(log, interval(0.001, 0.1))."
        )
    for key, value in (params or {}).items():
        # A YAML value that is not a string (0.02, true, [a, b]) is a fixed value: written back in
        # the override grammar.
        text = value if isinstance(value, str) else value_text(value)
        where = f"hydra.sweeper.params.{key}"
        override = _parse(parser, f"{key}={text}", where)
        if config is not None:
            _check_in_config(override, config, where)
        _add(space, override, where)
    for argument in arguments:
        where = f"'{argument}' on the command line"
        override = _parse(parser, argument, where)
        if config is not None and override.is_sweep_override():
            # (Plain overrides were checked by Hydra when it composed the config.)
            _check_in_config(override, config, where)
        _add(space, override, where)
    return space


def distribution_of(override: Override, where: str = "") -> Searched:
    """The Optuna distribution of a sweep override (``override.is_sweep_override()``)."""
    where = where or f"'{override.input_line}'"
    key = override.get_key_element()
    sweep = override.value()
    if isinstance(sweep, Glob):
        raise SweeperConfigError(
            f"{where}: glob(...) picks config group options for a grid sweep; list them for Optuna "
            f"instead: {_bare_key(override)}=choice(option1, option2)."
        )
    unknown = set(sweep.tags) - KNOWN_TAGS
    if unknown:
        raise SweeperConfigError(
            f"{where}: unknown tag {sorted(unknown)}; the sweeper knows tag(log, interval(a, b))."
        )
    log = "log" in sweep.tags
    if isinstance(sweep, IntervalSweep):
        return Searched(key, _interval(sweep.start, sweep.end, log, where))
    if log:
        raise SweeperConfigError(
            f"{where}: tag(log, ...) applies to interval(a, b) only, e.g. "
            f"{_bare_key(override)}=tag(log, interval(0.001, 0.1))."
        )
    if isinstance(sweep, ChoiceSweep):
        if sweep.simple_form:
            raise SweeperConfigError(
                f"{where}: values separated by commas make a grid sweep, which an Optuna search "
                f"does not run; to search these values write {_bare_key(override)}="
                f"choice({', '.join(override.sweep_string_iterator())}) "
                "(quoted in a shell), or run one search per value."
            )
        return _categorical(key, list(override.sweep_iterator()), where)
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SweeperConfigError(
                f"{where}: range({sweep.start}, {sweep.stop}, {sweep.step}) has no values "
                "(the end is excluded, as in Python's range)."
            )
        if sweep.shuffle:  # shuffle(...) means nothing to Optuna: the same values, unordered
            return _categorical(key, values, where)
        return Searched(key, _stepped(sweep, len(values)))
    raise SweeperConfigError(f"{where}: Optuna cannot search {sweep}; write one of {GRAMMAR}.")


def value_text(value: Any) -> str:
    """``value`` written in Hydra's override grammar so that it reads back as ``value``."""
    # Hydra's own writer escapes spaces, commas, brackets and ${}; a string that reads back as
    # something else ("true", "1", "null", or with a quote in it) is quoted instead.
    text = Override._get_value_element_as_str(value)
    if isinstance(value, str) and _read_back(text) != value:
        # In Hydra's quoted strings, backslashes before a quote or the end are doubled.
        escaped = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
        text = f"'{escaped}'"
    return text


def _read_back(text: str) -> Any:
    try:
        return _parser().parse_override(f"key={text}").value()
    except HydraException:
        return _ABSENT


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _parse(parser: OverridesParser, text: str, where: str) -> Override:
    try:
        return parser.parse_override(text)
    except HydraException as error:
        message = f"{where}: cannot read it ({error}). Write one of {GRAMMAR}."
        raise SweeperConfigError(message) from error


def _add(space: SearchSpace, override: Override, where: str) -> None:
    """``override`` into ``space``, replacing what an earlier one said about the same key."""
    key = _bare_key(override)
    space.searched.pop(key, None)
    space.fixed.pop(key, None)
    if override.is_sweep_override():
        space.searched[key] = distribution_of(override, where)
    else:
        space.fixed[key] = override.input_line


def _bare_key(override: Override) -> str:
    """The config key (or config group) of ``override``, without ``+``/``++``/``~``."""
    return override.get_key_element().lstrip("+~")


def _interval(start: float, end: float, log: bool, where: str) -> BaseDistribution:
    if start > end:
        raise SweeperConfigError(
            f"{where}: interval({start}, {end}) starts above its end; "
            f"write interval({end}, {start})."
        )
    if log and start <= 0:
        raise SweeperConfigError(
            f"{where}: a log scale needs a start above 0, not {start}; e.g. "
            f"tag(log, interval(1e-5, {end}))."
        )
    # int(interval(a, b)) gives int ends (Hydra reads a plain interval's ends as floats).
    if isinstance(start, int) and isinstance(end, int):
        return IntDistribution(start, end, log=log)
    return FloatDistribution(float(start), float(end), log=log)


def _stepped(sweep: RangeSweep, count: int) -> BaseDistribution:
    """range(a, b, step): a, a + step, ... before b, as in a grid sweep (Optuna's ends are both
    included, so the high end is the last value of the range)."""
    # In decimal, so that range(0, 1, 0.1) ends at 0.9 and not 0.9000000000000001 (Optuna warns
    # about a range that is not a whole number of steps).
    first = Decimal(str(sweep.start))
    last = first + Decimal(str(sweep.step)) * (count - 1)
    low, high = min(first, last), max(first, last)
    if all(isinstance(x, int) for x in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(int(low), int(high), step=abs(int(sweep.step)))
    return FloatDistribution(float(low), float(high), step=abs(float(sweep.step)))


def _categorical(key: str, values: list[Any], where: str) -> Searched:
    if not values:
        raise SweeperConfigError(f"{where}: choice() needs at least one value.")
    if any(isinstance(v, (list, dict)) for v in values):
        # Optuna's categories are str, int, float, bool or None: lists and dicts go in as their
        # override text, and into the trial's overrides as they are.
        texts = [Override._get_value_element_as_str(v) for v in values]
        return Searched(key, CategoricalDistribution(texts), verbatim=True)
    return Searched(key, CategoricalDistribution(values))


def _check_in_config(override: Override, config: DictConfig, where: str) -> None:
    """Stop on a key that the config does not have: each trial would fail on it."""
    if override.type != OverrideType.CHANGE:
        return  # +key adds a key, ++key adds or changes it, ~key deletes it: no check
    key = override.key_or_group
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None)
    if choices is not None and key in choices:
        return  # a config group (backbone, hydra/launcher, ...)
    if not _has_key(config, key):
        raise SweeperConfigError(
            f"{where}: '{key}' is not a key of the config (a typo? to add a key that the config "
            f"does not have, write +{key})."
        )


def _has_key(config: DictConfig, key: str) -> bool:
    parent_key, _, last = key.rpartition(".")
    parent = (
        OmegaConf.select(config, parent_key, default=_ABSENT, throw_on_resolution_failure=False)
        if parent_key
        else config
    )
    if isinstance(parent, DictConfig):
        # keys(), not `in`: `in` is False for a key whose value is ??? (missing), which exists.
        return last in parent.keys()  # noqa: SIM118
    if isinstance(parent, ListConfig):
        return last.isdigit() and int(last) < len(parent)
    return False
