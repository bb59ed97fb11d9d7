"""`wsol promote` refuses what it must (real MLflow on SQLite, hand-made trial runs), and only
`wsol evaluate` can reach the code that opens a test split."""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from wsol.lifecycle.promote import PromotionError, promote

PACKAGE = Path(__file__).resolve().parents[2] / "wsol"


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("searches", artifact_location=str(tmp_path / "artifacts"))
    return client


def trial(client: MlflowClient, score: float, dataset: str = "cub", status: str = "FINISHED",
          selected_on: str = "train-fullsup", reason: str | None = None,
          pxap: float | None = None, parent: str | None = None) -> str:
    experiment = client.get_experiment_by_name("searches").experiment_id
    tags = {"wsol.kind": "trial", "wsol.method": "cam", "wsol.backbone": "vgg16",
            "wsol.dataset": dataset, "wsol.selected_on": selected_on,
            "wsol.selected_selection_metric": "MaxBoxAccV2", "wsol.selected_threshold": "0.25",
            "wsol.selected_normalisation": "minmax"}
    if reason:
        tags["wsol.failure_reason"] = reason
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(experiment, tags=tags).info.run_id
    client.log_metric(run_id, "selected/score", score)
    client.log_metric(run_id, "selected/MaxBoxAccV2", score)
    if pxap is not None:
        client.log_metric(run_id, "selected/PxAP", pxap)
    with tempfile.TemporaryDirectory() as tmp:  # promote hashes it; its content is not read
        (Path(tmp) / "best.pt").write_text(f"weights of {run_id}")
        client.log_artifact(run_id, str(Path(tmp) / "best.pt"), "checkpoint")
    client.set_terminated(run_id, status)
    return run_id


def test_failed_runs_are_refused_with_the_reason(client):
    trial(client, 70.0, status="FAILED", reason="NonFiniteLossError: non-finite loss")
    with pytest.raises(PromotionError, match="FAILED: NonFiniteLossError"):
        promote(client, "cam", "vgg16")
    kept = trial(client, 60.0)
    assert promote(client, "cam", "vgg16").run_id == kept  # the failed 70 is never chosen


def test_runs_not_selected_on_train_fullsup_are_refused(client):
    run_id = trial(client, 80.0, selected_on="test")
    with pytest.raises(PromotionError, match="selected on 'test', not train-fullsup"):
        promote(client, "cam", "vgg16")
    with pytest.raises(PromotionError, match="selected on 'test'"):
        promote(client, run_id=run_id)


def test_ambiguous_choices_are_refused(client):
    trial(client, 60.0, dataset="cub")
    imagenet = trial(client, 50.0, dataset="imagenet")
    with pytest.raises(PromotionError, match="datasets \\['cub', 'imagenet'\\]; pass --dataset"):
        promote(client, "cam", "vgg16")
    assert promote(client, "cam", "vgg16", dataset="imagenet").run_id == imagenet
    trial(client, 60.0, dataset="cub")
    with pytest.raises(PromotionError, match=r"tie at 60\.0000 on every train-fullsup metric"):
        promote(client, "cam", "vgg16", dataset="cub")


def test_equal_scores_are_told_apart_by_the_other_train_fullsup_metrics(client):
    trial(client, 60.0, pxap=40.0)
    better = trial(client, 60.0, pxap=41.0)
    assert promote(client, "cam", "vgg16").run_id == better


def search_run(client: MlflowClient, fingerprint: str) -> str:
    experiment_id = client.get_experiment_by_name("searches").experiment_id
    return client.create_run(experiment_id, tags={
        "wsol.kind": "search", "wsol.dataset_fingerprint": fingerprint}).info.run_id


def test_search_option_picks_one_search_among_data_versions(client):
    old, new = search_run(client, "v1"), search_run(client, "v2")
    trial(client, 70.0, parent=old)
    best_new = trial(client, 60.0, parent=new)
    trial(client, 50.0, parent=new)
    with pytest.raises(PromotionError, match="2 different metadata versions; pass --search"):
        promote(client, "cam", "vgg16")
    assert promote(client, "cam", "vgg16", searches=[new]).run_id == best_new
    with pytest.raises(ValueError, match=f"run {best_new} is not a search's parent run"):
        promote(client, "cam", "vgg16", searches=[best_new])
    from wsol.lifecycle.report import collect

    (only_new,) = collect(client, None, [new])
    assert len(only_new.trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in only_new.trials} == {new}
    (everything,) = collect(client, None)
    assert len(everything.trials) == 3


def test_nothing_to_promote_and_mismatched_run(client):
    with pytest.raises(PromotionError, match="no trial runs for method 'cam'"):
        promote(client, "cam", "vgg16")
    run_id = trial(client, 60.0)
    with pytest.raises(PromotionError, match="is backbone 'vgg16', not 'resnet50'"):
        promote(client, "cam", "resnet50", run_id=run_id)


def test_only_the_final_evaluation_opens_a_test_split():
    """allow_test=True appears once in the package (wsol/lifecycle/final_evaluation.py), and
    only the evaluate command calls that module."""
    def opens_test(path: Path) -> bool:
        return any(isinstance(node, ast.keyword) and node.arg == "allow_test"
                   and not (isinstance(node.value, ast.Constant) and node.value.value is False)
                   for node in ast.walk(ast.parse(path.read_text())))

    openers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if opens_test(p)]
    assert openers == ["lifecycle/final_evaluation.py"]
    callers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if re.search(r"\bfinal_evaluation\b", p.read_text())]
    assert callers == ["lifecycle/evaluate.py"]
