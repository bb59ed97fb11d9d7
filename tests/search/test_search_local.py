"""A real (small) search: local Ray, Optuna, MLflow on SQLite; a failing trial fails alone;
the console shows the search, not Ray; the parent run ends with the search."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from small_search import small_experiment

from wsol.common import tracking_schema as schema
from wsol.lifecycle.promote import promote
from wsol.search import runner
from wsol.search.experiment import experiment_from_dict
from wsol.search.parent_run import summary_markdown
from wsol.search.progress import SearchProgress
from wsol.search.runner import run_search

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.e2e
def test_search_records_parent_children_and_the_failure(tiny_synth: Path, tmp_path: Path,
                                                        local_ray: None,
                                                        capfd: pytest.CaptureFixture) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    shutil.copy(SPACES / "base.yaml", spaces)
    shutil.copy(SPACES / "cam.yaml", spaces)
    (spaces / "bgc.yaml").write_text(
        "method: bgc\nextends: base.yaml\nfixed: {lambda_drop: .nan, warm: 0}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(small_experiment(
        "test-search", tiny_synth, tmp_path, trial={"epochs": 2}, methods=["cam", "bgc"],
        trials_per_pair=2, max_concurrent=2, search_spaces=str(spaces), tracking_uri=uri))
    capfd.readouterr()
    summary = run_search(experiment)
    console = capfd.readouterr()
    assert summary["trials"] == 4 and summary["failed"] == 2
    assert set(summary["best"]) == {"cam/tiny"}

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("test-search").experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if r.data.tags.get("wsol.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("wsol.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].data.tags["wsol.dataset_fingerprint"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["wsol.selection_split"] == "train-fullsup"
        if child.data.tags["wsol.method"] == "cam":
            assert child.info.status == "FINISHED"
            assert child.data.tags["wsol.selected_on"] == "train-fullsup"
            assert "selected/MaxBoxAccV2" in child.data.metrics
            assert "lr" in child.data.params
            history = client.get_metric_history(child.info.run_id, "train_fullsup/score")
            assert [m.step for m in history] == [0, 1]
            artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"checkpoint", "overlays.png", "curves.png", "metrics.json"} <= artifacts
        else:
            assert child.info.status == "FAILED"
            assert "non-finite loss" in child.data.tags["wsol.failure_reason"]
    # Failed trials too carry only what the tracking schema declares.
    for run in runs:
        record = schema.SCHEMA[run.data.tags[schema.KIND]]
        assert [record.undeclared(part, keys) for part, keys in (
            ("tags", run.data.tags), ("params", run.data.params),
            ("metrics", run.data.metrics))] == [[], [], []]

    # The parent run ends with the search and holds its result.
    parent = client.get_run(parents[0].info.run_id)
    assert parent.info.status == "FINISHED" and parent.info.end_time
    best_cam = summary["best"]["cam/tiny"]
    assert parent.data.metrics["best/cam/tiny"] == pytest.approx(best_cam["score"])
    assert not any(k.startswith("best/bgc") for k in parent.data.metrics)  # none finished
    assert parent.data.metrics["trials_failed"] == 2
    assert {"summary.md", "summary.json"} <= {a.path for a in client.list_artifacts(
        parent.info.run_id)}
    table = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path)))
    assert f"#/experiments/{experiment_id}/runs/{best_cam['run_id']}" in table.read_text()
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"

    # The promoted model version links its trial run and its search in the MLflow UI.
    promotion = promote(client, "cam", "tiny")
    described = client.get_model_version(promotion.name, promotion.version).description
    assert promotion.run_id == best_cam["run_id"]
    for run_id in (promotion.run_id, parent.info.run_id):
        assert f"(#/experiments/{experiment_id}/runs/{run_id}?" in described, described
    assert "[cam/tiny #0" in described

    # Trial runs are named by what they are, numbered per pair in the order they started.
    names = sorted(r.info.run_name for r in children)
    assert names == ["bgc/tiny #01", "bgc/tiny #02", "cam/tiny #01", "cam/tiny #02"]
    by_start = sorted((r for r in children if r.data.tags["wsol.method"] == "cam"),
                      key=lambda r: r.info.start_time)
    assert [r.info.run_name for r in by_start] == ["cam/tiny #01", "cam/tiny #02"]

    # The console: the search's own lines; Ray's and Tune's go to the log file it names.
    out = console.out + console.err
    assert "Checkpoint successfully created" not in out
    assert "snapshotting" not in out
    assert "Trial status" not in out and "search_trial_" not in out  # no Tune table
    for name in ("cam/tiny #01", "cam/tiny #02"):
        assert re.search(rf"^{name} finished: train-fullsup MaxBoxAccV2 [\d.]+ \(epoch \d, ",
                         out, re.M), out
    assert re.search(r"^bgc/tiny #0\d failed: .*non-finite loss", out, re.M), out
    elapsed = r"^\[(?:\d+m)?\d+s\] "  # [42s] or, on a slow machine, [1m08s]
    assert re.search(elapsed + r"4/4 trials done \(0 stopped early, 2 failed\)", out, re.M), out
    log = tmp_path / "ray" / "test-search" / "search.log"
    assert f"Ray, Tune and trial output: {log}" in out
    assert "Checkpoint successfully created" in log.read_text()
    assert "snapshotting has been triggered" not in log.read_text()
    assert len(out.splitlines()) < 30, out


class _FailingTuner:
    """Stands in for tune.Tuner: the fit raises as a broken search or a Ctrl+C would."""

    error: BaseException = RuntimeError("boom")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def fit(self) -> None:
        raise self.error

    @staticmethod
    def can_restore(path: str) -> bool:  # no saved search of this name yet
        return False


@pytest.mark.e2e
@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "FAILED"),
                                               (KeyboardInterrupt(), "KILLED")])
def test_parent_run_ends_when_the_search_raises(error: BaseException, status: str,
                                                tiny_synth: Path, tmp_path: Path,
                                                local_ray: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict(small_experiment("raises", tiny_synth, tmp_path,
                                                       tracking_uri=uri))
    monkeypatch.setattr(_FailingTuner, "error", error)
    monkeypatch.setattr(runner.tune, "Tuner", _FailingTuner)
    with pytest.raises(type(error)):
        run_search(experiment)
    client = MlflowClient(uri)
    [parent] = client.search_runs([client.get_experiment_by_name("raises").experiment_id])
    assert parent.info.status == status and parent.info.end_time
    assert type(error).__name__ in parent.data.tags["wsol.end_reason"]


def test_summary_table_links_the_best_trials() -> None:
    text = summary_markdown({"name": "s", "experiment_id": "7", "trials": 3, "failed": 1,
                             "pairs": {"cam/tiny": {"finished": 1, "stopped": 1, "failed": 1}},
                             "best": {"cam/tiny": {"score": 41.66, "run_id": "abc",
                                                   "run_name": "cam/tiny #02"}}}, "FINISHED")
    assert "| cam/tiny | 41.66 | [cam/tiny #02](#/experiments/7/runs/abc?" in text
    assert "| 1 / 1 / 1 |" in text


class _Names:
    """Stands in for the MLflow callback, which names the trials' runs."""

    def name_of(self, trial: Any) -> str:
        return f"cam/tiny #{trial.trial_id}"


