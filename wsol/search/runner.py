"""Runs a search: validates everything, then Ray Tune + per-pair Optuna/ASHA + MLflow.

The console shows the search itself (one line per ended trial, a progress block every half
minute; wsol.search.progress); what Ray, Tune, Optuna, MLflow and the trials print goes to the
search's log file.

The Optuna side persists: one study per (search, pair) in the experiment's `optuna_storage`
(default: a journal file beside the search's local state; wsol.search.studies), each trial
carrying its Tune trial id and MLflow run id. `more_trials` continues a finished search's
studies under the same MLflow parent run (warm start).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from wsol.common import tracking_schema as schema
from wsol.common.paths import expand, is_uri
from wsol.data.synthetic import PRESETS, ensure_generated, mismatch
from wsol.methods.base import METHODS
from wsol.search.experiment import Experiment
from wsol.search.pairs import PAIR_KEY, PairedASHA, PairedSearcher
from wsol.search.progress import SearchProgress, console_to_log, say, worker_output_to
from wsol.search.space import SearchSpace, load_search_space
from wsol.search.studies import (
    RunLookup,
    StudyTaken,
    describe_sampler,
    fail_running,
    make_sampler,
    open_storage,
    plot_studies,
    prepare_study,
    public_url,
    storage_url,
    study_name,
    without_secrets,
)
from wsol.search.tracking import (
    DEFAULT_TRACKING_URI,
    MLflowTrialCallback,
    dataset_fingerprint,
    end_search_run,
    outage_limit_s,
    reopen_search_run,
    start_search_run,
    through_outage,
    tracking_uri,
    ui_url,
)
from wsol.search.trainable import search_trial, trial_config_values
from wsol.trial.config import ConfigError, TrialConfig, config_from_dict

METRIC, MODE = "score", "max"
LOG_NAME = "search.log"
# The three newest checkpoints of a trial are kept (each holds the selected best.pt and the
# resume state, so the newest alone has everything). Tune forces a snapshot of its experiment
# state once a trial has made `num_to_keep` checkpoints since the last one, so that the
# snapshot never names a deleted checkpoint: with 1 after every report (several a second
# with the demo's 3-second epochs: Tune's "snapshotting has been triggered multiple times"
# warning), with 3 at most every second epoch of a trial, 6 s apart there.
CHECKPOINTS_KEPT = 3
# In the search's parent record: the Tune run of its latest --more-trials continuation.
CONTINUED_KEY = "continued"


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


def _searcher(experiment: Experiment, spaces: dict[str, SearchSpace],
              storage: optuna.storages.BaseStorage, studies: dict[str, optuna.Study],
              budgets: dict[str, int],
              run_of: RunLookup | None, continued: bool) -> PairedSearcher:
    """One OptunaSearch per pair on its persisted study, seeded per pair; a new search starts
    each pair from the papers' defaults, a continued one from what its study knows."""
    searchers = {}
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
        say(f"generating the synthetic benchmark ({preset}) in {root}", error=True)
        ensure_generated(root, PRESETS[preset], seed=experiment.seed)
        return
    reason = mismatch(root, PRESETS[preset], experiment.seed)
    if reason:
        say(f"warning: {root} is not the {preset!r} preset at seed {experiment.seed} of this "
            f"version ({reason}); delete {root} to regenerate it", error=True)


def log_path(experiment: Experiment, storage: str) -> Path:
    """Beside the search's Ray state for local storage; for S3 storage (no place to append a
    log to) in mlruns/logs/<name>/ under the working directory."""
    if is_uri(storage):
        return Path("mlruns", "logs", experiment.name, LOG_NAME).resolve()
    return Path(storage, experiment.name, LOG_NAME)


