"""The Optuna side of a search persists: a finished search's studies open with Optuna's own
API from their storage, every trial names its MLflow run and Tune trial, the parent run names
the studies and carries their plots, and a later search continues them (warm start); with an
RDB storage the search's saved state keeps no password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from servers import postgres_server

from wsol.common import tracking_schema as schema
from wsol.search import starts
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search
from wsol.search.studies import JOURNAL_NAME, MLFLOW_RUN_ATTR, RAY_TRIAL_ATTR
from wsol.trial.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _values(tiny_synth: Path, tmp: Path, **changes: Any) -> dict[str, Any]:
    return {
        "name": "studies", "dataset": "synthetic", "data_root": str(tiny_synth),
        "synthetic_preset": None, "methods": ["cam"], "backbones": ["tiny"],
        "trials_per_pair": 3, "max_concurrent": 2, "scheduler": {"type": "fifo"},
        "sampler": "tpe",
        "search_spaces": str(REPO / "search_spaces"), "storage_path": str(tmp / "ray"),
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "trial": {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "epochs": 1,
                  "ivr_percentiles": [30.0]},
        **changes,
    }


def _children(client: MlflowClient, parent: str, experiment_id: str) -> dict[str, Any]:
    runs = client.search_runs([experiment_id], f"tags.`{schema.PARENT}` = '{parent}'")
    return {r.info.run_id: r for r in runs}


@pytest.mark.e2e
def test_studies_persist_link_mlflow_and_continue(tiny_synth: Path, tmp_path: Path,
                                                  local_ray: None) -> None:
    experiment = experiment_from_dict(_values(tiny_synth, tmp_path))
    summary = run_search(experiment)
    uri = summary["tracking_uri"]
    client = MlflowClient(uri)
    parent = client.get_run(summary["parent_run_id"])
    journal = tmp_path / "ray" / "studies" / JOURNAL_NAME
    assert parent.data.tags[schema.OPTUNA_STORAGE] == str(journal)
    assert parent.data.tags[schema.OPTUNA_STUDY] == "studies"
    assert parent.data.tags[schema.SAMPLER].startswith("tpe")
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, schema.OPTUNA_FOLDER)}
    assert f"{schema.OPTUNA_FOLDER}/cam-tiny_history.png" in plots

    # Optuna's API alone, on the storage: every trial with its MLflow run and Tune trial.
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="studies/cam/tiny", storage=storage)
    children = _children(client, parent.info.run_id, summary["experiment_id"])
    assert len(study.trials) == 3 == len(children)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        run = children[trial.user_attrs[MLFLOW_RUN_ATTR]]
        assert run.data.tags[schema.RAY_TRIAL_ID] == trial.user_attrs[RAY_TRIAL_ATTR]
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
    assert {t.user_attrs[MLFLOW_RUN_ATTR] for t in study.trials} == set(children)

    # --restore without the journal (S3 storage, restored on another head) is refused up
    # front; warm start wants a finished parent run.
    journal.rename(journal.with_suffix(".away"))
    with pytest.raises(ConfigError, match=f"journal {journal}, which is missing"):
        run_search(experiment, restore=True)
    journal.with_suffix(".away").rename(journal)
    client.set_terminated(parent.info.run_id, "KILLED")
    with pytest.raises(ConfigError, match="not FINISHED: resume it with --restore"):
        run_search(experiment, more_trials=1)
    client.set_terminated(parent.info.run_id, "FINISHED")

    # Warm start, with another sampler: two more trials in the same study and parent run.
    more = experiment_from_dict(_values(tiny_synth, tmp_path, sampler="gp"))
    continued = run_search(more, more_trials=2)
    assert continued["parent_run_id"] == parent.info.run_id
    assert continued["trials"] == 5 and continued["pairs"]["cam/tiny"]["trials"] == 5
    study = optuna.load_study(study_name="studies/cam/tiny", storage=storage)
    children = _children(client, parent.info.run_id, summary["experiment_id"])
    assert len(study.trials) == 5 == len(children)
    assert {t.user_attrs[MLFLOW_RUN_ATTR] for t in study.trials} == set(children)
    numbers = sorted(int(r.data.tags[schema.TRIAL_NUMBER]) for r in children.values())
    assert numbers == [1, 2, 3, 4, 5]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[schema.SAMPLER].startswith("gp")
    assert parent.data.metrics[schema.TRIALS] == 5
    assert parent.data.metrics[schema.best_metric("cam/tiny")] == max(
        t.value for t in study.trials)
    # --restore would resume the original Tune run, not the continuation: refused.
    with pytest.raises(ConfigError, match="cannot be restored: run --more-trials again"):
        run_search(experiment, restore=True)

    # A continued search keeps its space: another lr range is refused before anything runs.
    narrowed = experiment_from_dict(_values(tiny_synth, tmp_path,
                                            param_ranges={"lr": {"low": 1e-3, "high": 1e-2}}))
    with pytest.raises(ConfigError, match="another space"):
        run_search(narrowed, more_trials=1)
    assert len(optuna.load_study(study_name="studies/cam/tiny", storage=storage).trials) == 5

    # A new search of the same name, its studies in the same storage: studies of its own.
    again = run_search(experiment_from_dict(_values(
        tiny_synth, tmp_path, storage_path=str(tmp_path / "again"), trials_per_pair=1,
        optuna_storage=str(journal))))
    prefix = client.get_run(again["parent_run_id"]).data.tags[schema.OPTUNA_STUDY]
    assert prefix == f"studies~{again['parent_run_id'][:8]}"
    assert len(optuna.load_study(study_name=f"{prefix}/cam/tiny", storage=storage).trials) == 1
    assert len(optuna.load_study(study_name="studies/cam/tiny", storage=storage).trials) == 5


def test_a_storage_that_does_not_open_is_refused_before_the_parent_run(
        tiny_synth: Path, tmp_path: Path) -> None:
    experiment = experiment_from_dict(_values(
        tiny_synth, tmp_path, name="unreachable",
        optuna_storage="postgresql://u:secret@127.0.0.1:1/db"))
    with pytest.raises(ConfigError, match="optuna_storage postgresql://u:\\*\\*\\*@") as error:
        run_search(experiment)
    assert "secret" not in str(error.value)
    assert MlflowClient(experiment.tracking_uri).get_experiment_by_name("unreachable") is None


@pytest.mark.e2e
def test_the_saved_search_state_holds_no_rdb_password(tiny_synth: Path, tmp_path: Path,
                                                      local_ray: None) -> None:
    """Tune pickles the searcher, and its Optuna storage with it, into the search's state on
    storage_path (tuner.pkl, the searcher's checkpoint), which may be a shared bucket. With
    a real PostgreSQL storage: those files hold its URL without the password; a process
    that did not open the storage says so instead of connecting with '***'; --restore
    (which opens it from the experiment first) reconnects and ends the search again."""
    password = "pg-secret-5d1e"
    (tmp_path / "pg").mkdir()
    with postgres_server(tmp_path / "pg") as template:
        url = template.format(password=password)
        experiment = experiment_from_dict(_values(tiny_synth, tmp_path, name="pg",
                                                  trials_per_pair=1, optuna_storage=url))
        summary = run_search(experiment)
        saved = [p for p in (tmp_path / "ray").rglob("*") if p.is_file()]
        tuner = next(p for p in saved if p.name == "tuner.pkl")
        assert b"postgres:***@" in tuner.read_bytes()
        assert [p for p in saved if password.encode() in p.read_bytes()] == []

        elsewhere = subprocess.run(
            [sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
             str(tuner)], capture_output=True, text=True, timeout=300)
        assert elsewhere.returncode != 0
        assert "names the Optuna storage postgresql+psycopg2://postgres:***@" in \
            elsewhere.stderr and "without its password" in elsewhere.stderr

        again = run_search(experiment, restore=True)
        assert again["parent_run_id"] == summary["parent_run_id"]
        study = optuna.load_study(study_name="pg/cam/tiny", storage=url)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
        parent = MlflowClient(summary["tracking_uri"]).get_run(summary["parent_run_id"])
        assert parent.info.status == "FINISHED"
        assert password not in json.dumps([parent.data.params, parent.data.tags])


@pytest.mark.e2e
def test_a_study_another_search_took_meanwhile_gets_the_search_a_name_of_its_own(
        tiny_synth: Path, tmp_path: Path, local_ray: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches of one name starting at once on a shared storage: both find the name
    free, the other one creates its study first. Made to happen every time: the other
    search's study is created right after this search found the name free. This search
    then takes the name with its parent run's id and runs as usual."""
    journal = tmp_path / "shared.journal"
    find_prefix = starts._study_prefix

    def then_taken(storage: optuna.storages.BaseStorage, name: str, run_id: str) -> str:
        prefix = find_prefix(storage, name, run_id)
        optuna.create_study(storage=storage, study_name=f"{prefix}/cam/tiny")
        return prefix

    monkeypatch.setattr(starts, "_study_prefix", then_taken)
    experiment = experiment_from_dict(_values(tiny_synth, tmp_path, name="raced",
                                              trials_per_pair=1, optuna_storage=str(journal)))
    summary = run_search(experiment)
    parent = MlflowClient(summary["tracking_uri"]).get_run(summary["parent_run_id"])
    prefix = f"raced~{summary['parent_run_id'][:8]}"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[schema.OPTUNA_STUDY] == prefix
    storage = JournalStorage(JournalFileBackend(str(journal)))
    assert len(optuna.load_study(study_name=f"{prefix}/cam/tiny", storage=storage).trials) == 1
    assert optuna.load_study(study_name="raced/cam/tiny", storage=storage).trials == []
