"""Runs a search: validates everything, then Ray Tune + per-pair Optuna/ASHA + MLflow.

The console shows the search itself (one line per ended trial, a progress block every half
minute; wsol.search.progress); what Ray, Tune, Optuna, MLflow and the trials print goes to the
search's log file.

A search starts in one of three ways (wsol.search.starts: new, restored, continued), each
giving the record of its MLflow parent run, from which its Tune run is built
(wsol.search.tuner); the parent run ends with the search (wsol.search.parent_run). The Optuna
side persists: one study per (search, pair) in the experiment's `optuna_storage` (default: a
journal file beside the search's local state; wsol.search.studies), each trial carrying its
Tune trial id and MLflow run id.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune

from wsol.common import tracking_schema as schema
from wsol.common.console import say
from wsol.common.outages import through_outage
from wsol.common.paths import expand, is_uri
from wsol.common.store_backup import after_search
from wsol.common.tracking_store import (
    DEFAULT_TRACKING_URI,
    refuse_credentials,
    tracking_uri,
    ui_url,
)
from wsol.data.manifest import data_problem
from wsol.data.shards import index_problem, is_shard_uri, missing_split
from wsol.data.synthetic import PRESETS, ensure_generated, mismatch
from wsol.search.experiment import Experiment
from wsol.search.pair_spaces import load_spaces, pair_epochs
from wsol.search.parent_run import end_search_run, ended_on_error, reopen_search_run
from wsol.search.progress import console_to_log, worker_output_to
from wsol.search.space import SearchSpace
from wsol.search.starts import (
    Mode,
    ParentRun,
    refuse_taken,
    start_continue,
    start_new,
    start_restore,
    tag_studies,
)
from wsol.search.studies import (
    close_studies,
    make_sampler,
    open_storage,
    public_url,
    storage_url,
    without_secrets,
)
from wsol.search.summary import SearchSummary, collect
from wsol.search.tuner import new_tuner, restored_tuner, trainable_for
from wsol.trial.config import ConfigError

LOG_NAME = "search.log"


def run_search(experiment: Experiment, restore: bool = False,
               more_trials: int | None = None) -> dict[str, Any]:
    """Returns the search's summary (wsol.search.summary): the best train-fullsup score per
    pair and where to look. The MLflow parent run ends with the search: FINISHED, KILLED
    (interrupted; --restore resumes it) or FAILED. `more_trials` continues the finished
    search of this name: that many more trials per pair in its Optuna studies, under its
    parent run."""
    if restore and more_trials:
        raise ValueError("--restore resumes an interrupted search, --more-trials continues a "
                         "finished one: not both")
    mode = Mode.RESTORE if restore else Mode.CONTINUE if more_trials else Mode.NEW
    refuse_secrets(experiment)
    spaces = load_spaces(experiment)
    storage = _storage(experiment.storage_path)
    log = log_path(experiment, storage)
    optuna_url = storage_url(experiment.optuna_storage, log.parent)
    # Refused before the parent run starts: a sampler whose package is missing, an RDB
    # storage that does not open.
    try:
        make_sampler(experiment.sampler, experiment.seed)
    except ImportError as error:
        raise ConfigError(f"{experiment.name}: {error}") from None
    optuna_storage = _open_rdb(experiment, optuna_url) if "://" in optuna_url else None
    per_pair = more_trials or experiment.trials_per_pair
    budgets = {pair: per_pair for pair in experiment.pairs()}
    experiment_dir = f"{storage.rstrip('/')}/{experiment.name}"
    if mode is Mode.NEW:  # before Ray starts and the log turns over
        refuse_taken(experiment, tracking_uri(experiment.tracking_uri), experiment_dir)
    with console_to_log(log):
        say(f"search {experiment.name}: {len(budgets)} (method, backbone) pairs x "
            f"{per_pair} trials, {experiment.max_concurrent} at a time"
            + (", restored" if restore else "") + (", continued" if more_trials else ""))
        say(f"Ray, Tune and trial output: {log}")
        prepare_data(experiment)
        uri = _start_services(experiment, log)
        trainable = trainable_for(experiment, spaces)
        if mode is not Mode.RESTORE:
            optuna_storage = optuna_storage or open_storage(optuna_url)
        parent = _begin(experiment, spaces, mode, uri, experiment_dir, optuna_url,
                        optuna_storage)
        # A restored search's Tune state loads before its parent run counts as running again.
        tuner = restored_tuner(parent, trainable) if mode is Mode.RESTORE else None
        if mode is not Mode.NEW:
            reopen_search_run(uri, parent.run_id)
        # The head's store (and an S3-stored search's journal) to $WSOL_STORE_BACKUP at the end.
        with after_search(log.parent.parent if is_uri(storage) else None), \
                ended_on_error(uri, parent.run_id):
            if tuner is None:
                assert optuna_storage is not None
                tag_studies(uri, parent, optuna_url, experiment.sampler)
                tuner = new_tuner(experiment, spaces, parent, trainable, optuna_storage,
                                  budgets, uri, storage)
            say(f"MLflow parent run {parent.run_id}: {ui_url(uri, parent.experiment_id)}")
            grid = tuner.fit()
            summary = _end(experiment, spaces, parent, grid, uri, optuna_url, budgets, log)
        return summary.to_dict()


def refuse_secrets(experiment: Experiment) -> None:
    """A tracking URI or storage path with credentials in it is refused before anything
    runs (data, Ray, a run): the search would log it, print it and pickle it into its Ray
    state (CredentialsInURI says where the credentials go instead). data_root too: the
    trials get it in their config."""
    refuse_credentials(experiment.storage_path, "storage_path")
    refuse_credentials(experiment.data_root, "data_root")
    tracking_uri(experiment.tracking_uri)


def _begin(experiment: Experiment, spaces: dict[str, SearchSpace], mode: Mode, uri: str,
           experiment_dir: str, optuna_url: str,
           optuna_storage: optuna.storages.BaseStorage | None) -> ParentRun:
    if mode is Mode.RESTORE:
        return start_restore(experiment, uri, experiment_dir, optuna_url)
    assert optuna_storage is not None
    if mode is Mode.CONTINUE:
        return start_continue(experiment, spaces, uri, experiment_dir, optuna_storage)
    return start_new(experiment, spaces, uri, experiment_dir, optuna_storage,
                     logged_experiment(experiment))


def _start_services(experiment: Experiment, log: Path) -> str:
    """The tracking URI, once its local folder exists and Ray runs, its trials' output sent
    to the search's log."""
    uri = tracking_uri(experiment.tracking_uri)
    if uri == DEFAULT_TRACKING_URI:
        Path("mlruns").mkdir(exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=ray_address(experiment.ray_address), include_dashboard=False)
    worker_output_to(log)
    return uri