def run_search(experiment: Experiment, restore: bool = False,
               more_trials: int | None = None) -> dict[str, Any]:
    """Returns the best train-fullsup score per pair and where to look. The MLflow parent
    run ends with the search: FINISHED, KILLED (interrupted; --restore resumes it) or
    FAILED. `more_trials` continues the finished search of this name: that many more trials
    per pair in its Optuna studies, under its parent run."""
    if restore and more_trials:
        raise ValueError("--restore resumes an interrupted search, --more-trials continues a "
                         "finished one: not both")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" per method
    try:
        spaces = load_spaces(experiment)
    finally:
        optuna.logging.set_verbosity(verbosity)
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
    with console_to_log(log):
        say(f"search {experiment.name}: {len(experiment.pairs())} (method, backbone) pairs x "
            f"{per_pair} trials, {experiment.max_concurrent} at a time"
            + (", restored" if restore else "") + (", continued" if more_trials else ""))
        say(f"Ray, Tune and trial output: {log}")
        prepare_data(experiment)
        uri = tracking_uri(experiment.tracking_uri)
        if uri == DEFAULT_TRACKING_URI:
            Path("mlruns").mkdir(exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=experiment.ray_address, include_dashboard=False)
        worker_output_to(log)
        started: dict[str, str] = {}  # the parent run, once _tuner started or reopened it
        try:
            tuner, experiment_id, run_id = _tuner(experiment, spaces, uri, storage, restore,
                                                  optuna_url, optuna_storage, budgets,
                                                  bool(more_trials), started)
            say(f"MLflow parent run {run_id}: {ui_url(uri, experiment_id)}")
            grid = tuner.fit()
            callback = MLflowTrialCallback(uri, experiment_id, run_id, experiment.dataset)
            summary = through_outage(uri, "reading the trials' runs for the summary", _summary,
                                     grid, callback, pair_epochs(experiment, spaces))
            summary.update(name=experiment.name, experiment_id=experiment_id, log=str(log))
            # The status from this Tune run's own trials (a continuation's, before the
            # previous summary is merged in).
            status, reason = "FINISHED", None
            budget = sum(budgets.values())
            if summary["unfinished"] or (experiment.time_budget_s is None
                                         and summary["trials"] < budget):
                # Tune ends a search on Ctrl+C without raising; the runs of the trials it
                # stopped stay RUNNING until --restore continues them.
                status = "KILLED"
                ended = summary["trials"] - summary["unfinished"]
                reason = (f"interrupted: {ended} of {budget} more trials ended; a continuation "
                          "cannot be restored: run --more-trials again" if more_trials else
                          f"interrupted: {ended} of {budget} trials ended; resume with --restore")
                say(f"search {status}: {reason}")
            # A finished search, or a continuation (never restored), leaves no Optuna trial
            # RUNNING.
            _close_studies(uri, run_id, optuna_url, experiment.pairs(), summary,
                           end_running=status == "FINISHED" or bool(more_trials))
            if more_trials:
                through_outage(uri, "reading the continued search's summary", _merge_previous,
                               uri, run_id, summary)
            through_outage(uri, "ending the search's run", end_search_run, uri, run_id, status,
                           summary, reason)
        except BaseException as error:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            if "run_id" in started:
                with contextlib.suppress(Exception):  # the search's own error is the one to see
                    end_search_run(uri, started["run_id"], status,
                                   reason=f"{type(error).__name__}: {error}")
            raise
        return summary


def _open_rdb(experiment: Experiment, url: str) -> optuna.storages.BaseStorage:
    """The experiment's RDB storage, or a one-line ConfigError (no password in it)."""
    try:
        return open_storage(url)
    except Exception as error:
        message = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(f"{experiment.name}: optuna_storage {public_url(url)} does not open: "
                          f"{type(error).__name__}: {without_secrets(message, url)}") from None


