"""Each (method, backbone) pair of an experiment: its search space checked before anything
runs, the papers' default row it starts from, and the epochs a trial of it trains."""

from __future__ import annotations

from typing import Any, NamedTuple

import optuna

from wsol.methods.base import METHODS
from wsol.search.experiment import Experiment
from wsol.search.pairs import PAIR_KEY
from wsol.search.space import DefaultRow, SearchSpace, load_search_space
from wsol.search.trainable import trial_config_values
from wsol.trial.config import (
    RECIPE_CARD_FIELDS,
    SCHEDULE_FIELDS,
    ConfigError,
    TrialConfig,
    config_from_dict,
)


class PairRungs(NamedTuple):
    """One pair's ASHA: its trials' epochs (max_t) and its first rung."""

    max_t: int
    grace_period: int


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
    _check_recipes(experiment, defaults)
    if experiment.scheduler.get("type") == "asha":
        pair_rungs(experiment, spaces)  # refuses a first rung after a pair's last epoch
    return spaces


def _check_recipes(experiment: Experiment, defaults: dict[str, dict[str, Any]]) -> None:
    """Each pair's recipe is one its method can carry out (e.g. BGC's warm-up shorter than
    its epochs when `trial.epochs` shortens a row's schedule), refused before any trial."""
    for pair in experiment.pairs():
        method = pair.split("/")[0]
        config = config_from_dict(trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                                      experiment.method_params, defaults),
                                  f"{experiment.name}: {pair}")
        try:
            METHODS.get(method).check_recipe(config)
        except ValueError as error:
            raise ConfigError(f"{experiment.name}: {pair}: {error}") from None


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


def pair_rows(experiment: Experiment,
              spaces: dict[str, SearchSpace]) -> dict[str, DefaultRow | None]:
    """Per pair, the papers' row for this dataset, family, backbone and regime (None: the
    method's built-in defaults)."""
    rows = {}
    for pair in experiment.pairs():
        method, backbone = pair.split("/")
        rows[pair] = spaces[method].default_row(experiment.dataset_family(), backbone,
                                                experiment.pretrained(), experiment.dataset)
    return rows


def recipe_keys(method: str) -> set[str]:
    """The keys of a row that are its training recipe rather than its losses and rates."""
    return set(SCHEDULE_FIELDS) | set(METHODS.get(method).recipe_params)


def pair_defaults(experiment: Experiment,
                  spaces: dict[str, SearchSpace]) -> dict[str, dict[str, Any]]:
    """Per pair, the papers' row less what the experiment sets itself (a user's value wins),
    and less its recipe with `recipe: own`."""
    defaults = {}
    for pair, row in pair_rows(experiment, spaces).items():
        if row is None:
            continue
        method = pair.split("/")[0]
        own = set(experiment.trial) | set(experiment.method_params.get(method, {}))
        if experiment.recipe_mode() == "own":
            own |= recipe_keys(method)
        defaults[pair] = {k: v for k, v in row.values.items() if k not in own}
    return defaults


def pair_recipes(experiment: Experiment,
                 spaces: dict[str, SearchSpace]) -> dict[str, dict[str, Any]]:
    """Per pair, its recipe card before sampling: the rates and recipe fields every trial of
    the pair trains with, from its row, the experiment and the built-in defaults."""
    defaults = pair_defaults(experiment, spaces)
    cards = {}
    for pair in experiment.pairs():
        method = pair.split("/")[0]
        values = trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                     experiment.method_params, defaults)
        settings = {**TrialConfig().to_dict(), **values}
        params = {**METHODS.get(method).defaults, **values["params"]}
        cards[pair] = {**{k: settings[k] for k in RECIPE_CARD_FIELDS},
                       **{k: params[k] for k in METHODS.get(method).recipe_params}}
    return cards


def pair_recipe_sources(experiment: Experiment,
                        spaces: dict[str, SearchSpace]) -> dict[str, str]:
    """Per pair, where its recipe comes from (the row's source)."""
    return {pair: " ".join(row.source.split()) if row else "built-in defaults"
            for pair, row in pair_rows(experiment, spaces).items()}


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


def pair_values(experiment: Experiment, spaces: dict[str, SearchSpace]
                ) -> dict[str, dict[str, Any]]:
    """Each pair's trial values before sampling: its row, the experiment's, the defaults."""
    defaults = pair_defaults(experiment, spaces)
    return {pair: trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                      experiment.method_params, defaults)
            for pair in experiment.pairs()}


def pair_epochs(experiment: Experiment, spaces: dict[str, SearchSpace]) -> dict[str, int]:
    """Each pair's epochs: a trial that reports fewer was stopped early."""
    return {pair: int(values.get("epochs", TrialConfig.epochs))
            for pair, values in pair_values(experiment, spaces).items()}


def pair_rungs(experiment: Experiment, spaces: dict[str, SearchSpace]) -> dict[str, PairRungs]:
    """Each pair's ASHA: max_t its own epochs; its first rung (grace period) after the epochs
    before its method trains its whole objective (BGC's warm-up, the weight map's classifier
    phase: a rung there would cut trials on an objective they have not trained yet), then the
    experiment's grace_period, or with `scheduler.rungs: fraction` that many epochs of the
    shortest such full-objective span scaled to the pair's. Every pair keeps trials_per_pair
    trials: equal budgets are equal numbers of configurations tried, each trained on its own
    paper's schedule at most (epochs and GPU-hours then differ by pair, reported per pair)."""
    spans = {}
    for pair, values in pair_values(experiment, spaces).items():
        epochs = int(values.get("epochs", TrialConfig.epochs))
        method = METHODS.get(pair.split("/")[0])
        spans[pair] = (epochs, method.first_full_epoch(epochs, values["params"]))
    spec = experiment.scheduler
    grace = int(spec.get("grace_period", 1))
    shortest = min(epochs - before for epochs, before in spans.values())
    rungs = {}
    for pair, (epochs, before) in spans.items():
        first = before + (grace if spec.get("rungs", "fraction") == "epochs" else
                          max(1, round(grace * (epochs - before) / shortest)))
        if first > epochs:
            raise ConfigError(f"{experiment.name}: scheduler.grace_period: {grace} puts "
                              f"{pair}'s first rung at epoch {first}, after its {epochs} "
                              "epochs (ASHA's first rung must come at or before a trial's "
                              "last epoch); lower grace_period or use scheduler: {type: fifo}")
        rungs[pair] = PairRungs(epochs, first)
    return rungs
