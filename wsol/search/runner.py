"""Runs a search: validates everything, then Ray Tune + per-pair Optuna/ASHA + MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from wsol.config import ConfigError, TrialConfig, config_from_dict
from wsol.data.synthetic import PRESETS, ensure_generated, mismatch
from wsol.methods.base import METHODS
from wsol.paths import expand, is_uri
from wsol.search.experiment import Experiment
from wsol.search.pairs import PairedASHA, PairedSearcher
from wsol.search.trainable import search_trial, trial_config_values
from wsol.search_space import SearchSpace, load_search_space
from wsol.tracking import (
    DEFAULT_TRACKING_URI,
    MLflowTrialCallback,
    dataset_fingerprint,
    start_search_run,
    tracking_uri,
)

METRIC, MODE = "score", "max"


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
    for method, space in spaces.items():
        study = optuna.create_study()
        fixed = space.sample(study.ask())
        pair = f"{method}/{experiment.backbones[0]}"
        values = {**study.trials[0].params, **fixed, "pair": pair}
        config_from_dict(trial_config_values(values, experiment.trial_base(),
                                             experiment.method_params, defaults),
                         str(space.path))
    return spaces


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


def _searcher(experiment: Experiment, spaces: dict[str, SearchSpace]) -> PairedSearcher:
    searchers = {}
    defaults = pair_defaults(experiment, spaces)
    for index, pair in enumerate(experiment.pairs()):
        space = spaces[pair.split("/")[0]]
        kind = optuna.samplers.TPESampler if experiment.sampler == "tpe" else \
            optuna.samplers.RandomSampler
        sampler = kind(seed=experiment.seed + index)
        start = first_point(space, defaults.get(pair, {}))
        searchers[pair] = OptunaSearch(space.sample, metric=METRIC, mode=MODE, sampler=sampler,
                                       points_to_evaluate=[start] if start else None)
    budgets = {pair: experiment.trials_per_pair for pair in experiment.pairs()}
    return PairedSearcher(searchers, budgets, METRIC, MODE)


def _scheduler(experiment: Experiment) -> TrialScheduler:
    spec = experiment.scheduler
    if spec["type"] == "fifo":
        return FIFOScheduler()
    max_t = int(experiment.trial_base().get("epochs", 10))
    return PairedASHA(experiment.pairs(), METRIC, MODE, max_t=max_t,
                      grace_period=int(spec.get("grace_period", 1)),
                      reduction_factor=float(spec.get("reduction_factor", 2)))


def _storage(path: str) -> str:
    path = expand(path)
    return path if is_uri(path) else str(Path(path).resolve())


def prepare_data(experiment: Experiment) -> None:
    """Generates a missing synthetic benchmark; warns (and keeps the data) when it is stale."""
    root = Path(expand(experiment.data_root))
    preset = experiment.synthetic_preset
    if not preset:
        return
    if not root.exists():
        print(f"generating the synthetic benchmark ({preset}) in {root}", file=sys.stderr)
        ensure_generated(root, PRESETS[preset], seed=experiment.seed)
        return
    reason = mismatch(root, PRESETS[preset], experiment.seed)
    if reason:
        print(f"warning: {root} is not the {preset!r} preset at seed {experiment.seed} of this "
              f"version ({reason}); delete {root} to regenerate it", file=sys.stderr)


def run_search(experiment: Experiment, restore: bool = False) -> dict[str, Any]:
    """Returns the best train-fullsup score per pair and where to look."""
    spaces = load_spaces(experiment)
    prepare_data(experiment)
    uri = tracking_uri(experiment.tracking_uri)
    if uri == DEFAULT_TRACKING_URI:
        Path("mlruns").mkdir(exist_ok=True)
    metadata = experiment.trial_base().get("metadata_root") or \
        str(Path(experiment.trial_base()["data_root"]) / "metadata")
    storage = _storage(experiment.storage_path)
    experiment_dir = f"{storage.rstrip('/')}/{experiment.name}"
    if not ray.is_initialized():
        ray.init(address=experiment.ray_address, include_dashboard=False)
    trainable = tune.with_resources(
        tune.with_parameters(search_trial, base=experiment.trial_base(),
                             method_params=experiment.method_params,
                             pair_defaults=pair_defaults(experiment, spaces),
                             synthetic_preset=experiment.synthetic_preset),
        experiment.resources_per_trial,
    )
    if restore:
        if not tune.Tuner.can_restore(experiment_dir):
            raise FileNotFoundError(f"no search to restore at {experiment_dir}")
        # The MLflow callback comes back with the pickled run config; it finds the child runs
        # it already made by their Ray trial id.
        tuner = tune.Tuner.restore(experiment_dir, trainable)
        parent = _read_parent(experiment_dir)
        experiment_id, run_id = parent["experiment_id"], parent["run_id"]
    else:
        experiment_id, run_id = start_search_run(
            uri, experiment.to_dict(), {m: s.path for m, s in spaces.items()},
            dataset_fingerprint(metadata))
        _write_parent(experiment_dir, experiment_id, run_id)
        callback = MLflowTrialCallback(uri, experiment_id, run_id, experiment.dataset)
        searcher = ConcurrencyLimiter(_searcher(experiment, spaces),
                                      max_concurrent=experiment.max_concurrent)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=_scheduler(experiment),
                num_samples=len(experiment.pairs()) * experiment.trials_per_pair,
                time_budget_s=experiment.time_budget_s,
                reuse_actors=True,  # no new worker process (and imports) per trial
            ),
            run_config=tune.RunConfig(
                name=experiment.name, storage_path=storage, callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute="best_score",
                    checkpoint_score_order="max"),
                verbose=1,
            ),
        )
    grid = tuner.fit()
    return _summary(grid, MLflowTrialCallback(uri, experiment_id, run_id, experiment.dataset),
                    uri)


def _parent_file(experiment_dir: str) -> str:
    return f"{experiment_dir}/wsol_parent_run.json"


def _filesystem(experiment_dir: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in experiment_dir:
        return pyarrow.fs.FileSystem.from_uri(experiment_dir)
    return pyarrow.fs.LocalFileSystem(), experiment_dir


def _write_parent(experiment_dir: str, experiment_id: str, run_id: str) -> None:
    """Where a restored search finds its MLflow parent run."""
    fs, path = _filesystem(experiment_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(_parent_file(path)) as out:
        out.write(json.dumps({"experiment_id": experiment_id, "run_id": run_id}).encode())


def _read_parent(experiment_dir: str) -> dict[str, str]:
    fs, path = _filesystem(experiment_dir)
    with fs.open_input_stream(_parent_file(path)) as handle:
        return json.loads(handle.read().decode())


def _summary(grid: tune.ResultGrid, callback: MLflowTrialCallback,
             tracking_uri: str) -> dict[str, Any]:
    best: dict[str, dict[str, Any]] = {}
    failed = 0
    seconds = []
    for result in grid:
        if result.error is not None:
            failed += 1
        metrics = result.metrics or {}
        if "time_total_s" in metrics:
            seconds.append(metrics["time_total_s"])
        pair = result.config.get("pair")
        score = metrics.get("best_score")
        if pair is None or score is None:
            continue
        if pair not in best or score > best[pair]["score"]:
            best[pair] = {"score": score, "run_id": callback.run_id_of(metrics["trial_id"]),
                          "config": {k: v for k, v in result.config.items() if k != "pair"}}
    return {"best": best, "trials": len(grid), "failed": failed, "trial_seconds": seconds,
            "parent_run_id": callback.parent_run_id, "tracking_uri": tracking_uri}