def _tuner(experiment: Experiment, spaces: dict[str, SearchSpace], uri: str, storage: str,
           restore: bool, optuna_url: str, optuna_storage: optuna.storages.BaseStorage | None,
           budgets: dict[str, int], continued: bool,
           started: dict[str, str]) -> tuple[tune.Tuner, str, str]:
    """`started` gets the parent run's id once this has started or reopened it: a later
    error ends it."""
    experiment_dir = f"{storage.rstrip('/')}/{experiment.name}"
    metadata = experiment.trial_base().get("metadata_root") or \
        str(Path(experiment.trial_base()["data_root"]) / "metadata")
    defaults = pair_defaults(experiment, spaces)
    trainable = tune.with_resources(
        tune.with_parameters(search_trial, base=experiment.trial_base(),
                             method_params=experiment.method_params,
                             pair_defaults=defaults,
                             synthetic_preset=experiment.synthetic_preset,
                             outage_limit=outage_limit_s()),
        experiment.resources_per_trial,
    )
    if restore:
        if not tune.Tuner.can_restore(experiment_dir):
            raise FileNotFoundError(f"no search to restore at {experiment_dir}")
        parent = _read_parent(experiment_dir)
        if parent.get(CONTINUED_KEY):
            raise ConfigError(
                f"{experiment.name}: --restore resumes an interrupted search, and this one was "
                f"continued with --more-trials (Tune run {parent[CONTINUED_KEY]}), which cannot "
                "be restored: run --more-trials again")
        prefix = MlflowClient(uri).get_run(parent["run_id"]).data.tags.get(schema.OPTUNA_STUDY)
        if prefix is not None and "://" not in optuna_url and not Path(optuna_url).is_file():
            raise ConfigError(
                f"{experiment.name}: --restore needs the search's Optuna journal {optuna_url}, "
                "which is missing (with S3 storage_path it stays on the disk of the driver "
                "that started the search): restore there, or set optuna_storage to an RDB URL")
        # The MLflow and progress callbacks come back with the pickled run config; the MLflow
        # one finds the child runs it already made by their Ray trial id.
        tuner = tune.Tuner.restore(experiment_dir, trainable)
        reopen_search_run(uri, parent["run_id"])
        started["run_id"] = parent["run_id"]
        return tuner, parent["experiment_id"], parent["run_id"]
    name = experiment.name
    optuna_storage = optuna_storage or open_storage(optuna_url)
    if continued:
        if not tune.Tuner.can_restore(experiment_dir):
            raise FileNotFoundError(f"no search to continue at {experiment_dir}")
        parent = _read_parent(experiment_dir)
        experiment_id, run_id = parent["experiment_id"], parent["run_id"]
        run = MlflowClient(uri).get_run(run_id)
        # After an interrupted continuation (KILLED, or RUNNING if its driver died) the
        # search is continued again; otherwise only a finished one is.
        if run.info.status != "FINISHED" and not parent.get(CONTINUED_KEY):
            raise ConfigError(f"{experiment.name}: search run {run_id} is {run.info.status}, "
                              "not FINISHED: resume it with --restore before --more-trials")
        prefix = run.data.tags.get(schema.OPTUNA_STUDY)
        if prefix is None:
            raise ConfigError(f"search run {run_id} has no Optuna studies to continue")
        studies = _studies(experiment, spaces, optuna_storage, prefix, run_id, continued)
        # Tune's run of a search cannot take more trials once it ended: each continuation is
        # a Tune run of its own beside it, reporting to the same parent run and studies. The
        # record keeps --restore from resuming the original run instead.
        name = f"{experiment.name}+{time.strftime('%Y%m%d-%H%M%S')}"
        _write_parent(experiment_dir, experiment_id, run_id, **{CONTINUED_KEY: name})
        reopen_search_run(uri, run_id)
        started["run_id"] = run_id
    else:
        experiment_id, run_id = start_search_run(
            uri, logged_experiment(experiment), {m: s.path for m, s in spaces.items()},
            dataset_fingerprint(metadata))
        started["run_id"] = run_id
        _write_parent(experiment_dir, experiment_id, run_id)
        prefix = _study_prefix(optuna_storage, experiment.name, run_id)
        try:
            studies = _studies(experiment, spaces, optuna_storage, prefix, run_id, continued)
        except StudyTaken:  # another search of this name took it meanwhile (a shared RDB)
            prefix = f"{experiment.name}~{run_id[:8]}"
            studies = _studies(experiment, spaces, optuna_storage, prefix, run_id, continued)
    client = MlflowClient(uri)
    client.set_tag(run_id, schema.OPTUNA_STORAGE, public_url(optuna_url))
    client.set_tag(run_id, schema.OPTUNA_STUDY, prefix)
    client.set_tag(run_id, schema.SAMPLER, describe_sampler(experiment.sampler))
    callback = MLflowTrialCallback(uri, experiment_id, run_id, experiment.dataset)
    progress = SearchProgress(
        budgets,
        {pair: trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                   experiment.method_params, defaults)
         for pair in experiment.pairs()},
        callback, time_budget_s=experiment.time_budget_s)
    searcher = ConcurrencyLimiter(
        _searcher(experiment, spaces, optuna_storage, studies, budgets,
                  RunLookup(uri, experiment_id, run_id), continued),
        max_concurrent=experiment.max_concurrent)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(experiment),
            num_samples=sum(budgets.values()),
            time_budget_s=experiment.time_budget_s,
            reuse_actors=True,  # no new worker process (and imports) per trial
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage,
            callbacks=[callback, progress],
            failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            verbose=0,  # SearchProgress is the console
        ),
    )
    return tuner, experiment_id, run_id