def ray_address(configured: str | None) -> str | None:
    """Without --address (or $RAY_ADDRESS, which `ray job submit` sets) a search starts its
    own Ray: ray.init(address=None) would join any cluster already running on the machine,
    such as a colleague's on a shared node."""
    if configured is None and not os.environ.get("RAY_ADDRESS"):  # Ray reads "" as unset
        return "local"
    return configured


def _end(experiment: Experiment, spaces: dict[str, SearchSpace], parent: ParentRun,
         grid: tune.ResultGrid, uri: str, optuna_url: str, budgets: dict[str, int],
         log: Path) -> SearchSummary:
    """The summary of this Tune run's trials (a continuation's merged with the search it
    continues), its studies closed and the parent run ended with it."""
    summary = through_outage(uri, "reading the trials' runs for the summary", collect, grid,
                             uri, parent.experiment_id, parent.run_id,
                             pair_epochs(experiment, spaces))
    summary.name, summary.experiment_id, summary.log = (experiment.name, parent.experiment_id,
                                                        str(log))
    continued = parent.mode is Mode.CONTINUE
    status, reason = _status(summary, sum(budgets.values()), experiment.time_budget_s,
                             continued)
    if reason:
        say(f"search {status}: {reason}")
    # A finished search, or a continuation (never restored), leaves no Optuna trial RUNNING.
    summary.optuna = close_studies(uri, parent.run_id, optuna_url, experiment.pairs(),
                                   end_running=status == "FINISHED" or continued)
    if continued:
        through_outage(uri, "reading the continued search's summary", _merge_previous,
                       uri, parent.run_id, summary)
    through_outage(uri, "ending the search's run", end_search_run, uri, parent.run_id, status,
                   summary.to_dict(), reason)
    return summary


