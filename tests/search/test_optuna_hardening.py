"""What keeps the persisted studies safe and a search's state honest: no RDB password reaches
MLflow, a report to an Optuna trial that already ended is skipped, trials left RUNNING are
marked FAIL when the search ends, the searcher's saved state is data (JSON), never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search.optuna import OptunaSearch
from small_search import SPACES, small_experiment

from wsol.common import tracking_schema as schema
from wsol.search.experiment import experiment_from_dict
from wsol.search.pairs import PairedSearcher
from wsol.search.parent_run import start_search_run
from wsol.search.runner import logged_experiment
from wsol.search.space import load_search_space
from wsol.search.studies import StudyTaken, fail_running, open_storage, prepare_study, public_url


@pytest.mark.parametrize("url, public", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:secret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    ("mysql://u@h/db?sslmode=x&password=secret", "mysql://u@h/db?sslmode=x&password=***"),
    ("sqlite:////tmp/o.db", "sqlite:////tmp/o.db"),
])
def test_public_url_masks_passwords(url: str, public: str) -> None:
    assert public_url(url) == public


def test_the_parent_run_never_records_the_rdb_password(tmp_path: Path) -> None:
    experiment = experiment_from_dict(small_experiment(
        "masked", tmp_path / "data", tmp_path, optuna_storage="postgresql://u:secret@h/db"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, run_id = start_search_run(uri, logged_experiment(experiment), {}, "fingerprint")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.params["optuna_storage"] == "postgresql://u:***@h/db"
    recorded = json.dumps([run.data.params, run.data.tags])
    path = client.download_artifacts(run_id, schema.EXPERIMENT_JSON, str(tmp_path))
    assert "secret" not in recorded + Path(path).read_text()


def _searcher(storage: optuna.storages.BaseStorage) -> tuple[PairedSearcher, optuna.Study]:
    study = optuna.create_study(storage=storage, study_name="s/cam/tiny", direction="maximize")
    search = OptunaSearch(lambda trial: {"lr": trial.suggest_float("lr", 1e-4, 1e-1)},
                          metric="score", mode="max", study_name="s/cam/tiny", storage=storage)
    return PairedSearcher({"cam/tiny": search}, {"cam/tiny": 2}, "score", "max",
                          run_of=lambda trial_id: f"run-{trial_id}"), study


def test_reports_to_an_ended_optuna_trial_are_skipped(tmp_path: Path) -> None:
    # As after --restore: Tune's searcher snapshot still has the trial open, the study
    # already told it (the driver died between the two).
    searcher, study = _searcher(open_storage(str(tmp_path / "optuna.journal")))
    assert searcher.suggest("t1")["pair"] == "cam/tiny"
    study.tell(study.trials[0].number, 0.5)
    searcher.on_trial_result("t1", {"score": 0.7, "training_iteration": 1})
    searcher.on_trial_complete("t1", {"score": 0.7, "training_iteration": 1})
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5


def test_optuna_trials_left_running_are_failed(tmp_path: Path) -> None:
    searcher, study = _searcher(open_storage(str(tmp_path / "optuna.journal")))
    searcher.suggest("t1")
    searcher.suggest("t2")
    searcher.on_trial_complete("t2", {"score": 0.7, "training_iteration": 1})
    assert fail_running({"cam/tiny": study}) == 1
    states = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert states["t1"].state == optuna.trial.TrialState.FAIL
    assert "ended" in states["t1"].user_attrs["end_reason"]
    assert states["t2"].state == optuna.trial.TrialState.COMPLETE


def test_a_new_search_never_takes_over_an_existing_study(tmp_path: Path) -> None:
    # The storage decides (two drivers on one RDB may both have seen the name free): the
    # runner then falls back to `<name>~<run id>`.
    storage = open_storage(str(tmp_path / "optuna.journal"))
    optuna.create_study(storage=storage, study_name="s/cam/tiny")
    space = load_search_space(SPACES / "cam.yaml")
    with pytest.raises(StudyTaken, match="exists already"):
        prepare_study(storage, "s", "cam/tiny", "tpe", space, "run", resume=False)
    assert optuna.load_study(study_name="s/cam/tiny", storage=storage).user_attrs == {}
    assert prepare_study(storage, "s~run", "cam/tiny", "tpe", space, "run", resume=False)


def test_the_searcher_state_round_trips_as_json(tmp_path: Path) -> None:
    """Saved by one driver, restored onto the searcher a restored Tune run brings back (a
    fresh one on the same study): which Optuna trial each Tune trial is, what was told."""
    storage = open_storage(str(tmp_path / "optuna.journal"))
    searcher, study = _searcher(storage)
    searcher.suggest("t1")
    searcher.suggest("t2")
    searcher.on_trial_result("t1", {"score": 0.3, "training_iteration": 1})
    searcher.on_trial_complete("t2", {"score": 0.7, "training_iteration": 1})
    path = tmp_path / "searcher-state.pkl"
    searcher.save(str(path))
    json.loads(path.read_text())  # plain data
    search = OptunaSearch(lambda trial: {"lr": trial.suggest_float("lr", 1e-4, 1e-1)},
                          metric="score", mode="max", study_name="s/cam/tiny", storage=storage)
    restored = PairedSearcher({"cam/tiny": search}, {"cam/tiny": 2}, "score", "max")
    restored.restore(str(path))
    assert restored.remaining == {"cam/tiny": 0}
    assert restored.owner == {"t1": "cam/tiny", "t2": "cam/tiny"}
    assert restored.linked == {"t1", "t2"}
    assert search._completed_trials == {"t2"}
    restored.on_trial_complete("t1", {"score": 0.4, "training_iteration": 2})
    values = {t.user_attrs["ray_trial_id"]: t.value for t in study.trials}
    assert values == {"t1": 0.4, "t2": 0.7}


def test_a_planted_pickle_is_refused_without_running(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "searcher-state.pkl"
    path.write_bytes(pickle.dumps({"remaining": Payload()}))
    searcher, _ = _searcher(open_storage(str(tmp_path / "optuna.journal")))
    with pytest.raises(ValueError, match="not a searcher state this version wrote"):
        searcher.restore(str(path))
    assert not marker.exists()