def logged_experiment(experiment: Experiment) -> dict[str, Any]:
    """The experiment as the parent run records it (params, experiment.json): an RDB
    `optuna_storage` without its password."""
    values = experiment.to_dict()
    if values.get("optuna_storage"):
        values["optuna_storage"] = public_url(values["optuna_storage"])
    return values


def _study_prefix(storage: optuna.storages.BaseStorage, name: str, run_id: str) -> str:
    """The search's name, or, when a search of that name already has studies in the
    storage, the name with its parent run's id: one study per (search, pair)."""
    taken = {s.study_name.rsplit("/", 2)[0] for s in optuna.get_all_study_summaries(storage)}
    return name if name not in taken else f"{name}~{run_id[:8]}"


def _studies(experiment: Experiment, spaces: dict[str, SearchSpace],
             storage: optuna.storages.BaseStorage, prefix: str, run_id: str,
             continued: bool) -> dict[str, optuna.Study]:
    """Every pair's study, created or (continued) checked against today's spaces."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return {pair: prepare_study(storage, prefix, pair, experiment.sampler,
                                    spaces[pair.split("/")[0]], run_id, continued)
                for pair in experiment.pairs()}
    except StudyTaken as error:
        if prefix != experiment.name:
            raise ConfigError(f"{experiment.name}: {error}") from None
        raise
    except ValueError as error:
        raise ConfigError(f"{experiment.name}: {error}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _close_studies(uri: str, run_id: str, url: str, pairs: list[str],
                   summary: dict[str, Any], end_running: bool) -> None:
    """Optuna's plots of every study on the parent run, and where to open the studies;
    `end_running`: trials still RUNNING become FAIL (fail_running). Never the reason a
    search fails: a warning instead."""
    try:
        prefix = MlflowClient(uri).get_run(run_id).data.tags.get(schema.OPTUNA_STUDY)
        if prefix is None:  # a restored search that began before studies persisted
            return
        storage = open_storage(url)
        studies = {pair: optuna.load_study(study_name=study_name(prefix, pair),
                                           storage=storage)
                   for pair in pairs}
        if end_running and (failed := fail_running(studies)):
            say(f"{failed} Optuna trials left unfinished marked FAIL", error=True)
        summary["optuna"] = {"storage": public_url(url),
                             "studies": {pair: s.study_name for pair, s in studies.items()},
                             "trials": {pair: len(s.trials) for pair, s in studies.items()}}
        with tempfile.TemporaryDirectory() as tmp:
            if plot_studies(studies, Path(tmp)):
                MlflowClient(uri).log_artifacts(run_id, tmp, schema.OPTUNA_FOLDER)
    except Exception as error:
        say(f"warning: the Optuna studies not closed (plots, links): {type(error).__name__}: "
            f"{without_secrets(str(error), url)}", error=True)


def _merge_previous(uri: str, run_id: str, summary: dict[str, Any]) -> None:
    """A continued search's summary covers the search it continues too: the best per pair
    over both, trial counts added."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=schema.SUMMARY_JSON,
                                                   dst_path=tmp, tracking_uri=uri)
        previous = json.loads(Path(path).read_text())
    for pair, best in previous.get("best", {}).items():
        if pair not in summary["best"] or best["score"] > summary["best"][pair]["score"]:
            summary["best"][pair] = best
    for pair, counts in previous.get("pairs", {}).items():
        mine = summary["pairs"].setdefault(pair, dict.fromkeys(counts, 0))
        for key, value in counts.items():
            mine[key] = mine.get(key, 0) + value
    for key in ("trials", "failed"):
        summary[key] += previous.get(key, 0)
    summary["trial_seconds"] = previous.get("trial_seconds", []) + summary["trial_seconds"]
    summary["continued"] = previous.get("continued", 0) + 1


