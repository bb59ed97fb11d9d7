"""Nothing lost when the cluster's head goes away (`ray down`, a lost spot head).

A head is brought up with cluster/gpu.yaml's own head_setup_commands (read from the file, run
by bash with the head's HOME, as Ray runs them; only the bucket, the port, one server worker,
a 3 s backup interval and a pgrep scoped to this home are changed): `wsol store restore`, then
`mlflow server` on SQLite (or on PostgreSQL through $WSOL_MLFLOW_DB), and the periodic `wsol
store backup`. A search (S3 Ray storage, so its Optuna journal lies in the head's home), a
promote and an evaluate run against it; then the head is taken away as `ray down` takes it:
every process of its home killed, the home (database, journals, logs) deleted. A new head with
an empty home runs the same commands, and the store is back: runs, metrics, model versions,
aliases, test-evaluation counts and Optuna studies; `wsol evaluate` and `--more-trials` go on.
The Ray nodes stay (their state is the experiment's S3 storage, not the head's home).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import (
    BUCKET,
    aws_env,
    free_port,
    kill_processes_mentioning,
    postgres_server,
    ray_nodes,
    s3_server,
)
from small_search import small_experiment

from wsol.common import tracking_schema as schema

pytestmark = pytest.mark.e2e  # starts moto's S3, `mlflow server`, PostgreSQL and Ray nodes
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GPU_YAML = REPO / "cluster" / "gpu.yaml"
NAME = "headloss"
MODEL = schema.model_name("synthetic", "cam", "tiny")
CHAMPION = f"models:/{MODEL}@{schema.CHAMPION}"


def head_commands(home: Path, port: int) -> list[str]:
    """gpu.yaml's head_setup_commands for a head whose HOME is `home` on this machine."""
    commands = yaml.safe_load(GPU_YAML.read_text())["head_setup_commands"]
    return [c.replace("YOUR-BUCKET", BUCKET)
             .replace("--port 5000", f"--port {port} --workers 1")
             .replace("--every 300", "--every 3")
             .replace('-f "mlflow server"', f'-f "{home}/wsol/.venv/bin/mlflow server"')
             .replace('-f "wsol store backup"', f'-f "{home}/wsol/.venv/bin/wsol store backup"')
            for c in commands]


def new_head(home: Path, env: dict[str, str]) -> str:
    """An empty home with the project in ~/wsol (what file_mounts puts there), set up by the
    cluster file's commands; returns the tracking URI once the server answers."""
    home.mkdir()
    (home / "wsol").symlink_to(REPO)
    port = free_port()
    for command in head_commands(home, port):
        subprocess.run(["bash", "-c", command], env={**env, "HOME": str(home)}, check=True,
                       timeout=300, cwd=home)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return uri
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no mlflow server: {(home / 'mlflow-server.log').read_text()[-3000:]}")


def lose_head(home: Path) -> None:
    """What `ray down` does to the head: its processes gone, its disk gone."""
    kill_processes_mentioning(str(home))
    time.sleep(1)
    subprocess.run(["rm", "-rf", str(home)], check=True)


def driver(args: list[str], home: Path, env: dict[str, str]) -> str:
    """`ray submit`'s driver: search.py in the head's home, with its ~/.bashrc's exports."""
    command = " ".join(["source ~/.bashrc 2>/dev/null;", "exec", sys.executable,
                        str(REPO / "search.py"), *args])
    done = subprocess.run(["bash", "-c", command], cwd=home, env={**env, "HOME": str(home)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def cli(args: list[str], uri: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "wsol.cli", *args, "--tracking-uri", uri],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def experiment_file(tmp_path: Path, data: Path, uri: str) -> Path:
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(small_experiment(
        NAME, data, tmp_path, storage_path=f"s3://{BUCKET}/ray", tracking_uri=uri)))
    return path


def store_state(uri: str, home: Path) -> dict[str, Any]:
    """Everything a lost head could take: runs with their metrics, params and status, model
    versions, aliases, test-evaluation counts, and the Optuna studies of the journal."""
    client = MlflowClient(uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    versions = client.search_model_versions(f"name = '{MODEL}'")
    journal = home / "mlruns" / "logs" / NAME / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(journal)))
    studies = {s.study_name: [(t.number, t.state.name, t.value, t.params) for t in s.trials]
               for s in (optuna.load_study(study_name=summary.study_name, storage=storage)
                         for summary in optuna.get_all_study_summaries(storage))}
    return {"runs": {r.info.run_id: (r.info.status, r.data.metrics, r.data.params,
                                     r.data.tags.get(schema.TEST_EVALUATIONS)) for r in runs},
            "versions": {v.version: (v.run_id, v.tags.get(schema.TEST_EVALUATIONS))
                         for v in versions},
            "aliases": client.get_registered_model(MODEL).aliases, "studies": studies}


