"""The Ray Tune run of a search, built from its parent run's record: the trainable, one
Optuna searcher per pair under a concurrency limit, the paired ASHA scheduler, and the
callbacks that are the search's MLflow record and console."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from wsol.common.outages import outage_limit_s
from wsol.search.experiment import Experiment
from wsol.search.pair_spaces import (
    first_point,
    pair_defaults,
    pair_recipe_sources,
    pair_recipes,
    pair_rungs,
)
from wsol.search.pairs import PAIR_KEY, PairedASHA, PairedSearcher
from wsol.search.progress import SearchProgress
from wsol.search.space import SearchSpace
from wsol.search.starts import Mode, ParentRun
from wsol.search.studies import RunLookup, make_sampler
from wsol.search.trainable import search_trial, trial_config_values
from wsol.search.trial_callback import MLflowTrialCallback

METRIC, MODE = "score", "max"
# The three newest checkpoints of a trial are kept (each holds the selected best.pt and the
# resume state, so the newest alone has everything). Tune forces a snapshot of its experiment
# state once a trial has made `num_to_keep` checkpoints since the last one, so that the
# snapshot never names a deleted checkpoint: with 1 after every report (several a second
# with the demo's 3-second epochs: Tune's "snapshotting has been triggered multiple times"
# warning), with 3 at most every second epoch of a trial, 6 s apart there.
CHECKPOINTS_KEPT = 3
# What Tune runs as a trial: a function, here search_trial with its parameters bound.
Trainable = type[tune.Trainable] | Callable


def trainable_for(experiment: Experiment, spaces: dict[str, SearchSpace]) -> Trainable:
    """One trial of any pair, with the experiment's settings and the pairs' paper defaults."""
    return tune.with_resources(
        tune.with_parameters(search_trial, base=experiment.trial_base(),
                             method_params=experiment.method_params,
                             pair_defaults=pair_defaults(experiment, spaces),
                             synthetic_preset=experiment.synthetic_preset,
                             outage_limit=outage_limit_s()),
        experiment.resources_per_trial,
    )


def restored_tuner(parent: ParentRun, trainable: Trainable) -> tune.Tuner:
    """The interrupted search's Tune run. The MLflow and progress callbacks come back with
    the pickled run config; the MLflow one finds the child runs it already made by their Ray
    trial id."""
    assert parent.mode is Mode.RESTORE
    return tune.Tuner.restore(parent.experiment_dir, trainable)


def new_tuner(experiment: Experiment, spaces: dict[str, SearchSpace], parent: ParentRun,
              trainable: Trainable, storage: optuna.storages.BaseStorage,
              budgets: dict[str, int], uri: str, storage_path: str) -> tune.Tuner:
    """A new search's Tune run, or a continuation's (`budgets`: trials per pair)."""
    assert parent.studies is not None
    callback = MLflowTrialCallback(uri, parent.experiment_id, parent.run_id, experiment.dataset,
                                   parent.tune_name,
                                   recipes=pair_recipes(experiment, spaces),
                                   recipe_sources=pair_recipe_sources(experiment, spaces))
    defaults = pair_defaults(experiment, spaces)
    progress = SearchProgress(
        budgets,
        {pair: trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                   experiment.method_params, defaults)
         for pair in experiment.pairs()},
        callback, time_budget_s=experiment.time_budget_s)
    searcher = ConcurrencyLimiter(
        _searcher(experiment, spaces, storage, parent.studies, budgets,
                  RunLookup(uri, parent.experiment_id, parent.run_id),
                  continued=parent.mode is Mode.CONTINUE),
        max_concurrent=experiment.max_concurrent)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(experiment, spaces),
            num_samples=sum(budgets.values()),
            time_budget_s=experiment.time_budget_s,
            reuse_actors=True,  # no new worker process (and imports) per trial
        ),
        run_config=tune.RunConfig(
            name=parent.tune_name, storage_path=storage_path,
            callbacks=[callback, progress],
            failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            verbose=0,  # SearchProgress is the console
        ),
    )


def _searcher(experiment: Experiment, spaces: dict[str, SearchSpace],
              storage: optuna.storages.BaseStorage, studies: dict[str, optuna.Study],
              budgets: dict[str, int],
              run_of: RunLookup | None, continued: bool) -> PairedSearcher:
    """One OptunaSearch per pair on its persisted study, seeded per pair; a new search starts
    each pair from the papers' defaults, a continued one from what its study knows."""
    searchers: dict[str, Searcher] = {}
    defaults = pair_defaults(experiment, spaces)
    for index, pair in enumerate(experiment.pairs()):
        space = spaces[pair.split("/")[0]]
        # A continued search draws other points than the search it continues.
        seed = experiment.seed + index + (len(studies[pair].trials) if continued else 0)
        start = None if continued else first_point(space, defaults.get(pair, {}))
        searchers[pair] = OptunaSearch(space.sample, metric=METRIC, mode=MODE,
                                       sampler=make_sampler(experiment.sampler, seed),
                                       study_name=studies[pair].study_name, storage=storage,
                                       points_to_evaluate=[start] if start else None)
    return PairedSearcher(searchers, budgets, METRIC, MODE, run_of)


def _scheduler(experiment: Experiment, spaces: dict[str, SearchSpace]) -> TrialScheduler:
    """FIFO, or one ASHA per pair on the pair's own epochs (pair_rungs)."""
    spec = experiment.scheduler
    if spec["type"] == "fifo":
        return FIFOScheduler()
    return PairedASHA(pair_rungs(experiment, spaces), METRIC, MODE,
                      reduction_factor=float(spec.get("reduction_factor", 2)))