def _parent_file(experiment_dir: str) -> str:
    return f"{experiment_dir}/wsol_parent_run.json"


def _filesystem(experiment_dir: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in experiment_dir:
        return pyarrow.fs.FileSystem.from_uri(experiment_dir)
    return pyarrow.fs.LocalFileSystem(), experiment_dir


def _write_parent(experiment_dir: str, experiment_id: str, run_id: str,
                  **record: str) -> None:
    """Where a restored search finds its MLflow parent run (and, once continued, the Tune run
    of its latest continuation)."""
    fs, path = _filesystem(experiment_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(_parent_file(path)) as out:
        out.write(json.dumps({"experiment_id": experiment_id, "run_id": run_id,
                              **record}).encode())


def _read_parent(experiment_dir: str) -> dict[str, str]:
    fs, path = _filesystem(experiment_dir)
    with fs.open_input_stream(_parent_file(path)) as handle:
        return json.loads(handle.read().decode())


def _summary(grid: tune.ResultGrid, callback: MLflowTrialCallback,
             epochs: dict[str, int]) -> dict[str, Any]:
    """The best train-fullsup score per pair and how the trials ended: finished, stopped
    early (ASHA or the time budget), failed, or unfinished (an interrupted search: their runs
    stay RUNNING until --restore continues them)."""
    children = {r.data.tags.get(schema.RAY_TRIAL_ID): r for r in callback.client.search_runs(
        [callback.experiment_id], f"tags.`{schema.PARENT}` = '{callback.parent_run_id}'",
        max_results=10_000)}
    best: dict[str, dict[str, Any]] = {}
    pairs: dict[str, dict[str, int]] = {}
    failed = unfinished = 0
    seconds = []
    for result in grid:
        pair = (result.config or {}).get(PAIR_KEY)  # None: interrupted before it started
        metrics = result.metrics or {}
        run = children.get(metrics.get("trial_id"))
        counts = pairs.setdefault(pair or "?", dict.fromkeys(
            ("trials", "finished", "stopped", "failed", "unfinished"), 0))
        counts["trials"] += 1
        if result.error is not None:
            outcome = "failed"
            failed += 1
        elif run is not None and run.info.status == "RUNNING":
            outcome = "unfinished"
            unfinished += 1
        elif int(metrics.get("epoch", -1)) + 1 < epochs.get(pair, 0):
            outcome = "stopped"
        else:
            outcome = "finished"
        counts[outcome] += 1
        if "time_total_s" in metrics:
            seconds.append(metrics["time_total_s"])
        score = metrics.get("best_score")
        if pair is None or score is None:
            continue
        if pair not in best or score > best[pair]["score"]:
            best[pair] = {"score": score, "run_id": run.info.run_id if run else None,
                          "run_name": run.info.run_name if run else None,
                          "config": {k: v for k, v in result.config.items() if k != PAIR_KEY}}
    return {"best": best, "pairs": pairs, "trials": len(grid), "failed": failed,
            "unfinished": unfinished, "trial_seconds": seconds,
            "parent_run_id": callback.parent_run_id, "tracking_uri": callback.tracking_uri}


def pair_epochs(experiment: Experiment, spaces: dict[str, SearchSpace]) -> dict[str, int]:
    """Each pair's epochs: a trial that reports fewer was stopped early."""
    defaults = pair_defaults(experiment, spaces)
    return {pair: int(trial_config_values({PAIR_KEY: pair}, experiment.trial_base(),
                                          experiment.method_params, defaults)
                      .get("epochs", TrialConfig.epochs))
            for pair in experiment.pairs()}
