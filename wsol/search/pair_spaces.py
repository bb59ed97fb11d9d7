"""Each (method, backbone) pair of an experiment: its search space checked before anything
runs, the papers' default row it starts from, and the epochs a trial of it trains."""

from __future__ import annotations

from typing import Any

import optuna

from wsol.methods.base import METHODS
from wsol.search.experiment import Experiment
from wsol.search.pairs import PAIR_KEY
from wsol.search.space import SearchSpace, load_search_space
from wsol.search.trainable import trial_config_values
from wsol.trial.config import ConfigError, TrialConfig, config_from_dict


def load_spaces(experiment: Experiment) -> dict[str, SearchSpace]:
    """Every method's space, each checked against a sample trial config before anything runs."""
    spaces = {}
    for method in experiment.methods:
        path = experiment.spaces_dir() / f"{method}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no search space for method {method!r}: {path}")
        space = load_search_space(path)
        space = space.with_ranges(experiment.ranges_for(method, {p.name for p in space.params}),
                                  f"{experiment.name}: param_ranges")
        # The experiment's own trial settings and per-method values win over a space's fixed
        # values (e.g. a shorter IVR percentile list for a CPU demo).
        overridden = set(experiment.trial) | set(experiment.method_params.get(method, {}))
        space.fixed = {k: v for k, v in space.fixed.items() if k not in overridden}
        spaces[method] = space
    searched = {p.name for space in spaces.values() for p in space.params}
    for key in experiment.param_ranges:
        if "." not in key and key not in searched:
            raise ConfigError(f"{experiment.name}: param_ranges.{key}: no method searches it")
    defaults = pair_defaults(experiment, spaces)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" per method
    try:
        for method, space in spaces.items():
            _check_sample(experiment, method, space, defaults)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return spaces


def _check_sample(experiment: Experiment, method: str, space: SearchSpace,
                  defaults: dict[str, dict[str, Any]]) -> None:
    """One point of the space, as a trial of the method's first pair would get it, makes a
    valid trial config."""
    study = optuna.create_study()
    fixed = space.sample(study.ask())
    pair = f"{method}/{experiment.backbones[0]}"
    values = {**study.trials[0].params, **fixed, PAIR_KEY: pair}
    config_from_dict(trial_config_values(values, experiment.trial_base(),
                                         experiment.method_params, defaults),
                     str(space.path))


def pair_defaults(experiment: Experiment,
                  spaces: dict[str, SearchSpace]) -> dict[str, dict[str, Any]]:
    """Per pair, the papers' row for this dataset family, backbone and regime, less what the
    experiment sets itself (a user's value wins)."""
    defaults = {}
    for pair in experiment.pairs():
        method, backbone = pair.split("/")
        row = spaces[method].default_row(experiment.dataset_family(), backbone,
                                         experiment.pretrained())
        if row is None:
            continue
        own = set(experiment.trial) | set(experiment.method_params.get(method, {}))
        defaults[pair] = {k: v for k, v in row.values.items() if k not in own}
    return defaults


def first_point(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any] | None:
    """The defaults as the pair's first trial, when every searched value is known and inside
    its range: the search then starts from the authors' setting."""
    known = {**TrialConfig().to_dict(), **METHODS.get(space.method).defaults, **values}
    point: dict[str, Any] = {}
    for p in space.params:
        if any(point.get(k) != v for k, v in p.when.items()):
            continue
        value = known.get(p.name)
        if p.kind == "categorical":
            if value not in p.choices:
                return None
        elif value is None or isinstance(value, bool) or not p.low <= value <= p.high:
            return None
        point[p.name] = value
    return point


def pair_epochs(experiment: Experiment, spaces: dict[str, SearchSpace]) -> dict[str, int]:
    """Each pair's epochs: a trial that reports fewer was stopped early."""
    defaults = pair_defaults(experiment, spaces)
    return {pair: int(trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                          experiment.method_params, defaults)
                      .get("epochs", TrialConfig.epochs))
            for pair in experiment.pairs()}
