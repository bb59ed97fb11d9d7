"""Faults of a real cluster, injected for real: a trial's worker process SIGKILLed and a whole
Ray worker node stopped (the trial resumes from its checkpoint in the same MLflow run, each
epoch logged once; past `max_failures` it is FAILED with the reason), and the tracking server
killed mid-search and restarted on the same store (the search waits, then logs everything
once; past the outage limit it stops and says how to resume).

Everything counted here is read back from MLflow. Only processes these tests start are stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from servers import (
    aws_env,
    free_port,
    kill_mlflow_server,
    kill_processes_mentioning,
    mlflow_server,
    ray_nodes,
    ray_workers,
    s3_server,
    tcp_proxy,
)

from wsol.common import tracking_schema as schema

pytestmark = pytest.mark.e2e  # starts `ray start` nodes, `mlflow server`, moto's S3 and searches
REPO = Path(__file__).resolve().parents[2]
EPOCH = schema.per_epoch("epoch")
# Ray declares a node dead after its health checks fail: seconds here instead of ~30.
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
                   "RAY_health_check_failure_threshold": "3"}


# Every driver a test starts, stopped at the test's end even when it failed on the way.
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def stop_drivers():
    """Stops what the test's drivers left running: each driver runs in a session of its
    own, so its whole process group (a local Ray it started, its workers) goes with it."""
    yield
    while STARTED:
        driver = STARTED.pop()
        if driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def write_config(tmp_path: Path, data: Path, uri: str, name: str, epochs: int,
                 trials: int = 1, file: str | None = None, **extra: Any) -> Path:
    config = tmp_path / f"{file or name}.yaml"
    config.write_text(yaml.safe_dump({
        "name": name, "data_root": str(data), "synthetic_preset": None,
        "methods": ["cam"], "backbones": ["tiny"], "trials_per_pair": trials,
        "max_concurrent": 1, "scheduler": {"type": "fifo"},
        "search_spaces": str(REPO / "search_spaces"),
        "trial": {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8,
                  "epochs": epochs, "ivr_percentiles": [30.0]},
        "storage_path": str(tmp_path / "ray"), "tracking_uri": uri, **extra,
    }))
    return config


def start_search(tmp_path: Path, config: Path, address: str | None, log_name: str,
                 env: dict[str, str] | None = None, restore: bool = False) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "search.py"), "--config", str(config),
               *(["--address", address] if address else []), *(["--restore"] if restore else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled",
           "TUNE_GLOBAL_CHECKPOINT_S": "1", **(env or {})}
    with (tmp_path / log_name).open("w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    STARTED.append(driver)
    return driver


def runs_of(uri: str, name: str, kind: str) -> list[Run]:
    """The runs of one kind (schema.TRIAL, schema.SEARCH) in the experiment, if it exists."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get(schema.KIND) == kind]


def trial_runs(uri: str, name: str) -> list[Run]:
    return runs_of(uri, name, schema.TRIAL)


def running_searches(uri: str, name: str) -> list[Run]:
    """The search (parent) runs of the experiment that are RUNNING."""
    return [r for r in runs_of(uri, name, schema.SEARCH) if r.info.status == "RUNNING"]


def epochs_logged(uri: str, run: Run) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, EPOCH)]


def wait_for(condition, what: str, driver: subprocess.Popen, log: Path,
             seconds: float = 240) -> Any:
    deadline = time.time() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert driver.poll() is None, f"search ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.time() < deadline, f"no {what} in {seconds} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def duplicated_points(uri: str, run: Run) -> dict[str, list[int]]:
    """Per metric of the run, the steps logged more than once."""
    client = MlflowClient(uri)
    repeated = {}
    for key in client.get_run(run.info.run_id).data.metrics:
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
        if any(n > 1 for n in steps.values()):
            repeated[key] = sorted(s for s, n in steps.items() if n > 1)
    return repeated


def tune_results(experiment_dir: Path) -> list[dict[str, Any]]:
    """The one trial's results as Ray Tune wrote them (result.json, one line per report)."""
    (path,) = experiment_dir.glob("*/result.json")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_worker(temp_dir: str) -> tuple[int, str]:
    """The one running trial's worker process and its node."""
    found = ray_workers(temp_dir)
    assert len(found) == 1, found
    return next(iter(found.items()))


