"""The driver dies mid-search (SIGKILL); `search.py --restore` finishes the remaining trials
on the same Ray cluster without duplicating MLflow runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import ray_nodes
from small_search import small_experiment

pytestmark = pytest.mark.e2e  # starts a `ray start` node and search.py searches
REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"


@pytest.fixture
def ray_cluster():
    """A real `ray start` head node that outlives the drivers connecting to it."""
    with ray_nodes(head_cpus=1) as nodes:
        yield nodes.address


def child_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("restore")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("wsol.kind") == "trial"]


def test_killed_driver_restores_without_duplicate_runs(tiny_synth: Path, tmp_path: Path,
                                                       ray_cluster: str) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "restore.yaml"
    config.write_text(yaml.safe_dump(small_experiment(
        "restore", tiny_synth, tmp_path, trial={"epochs": 4}, trials_per_pair=4,
        tracking_uri=uri)))
    command = [sys.executable, str(REPO / "search.py"), "--config", str(config),
               "--address", ray_cluster]
    # Tune saves its experiment state every second here, so the kill finds a recent one. The
    # drivers use the cluster's authentication mode, whatever earlier Ray sessions in this
    # process left in the environment.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1",
           "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not any(r.info.status == "FINISHED" for r in child_runs(uri)):
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(1)
    time.sleep(1.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = child_runs(uri)
    finished = [r for r in before if r.info.status == "FINISHED"]
    assert len(finished) < 4, "the search finished before the driver was killed"

    restored = subprocess.run([*command, "--restore"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=420)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    after = child_runs(uri)
    trial_ids = [r.data.tags["wsol.ray_trial_id"] for r in after]
    assert len(after) == 4 and len(set(trial_ids)) == 4
    assert all(r.info.status == "FINISHED" for r in after)
    # Runs of trials Ray had saved are continued; a run the dead driver made for a trial Ray
    # had not saved yet is deleted (its budget went to a new trial).
    client = MlflowClient(uri)
    for run in before:
        if run.info.run_id not in {r.info.run_id for r in after}:
            gone = client.get_run(run.info.run_id)
            assert gone.info.lifecycle_stage == "deleted" and gone.data.tags["wsol.orphaned"]
    assert "4 trials, 0 failed" in restored.stdout
