"""A real (small) search: local Ray, Optuna, MLflow on SQLite; a failing trial fails alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_search_records_parent_children_and_the_failure(tiny_synth: Path, tmp_path: Path,
                                                        local_ray: None) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    shutil.copy(SPACES / "base.yaml", spaces)
    shutil.copy(SPACES / "cam.yaml", spaces)
    (spaces / "bgc.yaml").write_text(
        "method: bgc\nextends: base.yaml\nfixed: {lambda_drop: .nan, warm: 0}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = experiment_from_dict({
        "name": "test-search", "data_root": str(tiny_synth), "synthetic_preset": None,
        "methods": ["cam", "bgc"], "backbones": ["tiny"], "trials_per_pair": 2,
        "max_concurrent": 2, "scheduler": {"type": "fifo"}, "search_spaces": str(spaces),
        "trial": {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "epochs": 2,
                  "ivr_percentiles": [30.0]},
        "storage_path": str(tmp_path / "ray"), "tracking_uri": uri,
    })
    summary = run_search(experiment)
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
