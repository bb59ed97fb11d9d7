"""`wsol evaluate` reads test twice from one inference pass: with the normalisation train-fullsup
selected, and with min-max alone (the papers' numbers), logged as `test/minmax_<metric>`. The
min-max numbers must equal scoring the same checkpoint's maps with min-max as the selected
normalisation, and Loc of min-max maps is read only at a threshold chosen on train-fullsup.
Real MLflow on SQLite, a real trial's checkpoint, no Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from wsol.cli import main
from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.lifecycle.evaluate import evaluate_model
from wsol.lifecycle.final_evaluation import evaluate_checkpoint
from wsol.trial.config import TrialConfig
from wsol.trial.evaluation import minmax_key
from wsol.trial.runner import run_trial

LOC = protocol.LOCALIZATION


@pytest.fixture(scope="module")
def state(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The best.pt of one epoch of CAM on the tiny synthetic benchmark (boxes and masks)."""
    out = tmp_path_factory.mktemp("trial")
    run_trial(TrialConfig(data_root=str(tiny_synth), epochs=1, resize=36, crop=32, eval_size=32,
                          batch_size=8, ivr_percentiles=[30.0]), out, log=lambda line: None)
    return torch.load(out / "best.pt", weights_only=True)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("searches", artifact_location=str(tmp_path / "artifacts"))
    return client


def with_choices(state: dict[str, Any], **metrics: Any) -> dict[str, Any]:
    """The checkpoint with these choices, and no min-max numbers of train-fullsup but the
    given ones (whatever the trial recorded)."""
    kept = {k: v for k, v in state["metrics"].items() if not k.startswith("minmax_")}
    return {**state, "metrics": {**kept, **metrics}}


def trial_run(client: MlflowClient, state: dict[str, Any], folder: Path) -> str:
    """A finished trial run whose checkpoint/best.pt is `state`, tagged with its choices."""
    path = folder / "checkpoint" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    metrics = state["metrics"]
    experiment = client.get_experiment_by_name("searches").experiment_id
    run_id = client.create_run(experiment, tags={
        schema.KIND: schema.TRIAL, schema.METHOD: "cam", schema.BACKBONE: "tiny",
        schema.DATASET: "synthetic", schema.SELECTED_ON: "train-fullsup",
        **{schema.selected(k): str(metrics[k]) for k in schema.CHOICES}}).info.run_id
    client.log_metric(run_id, schema.SCORE, float(metrics["score"]))
    client.log_artifact(run_id, str(path), schema.CHECKPOINT_FOLDER)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def logged(client: MlflowClient, evaluation_run_id: str) -> dict[str, float]:
    return client.get_run(evaluation_run_id).data.metrics


def minmax_alone(state: dict[str, Any], threshold: float) -> dict[str, float]:
    """The checkpoint's test metrics with min-max as its selected normalisation."""
    score, _ = evaluate_checkpoint(with_choices(state, normalisation="minmax", percentile=None,
                                                threshold=threshold), device="cpu")
    return {k: v for k, v in score.metrics.items() if not k.startswith("minmax_")}


def test_evaluate_logs_and_prints_min_max_beside_the_selected_normalisation(
        client, state, tmp_path, capsys):
    """Selected `max`, no min-max threshold recorded: the min-max box and mask numbers, no Loc."""
    chosen = with_choices(state, normalisation="max", percentile=None)
    run_id = trial_run(client, chosen, tmp_path)
    assert main(["evaluate", "--tracking-uri", client.tracking_uri, "--model", run_id,
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    (evaluation,) = client.search_runs(
        [client.get_experiment_by_name("searches").experiment_id],
        f"tags.`{schema.KIND}` = 'evaluation'")
    metrics = logged(client, evaluation.info.run_id)
    expected = minmax_alone(state, float(chosen["metrics"]["threshold"]))
    scored = [k for k in expected if k not in LOC]
    assert {protocol.MAX_BOX_ACC, protocol.MAX_BOX_ACC_V2, protocol.PXAP} <= set(scored)
    assert {k: metrics[schema.test_metric(minmax_key(k))] for k in scored} == \
        pytest.approx({k: expected[k] for k in scored})
    assert not [k for k in metrics if k.startswith("test/minmax_") and k.endswith("_loc")]
    # The selected normalisation's numbers are not min-max's: the check above can fail.
    assert {k: metrics[schema.test_metric(k)] for k in scored} != \
        pytest.approx({k: expected[k] for k in scored})
    for key in (protocol.MAX_BOX_ACC_V2, minmax_key(protocol.MAX_BOX_ACC_V2)):
        value = metrics[schema.test_metric(key)]
        assert f"{key:<28} {value:.4f}" in printed.splitlines()
    assert f"{'minmax_threshold':<28} None" in printed.splitlines()


def test_min_max_loc_is_read_at_its_train_fullsup_threshold(client, state, tmp_path):
    chosen = with_choices(state, normalisation="max", percentile=None,
                          **{minmax_key(protocol.threshold_key(protocol.MAX_BOX_ACC)): 0.3})
    result = evaluate_model(client, trial_run(client, chosen, tmp_path), device="cpu")
    assert result["minmax_threshold"] == 0.3
    metrics = logged(client, result["evaluation_run_id"])
    expected = minmax_alone(state, 0.3)
    assert set(LOC) <= set(expected)
    assert {k: metrics[schema.test_metric(minmax_key(k))] for k in expected} == \
        pytest.approx(expected)


def test_min_max_selected_logs_the_same_numbers_twice(client, state, tmp_path):
    chosen = with_choices(state, normalisation="minmax", percentile=None)
    result = evaluate_model(client, trial_run(client, chosen, tmp_path), device="cpu")
    metrics = logged(client, result["evaluation_run_id"])
    selected = {k[len("test/"):]: v for k, v in metrics.items()
                if k.startswith("test/") and not k.startswith("test/minmax_")}
    assert set(LOC) <= set(selected)
    assert {k: metrics[f"test/minmax_{k}"] for k in selected} == selected
    assert result["minmax_threshold"] == float(chosen["metrics"]["threshold"])