def wait_for_a_backup_after(home: Path, since: float) -> None:
    """The periodic backup has run once more since `since` (the window named in
    docs/cluster/ray-down.md)."""
    log = home / "store-backup.log"
    deadline = time.time() + 120
    while time.time() < deadline:
        lines = [line for line in log.read_text().splitlines() if " backed up " in line]
        stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) for line in lines]
        if any(stamp > since + 1 for stamp in stamps):
            return
        time.sleep(1)
    raise AssertionError(f"no periodic backup: {log.read_text()[-2000:]}")


@pytest.fixture
def servers_and_nodes(tmp_path: Path):
    with s3_server(tmp_path) as endpoint:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
               **aws_env(endpoint), "AWS_ENDPOINT_URL": endpoint, "RAY_AUTH_MODE": "disabled",
               "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("WSOL_STORE_BACKUP", None)
        with ray_nodes(head_cpus=0, worker_cpus=(1,), env=env) as nodes:
            yield {**env, "RAY_ADDRESS": nodes.address}


def search_promote_evaluate(tmp_path: Path, data: Path, home: Path,
                            env: dict[str, str]) -> dict[str, Any]:
    """On a new head: a search (its end backed up), a promote and a first test evaluation;
    returns the store's state."""
    uri = new_head(home, env)
    config = experiment_file(tmp_path, data, uri)
    out = driver(["--config", str(config), "--address", env["RAY_ADDRESS"]], home, env)
    assert "tracking store backed up to s3://" in out, out[-3000:]
    cli(["promote", "--method", "cam", "--backbone", "tiny"], uri, tmp_path, env)
    cli(["evaluate", "--model", CHAMPION, "--device", "cpu"], uri, tmp_path, env)
    state = store_state(uri, home)
    assert [v[1] for v in state["versions"].values()] == ["1"]  # one version, evaluated once
    assert {a: str(v) for a, v in state["aliases"].items()} == {schema.CHAMPION: "1"}
    assert sum(len(trials) for trials in state["studies"].values()) == 1
    return state


def comes_back_and_goes_on(tmp_path: Path, data: Path, home: Path, env: dict[str, str],
                           before: dict[str, Any]) -> None:
    """The head lost and a new one set up by the same commands: the store is as it was, and
    `wsol evaluate` (count 2) and `--more-trials 1` (in the same study) go on."""
    lose_head(home)
    uri = new_head(home, env)
    assert store_state(uri, home) == before
    out = cli(["evaluate", "--model", CHAMPION, "--device", "cpu"], uri, tmp_path, env)
    assert "test evaluation #2" in out, out
    config = experiment_file(tmp_path, data, uri)
    driver(["--config", str(config), "--address", env["RAY_ADDRESS"], "--more-trials", "1"],
           home, env)
    after = store_state(uri, home)
    assert [v[1] for v in after["versions"].values()] == ["2"]
    assert [len(trials) for trials in after["studies"].values()] == [2]
    trials = [r for r in after["runs"].values() if r[0] == "FINISHED" and "lr" in r[2]]
    assert len(trials) == 2
    lose_head(home)


def test_a_lost_sqlite_head_comes_back_whole(tmp_path: Path, tiny_synth: Path,
                                             servers_and_nodes: dict[str, str]) -> None:
    env, home = servers_and_nodes, tmp_path / "head"
    before = search_promote_evaluate(tmp_path, tiny_synth, home, env)
    assert (home / "mlflow.db").is_file()
    wait_for_a_backup_after(home, time.time())  # the promote and evaluate reach the bucket
    comes_back_and_goes_on(tmp_path, tiny_synth, home, env, before)


def test_a_team_server_on_postgresql_outlives_the_head(tmp_path: Path, tiny_synth: Path,
                                                        servers_and_nodes: dict[str, str]
                                                        ) -> None:
    """The server on a database of its own ($WSOL_MLFLOW_DB, no password in it): nothing of
    the store on the head but the Optuna journal (the default optuna_storage), which the
    search's end backs up; no wait for the periodic backup, since the database keeps every
    other write."""
    with postgres_server(tmp_path / "pg") as template:
        database = template.replace(":{password}", "")
        env, home = {**servers_and_nodes, "WSOL_MLFLOW_DB": database}, tmp_path / "head"
        before = search_promote_evaluate(tmp_path, tiny_synth, home, env)
        assert not (home / "mlflow.db").exists()
        comes_back_and_goes_on(tmp_path, tiny_synth, home, env, before)