def _status(summary: SearchSummary, budget: int, time_budget_s: float | None,
            continued: bool) -> tuple[str, str | None]:
    """FINISHED, or KILLED with why: Tune ends a search on Ctrl+C without raising, and the
    runs of the trials it stopped stay RUNNING until --restore continues them. From this
    Tune run's own trials (a continuation's, before the previous summary is merged in)."""
    if not summary.unfinished and (time_budget_s is not None or summary.trials >= budget):
        return "FINISHED", None
    ended = summary.trials - summary.unfinished
    if continued:
        return "KILLED", (f"interrupted: {ended} of {budget} more trials ended; a continuation "
                          "cannot be restored: run --more-trials again")
    return "KILLED", (f"interrupted: {ended} of {budget} trials ended; resume with --restore")


def _merge_previous(uri: str, run_id: str, summary: SearchSummary) -> None:
    """The summary.json the parent run holds from the rounds before, merged in."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=schema.SUMMARY_JSON,
                                                   dst_path=tmp, tracking_uri=uri)
        summary.merge(json.loads(Path(path).read_text()))


def _storage(path: str) -> str:
    path = expand(path)
    return path if is_uri(path) else str(Path(path).resolve())


def prepare_data(experiment: Experiment) -> None:
    """Generates a missing synthetic benchmark (dataset: synthetic with a preset) and warns,
    keeping the data, when it is stale. Any other data must already match its metadata:
    else the search stops here, before Ray starts, saying how to prepare it."""
    if is_shard_uri(experiment.data_root):  # the trials' nodes fetch it; check its index
        uri = expand(experiment.data_root)
        metadata = experiment.metadata_dir()
        # The shards hold the splits their metadata lists: the trials must read such metadata.
        missing = missing_split(metadata)
        if missing:
            raise ConfigError(f"{experiment.name}: {missing} (the trials on the shards at {uri} "
                              f"read {metadata}: set metadata_root to the one `wsol data "
                              "shard` packed them from)")
        problem = index_problem(uri)
        if problem:
            raise ConfigError(f"{experiment.name}: {problem}")
        return
    root = Path(expand(experiment.data_root))
    preset = experiment.synthetic_preset
    if not preset:
        problem = data_problem(experiment.dataset, root, experiment.metadata_dir())
        if problem:
            raise ConfigError(f"{experiment.name}: {problem}")
        return
    if not root.exists():
        say(f"generating the synthetic benchmark ({preset}) in {root}", error=True)
        ensure_generated(root, PRESETS[preset], seed=experiment.seed)
        return
    reason = mismatch(root, PRESETS[preset], experiment.seed)
    if reason:
        say(f"warning: {root} is not the {preset!r} preset at seed {experiment.seed} of this "
            f"version ({reason}); the search uses it as it is. For that preset, generate it "
            f"elsewhere with `wsol data synth --preset {preset} --seed {experiment.seed} "
            "--out NEW` and set data_root: NEW", error=True)


def log_path(experiment: Experiment, storage: str) -> Path:
    """Beside the search's Ray state for local storage; for S3 storage (no place to append a
    log to) in mlruns/logs/<name>/ under the working directory."""
    if is_uri(storage):
        return Path("mlruns", "logs", experiment.name, LOG_NAME).resolve()
    return Path(storage, experiment.name, LOG_NAME)


def logged_experiment(experiment: Experiment) -> dict[str, Any]:
    """The experiment as the parent run records it (params, experiment.json): an RDB
    `optuna_storage` without its password."""
    values = experiment.to_dict()
    if values.get("optuna_storage"):
        values["optuna_storage"] = public_url(values["optuna_storage"])
    return values


def _open_rdb(experiment: Experiment, url: str) -> optuna.storages.BaseStorage:
    """The experiment's RDB storage, or a one-line ConfigError (no password in it)."""
    try:
        return open_storage(url)
    except Exception as error:
        message = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(f"{experiment.name}: optuna_storage {public_url(url)} does not open: "
                          f"{type(error).__name__}: {without_secrets(message, url)}") from None