def _trial(trial_id: str, status: str, **result: Any) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, status=status, config={"pair": "cam/tiny"},
                           run_metadata=SimpleNamespace(last_result=result), error_file=None)


def test_progress_lines_tell_finished_stopped_and_failed_trials(
        capsys: pytest.CaptureFixture) -> None:
    progress = SearchProgress({"cam/tiny": 4}, {"cam/tiny": {"epochs": 6}}, _Names())
    progress.setup()
    best = {"is_best": True, "epoch": 1, "best_score": 41.67, "normalisation": "ivr",
            "percentile": 30.0, "MaxBoxAccV2": 41.67}
    finished = _trial("01", "TERMINATED", **{**best, "epoch": 5, "is_best": False,
                                             "time_total_s": 52.2})
    stopped = _trial("02", "TERMINATED", **{**best, "time_total_s": 9.0})
    failed = _trial("03", "ERROR")
    running = _trial("04", "RUNNING", epoch=2, best_score=12.5)
    progress.on_trial_result(0, [], finished, {**best})
    progress.on_trial_complete(0, [], finished)
    progress.on_trial_result(0, [], stopped, {**best})
    progress.on_trial_complete(0, [], stopped)
    progress.on_trial_error(0, [], failed)
    progress.on_experiment_end([finished, stopped, failed, running])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("cam/tiny #01 finished: train-fullsup MaxBoxAccV2 41.67 (epoch 2, "
                      "ivr@30), 52 s")
    assert out[1] == ("cam/tiny #02 stopped early after epoch 2/6: train-fullsup MaxBoxAccV2 "
                      "41.67 (epoch 2, ivr@30), 9 s")
    assert out[2] == "cam/tiny #03 failed: see the log"
    assert re.fullmatch(r"\[\d+s\] 3/4 trials done \(1 stopped early, 1 failed\), 1 running; "
                        r"search ended", out[3])
    assert out[4].split() == ["cam/tiny", "3/4", "done,", "1", "running", "best", "41.67",
                              "cam/tiny", "#01"]
