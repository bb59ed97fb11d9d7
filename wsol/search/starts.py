"""The three ways a search starts, each returning the one record of its parent run:

- new: a parent run and one Optuna study per pair are made;
- restore (`--restore`): an interrupted search resumes from Tune's saved state, under its
  own parent run and studies;
- continue (`--more-trials`): a finished search gets more trials per pair, as a Tune run of
  its own beside the first one, reporting to the same parent run and studies (a Tune run
  that ended cannot take more trials).

What each mode needs of the saved search is checked in `_saved_search`, before anything is
written.
"""

from __future__ import annotations

import contextlib
import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from ray import tune

from wsol.common import tracking_schema as schema
from wsol.common.tracking_store import open_store
from wsol.data.manifest import dataset_fingerprint
from wsol.search.experiment import Experiment
from wsol.search.parent_run import (
    CONTINUED_KEY,
    ended_on_error,
    read_record,
    start_search_run,
    write_record,
)
from wsol.search.space import SearchSpace
from wsol.search.studies import StudyTaken, describe_sampler, prepare_study, public_url
from wsol.trial.config import ConfigError


class Mode(enum.Enum):
    NEW = "new"
    RESTORE = "restore"
    CONTINUE = "continue"


@dataclass(frozen=True)
class ParentRun:
    """A search's MLflow parent run and where its state lives. `tune_name`: the Tune run this
    driver runs (the search's own, or a continuation's beside it); `studies`: per pair, None
    for a restore (the searcher comes back with Tune's state)."""

    mode: Mode
    experiment_id: str
    run_id: str
    experiment_dir: str
    tune_name: str
    study_prefix: str | None
    studies: dict[str, optuna.Study] | None


def start_new(experiment: Experiment, spaces: dict[str, SearchSpace], uri: str,
              experiment_dir: str, storage: optuna.storages.BaseStorage,
              logged: dict[str, Any]) -> ParentRun:
    """A new parent run (`logged`: the experiment as it records it) and its studies; the run
    ends FAILED if the studies cannot be made."""
    refuse_taken(experiment, uri, experiment_dir)
    experiment_id, run_id = start_search_run(uri, logged, {m: s.path for m, s in spaces.items()},
                                             dataset_fingerprint(experiment.metadata_dir()))
    with ended_on_error(uri, run_id):
        write_record(experiment_dir, experiment_id, run_id)
        prefix = _study_prefix(storage, experiment.name, run_id)
        try:
            studies = _studies(experiment, spaces, storage, prefix, run_id, continued=False)
        except StudyTaken:  # another search of this name took it meanwhile (a shared RDB)
            prefix = f"{experiment.name}~{run_id[:8]}"
            studies = _studies(experiment, spaces, storage, prefix, run_id, continued=False)
    return ParentRun(Mode.NEW, experiment_id, run_id, experiment_dir, experiment.name, prefix,
                     studies)


def start_restore(experiment: Experiment, uri: str, experiment_dir: str,
                  optuna_url: str) -> ParentRun:
    """The interrupted search's parent run; nothing is written yet."""
    record, prefix = _saved_search(experiment, Mode.RESTORE, uri, experiment_dir)
    if prefix is not None and "://" not in optuna_url and not Path(optuna_url).is_file():
        raise ConfigError(
            f"{experiment.name}: --restore needs the search's Optuna journal {optuna_url}, "
            "which is missing (with S3 storage_path it stays on the disk of the driver "
            "that started the search): restore there, or set optuna_storage to an RDB URL")
    return ParentRun(Mode.RESTORE, record["experiment_id"], record["run_id"], experiment_dir,
                     experiment.name, prefix, None)


def start_continue(experiment: Experiment, spaces: dict[str, SearchSpace], uri: str,
                   experiment_dir: str, storage: optuna.storages.BaseStorage) -> ParentRun:
    """The finished search's parent run and studies (checked against today's spaces), and a
    Tune run of its own whose name the saved record keeps, so that --restore refuses it."""
    record, prefix = _saved_search(experiment, Mode.CONTINUE, uri, experiment_dir)
    assert prefix is not None  # _saved_search refuses a search without studies
    experiment_id, run_id = record["experiment_id"], record["run_id"]
    studies = _studies(experiment, spaces, storage, prefix, run_id, continued=True)
    name = f"{experiment.name}+{time.strftime('%Y%m%d-%H%M%S')}"
    write_record(experiment_dir, experiment_id, run_id, **{CONTINUED_KEY: name})
    return ParentRun(Mode.CONTINUE, experiment_id, run_id, experiment_dir, name, prefix,
                     studies)


def refuse_taken(experiment: Experiment, uri: str, experiment_dir: str) -> None:
    """A new search never writes over the saved state of another of its name (its record
    and tuner.pkl): a later --restore would resume the wrong search. It stops before its
    parent run (run_search asks first, before Ray starts), in one line that says what to type
    instead."""
    if not tune.Tuner.can_restore(experiment_dir):
        return  # none, or one that failed before Tune started: nothing to resume there
    status = "?"
    with contextlib.suppress(Exception):  # the line is worth more than the status in it
        status = MlflowClient(uri).get_run(read_record(experiment_dir)["run_id"]).info.status
    raise ConfigError(
        f"{experiment.name}: {experiment_dir} already holds a search of this name (its "
        f"parent run {status}): run the same command with --more-trials N to give a finished "
        "one N more trials per pair, or with --restore to resume an interrupted one, or set "
        "another `name:` in the experiment file")


def _saved_search(experiment: Experiment, mode: Mode, uri: str,
                  experiment_dir: str) -> tuple[dict[str, str], str | None]:
    """The saved search's record and study prefix, once it is one that `mode` may take up:
    a continued search is never restored (run --more-trials again); only a finished search
    (or an interrupted continuation) is continued, and only one with studies."""
    if not tune.Tuner.can_restore(experiment_dir):
        verb = "restore" if mode is Mode.RESTORE else "continue"
        raise FileNotFoundError(f"no search to {verb} at {experiment_dir}")
    record = read_record(experiment_dir)
    continued = record.get(CONTINUED_KEY)
    if mode is Mode.RESTORE and continued:
        raise ConfigError(
            f"{experiment.name}: --restore resumes an interrupted search, and this one was "
            f"continued with --more-trials (Tune run {continued}), which cannot "
            "be restored: run --more-trials again")
    run = MlflowClient(uri).get_run(record["run_id"])
    prefix = run.data.tags.get(schema.OPTUNA_STUDY)
    if mode is Mode.CONTINUE:
        # After an interrupted continuation (KILLED, or RUNNING if its driver died) the
        # search is continued again; otherwise only a finished one is.
        if run.info.status != "FINISHED" and not continued:
            raise ConfigError(f"{experiment.name}: search run {record['run_id']} is "
                              f"{run.info.status}, not FINISHED: resume it with --restore "
                              "before --more-trials")
        if prefix is None:
            raise ConfigError(f"search run {record['run_id']} has no Optuna studies to continue")
    return record, prefix


def tag_studies(uri: str, parent: ParentRun, optuna_url: str, sampler: str) -> None:
    """Where the parent run's studies are and which sampler drives them."""
    client = open_store(uri)
    client.set_tag(parent.run_id, schema.OPTUNA_STORAGE, public_url(optuna_url))
    client.set_tag(parent.run_id, schema.OPTUNA_STUDY, str(parent.study_prefix))
    client.set_tag(parent.run_id, schema.SAMPLER, describe_sampler(sampler))


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