def test_lost_worker_and_lost_node_resume_the_same_run(tiny_synth: Path, tmp_path: Path) -> None:
    """Two worker nodes (the head has no CPU for trials): the trial's process is SIGKILLed,
    then its whole node is stopped; it resumes twice from its checkpoint (max_failures 2) and
    finishes in its one run with every epoch once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    epochs = 7
    config = write_config(tmp_path, tiny_synth, uri, "lost-workers", epochs, max_failures=2)
    log = tmp_path / "driver.log"
    with ray_nodes(head_cpus=0, worker_cpus=(1, 1), env=FAST_NODE_DEATH) as nodes:
        started = time.time()
        driver = start_search(tmp_path, config, nodes.address, "driver.log")
        run = wait_for(lambda: [r for r in trial_runs(uri, "lost-workers")
                                if len(epochs_logged(uri, r)) >= 2], "two epochs", driver, log)[0]
        pid, first_node = trial_worker(nodes.temp_dir)
        os.kill(pid, 9)
        seen = len(epochs_logged(uri, run))
        wait_for(lambda: len(epochs_logged(uri, run)) >= seen + 1 and ray_workers(nodes.temp_dir),
                 "an epoch after the kill", driver, log)
        _, node = trial_worker(nodes.temp_dir)
        kill_processes_mentioning(f"{nodes.temp_dir}/{node}/")
        wait_for(lambda: set(ray_workers(nodes.temp_dir).values()) == {
            {"w0": "w1", "w1": "w0"}[node]}, "the trial on the surviving node", driver, log)
        assert driver.wait(300) == 0, log.read_text()[-4000:]
        tally(uri, "lost-workers", "worker SIGKILL + node stopped", time.time() - started)
    output = log.read_text()
    runs = trial_runs(uri, "lost-workers")
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    finished = runs[0]
    assert finished.info.status == "FINISHED", output[-4000:]
    assert epochs_logged(uri, finished) == list(range(epochs))
    assert duplicated_points(uri, finished) == {}
    assert "retry 1 of 2" in output and "retry 2 of 2" in output
    assert "1 trials, 0 failed" in output
    # Ray's own record: each retry resumed after the last checkpointed epoch (not from epoch
    # 0), the last one (after the node was stopped) on the node that survived. The first
    # retry (after the worker's SIGKILL) may run on either node: Ray may reuse the freed one.
    # An epoch reported just before a kill may be trained again: Ray registers its checkpoint
    # a moment after the result (which MLflow has already logged, so it is not logged twice),
    # and a kill in between resumes from the checkpoint before. Every epoch is in Ray's
    # record, and no retry started over from epoch 0.
    results = tune_results(tmp_path / "ray" / "lost-workers")
    assert sorted({r["epoch"] for r in results}) == list(range(epochs)), results
    restarts = [r for r in results if r["iterations_since_restore"] == 1]
    assert len(restarts) == 3 and all(r["epoch"] > 0 for r in restarts[1:])
    assert restarts[2]["node_id"] != restarts[1]["node_id"]
    assert first_node in ("w0", "w1")


def test_a_trial_past_its_retries_fails_with_the_reason(tiny_synth: Path,
                                                          tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_config(tmp_path, tiny_synth, uri, "past-retries", 8, max_failures=1)
    log = tmp_path / "driver.log"
    with ray_nodes(head_cpus=1) as nodes:
        started = time.time()
        driver = start_search(tmp_path, config, nodes.address, "driver.log")
        run = wait_for(lambda: [r for r in trial_runs(uri, "past-retries")
                                if epochs_logged(uri, r)], "an epoch", driver, log)[0]
        os.kill(trial_worker(nodes.temp_dir)[0], 9)
        seen = len(epochs_logged(uri, run))
        wait_for(lambda: len(epochs_logged(uri, run)) > seen and ray_workers(nodes.temp_dir),
                 "an epoch after the kill", driver, log)
        os.kill(trial_worker(nodes.temp_dir)[0], 9)
        driver.wait(240)
        tally(uri, "past-retries", "worker SIGKILL twice, max_failures 1", time.time() - started)
    output = log.read_text()
    runs = trial_runs(uri, "past-retries")
    assert len(runs) == 1 and runs[0].info.status == "FAILED", output[-4000:]
    reason = runs[0].data.tags[schema.FAILURE_REASON]
    assert reason.startswith("2 failures (max_failures 1): ") and "died" in reason, reason
    assert duplicated_points(uri, runs[0]) == {}
    assert "1 trials, 1 failed" in output


def tally(uri: str, name: str, fault: str, wall_s: float) -> None:
    """The fault's row as counted from MLflow (run with -s to see it): trial runs, their
    statuses, epochs (steps of the per-epoch metrics) and points logged more than once."""
    runs = trial_runs(uri, name)
    statuses = Counter(r.info.status for r in runs)
    steps = sum(len(set(epochs_logged(uri, r))) for r in runs)
    repeated = sum(len(v) for r in runs for v in duplicated_points(uri, r).values())
    print(f"\nFAULT {fault}: {len(runs)} trial runs {dict(statuses)}, {steps} epochs logged, "
          f"{repeated} points repeated, driver wall {wall_s:.0f} s")


def check_logged_once(uri: str, name: str, trials: int, epochs: int) -> list[Run]:
    """Every trial has one run, FINISHED, with each epoch and its checkpoint logged once."""
    runs = trial_runs(uri, name)
    client = MlflowClient(uri)
    assert len(runs) == trials
    assert len({r.data.tags[schema.RAY_TRIAL_ID] for r in runs}) == trials
    for run in runs:
        assert run.info.status == "FINISHED"
        assert epochs_logged(uri, run) == list(range(epochs))
        assert duplicated_points(uri, run) == {}
        assert [a.path for a in client.list_artifacts(run.info.run_id, schema.CHECKPOINT_FOLDER)
                ] == [schema.CHECKPOINT]
        assert schema.SCORE in run.data.metrics
    return runs


def test_tracking_server_killed_and_restarted(tiny_synth: Path, tmp_path: Path) -> None:
    """`mlflow server` SIGKILLed after the first epoch and restarted on the same store and
    port 20 s later: the search trains on meanwhile, then logs what waited, each record once."""
    store = tmp_path / "server"
    store.mkdir()
    epochs, trials = 6, 2
    log = tmp_path / "driver.log"
    with mlflow_server(store) as uri:
        config = write_config(tmp_path, tiny_synth, uri, "server-outage", epochs, trials)
        started = time.time()
        driver = start_search(tmp_path, config, None, "driver.log")
        wait_for(lambda: any(epochs_logged(uri, r) for r in trial_runs(uri, "server-outage")),
                 "an epoch", driver, log)
        kill_mlflow_server(store)
    down = time.time()
    time.sleep(20)
    assert driver.poll() is None, log.read_text()[-4000:]  # neither crashed nor ended
    with mlflow_server(store, port=int(uri.rsplit(":", 1)[1])):
        up = time.time()
        assert driver.wait(300) == 0, log.read_text()[-4000:]
        wall, after = time.time() - started, time.time() - up
        runs = check_logged_once(uri, "server-outage", trials, epochs)
        client = MlflowClient(uri)
        stamps = [m.timestamp / 1000 for r in runs
                  for m in client.get_metric_history(r.info.run_id, EPOCH)]
        tally(uri, "server-outage", f"mlflow server away {up - down:.0f} s, "
              f"{sum(down - 1 <= t <= up for t in stamps)} epochs trained meanwhile, driver done "
              f"{after:.0f} s after it was back", wall)
    output = log.read_text()
    # Epochs trained while the server was down were logged after it came back (a second
    # of slack: a timestamp may be truncated to the second below the moment it was taken).
    assert sum(down - 1 <= t <= up for t in stamps) >= 1, (down, up, stamps)
    assert "unreachable" in output and "reachable again" in output
    assert f"{trials} trials, 0 failed" in output


def test_tracking_server_away_past_the_limit_stops_then_restores(
        tiny_synth: Path, tmp_path: Path) -> None:
    """Past $WSOL_TRACKING_OUTAGE_LIMIT_S the search stops and says to use --restore; with the
    server back, --restore finishes it and logs what the stopped search could not."""
    store = tmp_path / "server"
    store.mkdir()
    epochs, trials = 8, 2
    log = tmp_path / "driver.log"
    env = {"WSOL_TRACKING_OUTAGE_LIMIT_S": "6"}
    with mlflow_server(store) as uri:
        config = write_config(tmp_path, tiny_synth, uri, "server-gone", epochs, trials)
        driver = start_search(tmp_path, config, None, "driver.log", env)
        wait_for(lambda: any(epochs_logged(uri, r) for r in trial_runs(uri, "server-gone")),
                 "an epoch", driver, log)
        kill_mlflow_server(store)
    down = time.time()
    code = driver.wait(120)
    stopped_after = time.time() - down
    output = log.read_text()
    assert code != 0 and "Traceback" not in output, output[-4000:]
    assert "unreachable for" in output and "--restore" in output, output[-4000:]
    with mlflow_server(store, port=int(uri.rsplit(":", 1)[1])):
        restored = start_search(tmp_path, config, None, "restored.log", env, restore=True)
        assert restored.wait(300) == 0, (tmp_path / "restored.log").read_text()[-4000:]
        tally(uri, "server-gone", f"mlflow server gone, stopped after {stopped_after:.0f} s, "
              "restored", time.time() - down)
        check_logged_once(uri, "server-gone", trials, epochs)
    assert f"{trials} trials, 0 failed" in (tmp_path / "restored.log").read_text()


def test_two_searches_at_once_on_one_sqlite_store_and_one_server(tiny_synth: Path,
                                                                  tmp_path: Path) -> None:
    """Two people's searches (same experiment name, their own Ray storage) started seconds
    apart on one store, first a SQLite file, then one `mlflow server`: both finish, each
    child run under its own parent, nothing logged twice, nothing failed or given up (a locked
    SQLite store is waited out); the second, started once the first's search run is on the
    store, is told up front on SQLite that a server is the store for this."""
    epochs, trials = 3, 2
    with ray_nodes(head_cpus=2) as nodes:
        for kind in ("sqlite", "server"):
            work = tmp_path / kind
            work.mkdir()
            with contextlib.ExitStack() as stack:
                uri = f"sqlite:///{work / 'mlflow.db'}" if kind == "sqlite" else \
                    stack.enter_context(mlflow_server(work))
                drivers = []
                started = time.time()
                for person in ("alice", "bob"):
                    config = write_config(work, tiny_synth, uri, "shared", epochs, trials,
                                          person, storage_path=str(work / person))
                    drivers.append(start_search(work, config, nodes.address, f"{person}.log"))
                    if person == "alice":
                        # Bob starts once Alice's search is on the store (its parent run
                        # RUNNING), however long her start takes on a busy machine.
                        wait_for(lambda uri=uri: running_searches(uri, "shared"),
                                 "alice's search run",
                                 drivers[0], work / "alice.log")
                for person, driver in zip(("alice", "bob"), drivers, strict=True):
                    log = (work / f"{person}.log").read_text
                    assert driver.wait(600) == 0, log()[-4000:]
                    # A lock met on the way is waited out (the tracking queue says so when it
                    # tries again): what matters is that nothing failed or was given up.
                    assert "Traceback" not in log() and "unreachable for" not in log(), \
                        log()[-4000:]
                tally(uri, "shared", f"two searches on one {kind} store",
                      time.time() - started)
                runs = check_logged_once(uri, "shared", 2 * trials, epochs)
                client = MlflowClient(uri)
                parents = [r for r in client.search_runs(
                    [client.get_experiment_by_name("shared").experiment_id])
                    if r.data.tags.get(schema.KIND) == schema.SEARCH]
                assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
                assert Counter(r.data.tags[schema.PARENT] for r in runs) == {
                    p.info.run_id: trials for p in parents}
            warned = "another search (search shared) is writing to this SQLite store" in (
                work / "bob.log").read_text()
            assert warned == (kind == "sqlite")


def test_s3_away_and_back(tiny_synth: Path, tmp_path: Path) -> None:
    """S3 (moto, behind a port of its own) refuses connections for 20 s in the middle of a
    search whose Ray storage and MLflow artifacts are both on it; then it is back with its
    bucket. The trials wait for their checkpoint uploads, the driver for its artifact
    uploads; nothing is lost or logged twice."""
    epochs, trials = 6, 2
    log = tmp_path / "driver.log"
    with s3_server(tmp_path) as direct:
        port, target = free_port(), int(direct.rsplit(":", 1)[1])
        endpoint = f"http://127.0.0.1:{port}"
        env = {**aws_env(endpoint), "AWS_ENDPOINT_URL": endpoint}
        with contextlib.ExitStack() as s3:
            s3.enter_context(tcp_proxy(port, target))
            store = tmp_path / "server"
            store.mkdir()
            with mlflow_server(store, s3_endpoint=endpoint) as uri:
                config = write_config(tmp_path, tiny_synth, uri, "s3-outage", epochs, trials,
                                      storage_path="s3://wsol-artifacts/ray")
                started = time.time()
                driver = start_search(tmp_path, config, None, "driver.log", env)
                wait_for(lambda: any(epochs_logged(uri, r)
                                     for r in trial_runs(uri, "s3-outage")),
                         "an epoch", driver, log)
                s3.close()
                down = time.time()
                time.sleep(20)
                assert driver.poll() is None, log.read_text()[-4000:]
                with tcp_proxy(port, target):
                    away = time.time() - down
                    assert driver.wait(300) == 0, log.read_text()[-4000:]
                    tally(uri, "s3-outage", f"S3 refusing connections {away:.0f} s",
                          time.time() - started)
                    check_logged_once(uri, "s3-outage", trials, epochs)
    assert f"{trials} trials, 0 failed" in log.read_text()
