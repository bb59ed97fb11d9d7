"""A search's rounds and names: a --more-trials round retires only runs of its own Tune run
(round one stays as it ended, failed trials included), and a new search never takes over
the saved state of another search of its name."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from small_search import small_experiment

from wsol.common import tracking_schema as schema
from wsol.search import starts
from wsol.search.experiment import experiment_from_dict
from wsol.search.pair_spaces import load_spaces
from wsol.search.pairs import PAIR_KEY
from wsol.search.trial_callback import MLflowTrialCallback, TrialInfo
from wsol.trial.config import ConfigError


def _trial_run(client: MlflowClient, experiment_id: str, parent: str, trial_id: str,
               status: str, tune_run: str | None) -> str:
    tags = {schema.PARENT: parent, schema.RAY_TRIAL_ID: trial_id, schema.KIND: schema.TRIAL}
    if tune_run is not None:
        tags[schema.TUNE_RUN] = tune_run
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def test_a_continuation_retires_only_runs_of_its_own_tune_run(tmp_path: Path) -> None:
    """Round one (this version's runs, tagged with its Tune run, and an older version's,
    untagged), FINISHED and FAILED, is unknown to the continuation's Tune run: it keeps its
    status, its runs and no orphan tag. A run the continuation's own dead driver left is
    still retired. New runs carry their Tune run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        "rounds", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={schema.KIND: schema.SEARCH}).info.run_id
    round_one = {_trial_run(client, experiment_id, parent, f"a{i}", status, tune_run): status
                 for i, (status, tune_run) in enumerate([
                     ("FINISHED", "rounds"), ("FAILED", "rounds"), ("FINISHED", None),
                     ("FAILED", None)])}
    continuation = "rounds+20250101-120000"
    left = _trial_run(client, experiment_id, parent, "b-left", "RUNNING", continuation)
    callback = MLflowTrialCallback(uri, experiment_id, parent, "synthetic", continuation)
    new = callback._run_for(TrialInfo("b0", {PAIR_KEY: "cam/tiny", "lr": 0.1}, "b0"))
    assert client.get_run(new).data.tags[schema.TUNE_RUN] == continuation

    callback._retire_orphans({"b0"})
    for run_id, status in round_one.items():
        run = client.get_run(run_id)
        assert (run.info.status, run.info.lifecycle_stage) == (status, "active")
        assert schema.ORPHANED not in run.data.tags
    gone = client.get_run(left)
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags[schema.ORPHANED]
    assert client.get_run(new).info.lifecycle_stage == "active"


def test_a_new_search_refuses_the_saved_search_of_its_name(tiny_synth: Path,
                                                           tmp_path: Path) -> None:
    """Where a search of this name left its restore state, a new search stops before its
    parent run, saying what to type; the saved record and tuner.pkl stay as they were."""
    experiment = experiment_from_dict(small_experiment("taken", tiny_synth, tmp_path,
                                                       tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    saved = tmp_path / "ray" / "taken"
    saved.mkdir(parents=True)
    (saved / "tuner.pkl").write_bytes(b"the first search's")
    record = {"experiment_id": "1", "run_id": "0" * 32}
    (saved / "wsol_parent_run.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError) as refused:
        starts.start_new(experiment, load_spaces(experiment), experiment.tracking_uri,
                         str(saved), optuna.storages.InMemoryStorage(), {})
    line = str(refused.value)
    assert line.startswith(f"taken: {saved} already holds a search of this name") and \
        "\n" not in line
    for option in ("--more-trials N", "--restore", "another `name:`"):
        assert option in line
    assert json.loads((saved / "wsol_parent_run.json").read_text()) == record
    assert (saved / "tuner.pkl").read_bytes() == b"the first search's"
    assert MlflowClient(experiment.tracking_uri).get_experiment_by_name("taken") is None
