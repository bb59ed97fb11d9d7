"""Two people at once on one store: `wsol promote` of the same pair twice at the same moment
ends with one version and one consistent alias; `wsol evaluate` of the same model twice counts
2 test evaluations. Real processes on a real SQLite store, released together by a file
barrier (each says it is ready, all start when told) so that their MLflow calls interleave;
and the races such promotes can meet (alias, version), made to happen every time in one process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema
from wsol.common.outages import lock_retrying
from wsol.lifecycle.promote import Promotion, choose, register

REPO = Path(__file__).resolve().parents[2]
# Imports and the store's connection first (seconds on a busy machine; MLflow keeps one
# store per URI), then a 'ready' file, then the command once the 'go' file exists.
AT_ONCE = """
import pathlib, sys, time
from mlflow.tracking import MlflowClient
import wsol.lifecycle.evaluate
from wsol.cli.parser import main

MlflowClient(sys.argv[sys.argv.index("--tracking-uri") + 1]).search_experiments()
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.write_text("ready")
while not go.exists():
    time.sleep(0.01)
sys.exit(main(sys.argv[3:]))
"""
# Generous: the time a loaded machine may take, never waited for when things go well.
READY_S = 600
DONE_S = 600


def at_once(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs `wsol <command>` in one process each, all starting their command at one moment:
    once every process has written its 'ready' file, the test writes the 'go' file. The
    processes are killed if anything fails on the way."""
    barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=cwd))
    go = barrier / "go"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen] = []
    logs = [barrier / f"out{i}.log" for i in range(len(commands))]
    try:
        for i, command in enumerate(commands):
            with logs[i].open("w") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", AT_ONCE, str(barrier / f"ready{i}"), str(go),
                     *command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                    text=True))
        deadline = time.monotonic() + READY_S
        while not all((barrier / f"ready{i}").exists() for i in range(len(commands))):
            ended = [(p.args, p.returncode, logs[i].read_text()[-2000:])
                     for i, p in enumerate(processes) if p.poll() is not None]
            assert not ended, f"ended before the start: {ended}"
            assert time.monotonic() < deadline, f"not ready in {READY_S} s"
            time.sleep(0.1)
        go.write_text("go")
        deadline = time.monotonic() + DONE_S
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [subprocess.CompletedProcess(p.args, p.returncode, logs[i].read_text())
                for i, p in enumerate(processes)]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def searched(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One finished search of one trial in a SQLite store (the default kind)."""
    tmp = tmp_path_factory.mktemp("concurrent")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    config = tmp / "one.yaml"
    config.write_text(yaml.safe_dump({
        "name": "one", "data_root": str(tiny_synth), "synthetic_preset": None,
        "methods": ["cam"], "backbones": ["tiny"], "trials_per_pair": 1, "max_concurrent": 1,
        "scheduler": {"type": "fifo"}, "search_spaces": str(REPO / "search_spaces"),
        "trial": {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "epochs": 1,
                  "ivr_percentiles": [30.0]},
        "storage_path": str(tmp / "ray"), "tracking_uri": uri,
    }))
    done = subprocess.run([sys.executable, str(REPO / "search.py"), "--config", str(config)],
                          cwd=tmp, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return uri, tmp


@pytest.mark.e2e
def test_two_promotes_at_once_make_one_version(searched: tuple[str, Path]) -> None:
    uri, tmp = searched
    results = at_once([["promote", "--tracking-uri", uri, "--method", "cam", "--backbone",
                        "tiny", "--json", str(tmp / f"promote{i}.json")] for i in range(3)], tmp)
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    client = MlflowClient(uri)
    name = schema.model_name("synthetic", "cam", "tiny")
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    told = {json.loads((tmp / f"promote{i}.json").read_text())["version"] for i in range(3)}
    assert told == {str(versions[0].version)}
    model = client.get_registered_model(name)
    assert model.aliases == {schema.CHAMPION: int(versions[0].version)}


@pytest.mark.e2e
def test_two_evaluates_at_once_count_two(searched: tuple[str, Path]) -> None:
    uri, tmp = searched
    client = MlflowClient(uri)
    name = schema.model_name("synthetic", "cam", "tiny")
    if not client.search_model_versions(f"name = '{name}'"):
        subprocess.run([sys.executable, "-m", "wsol.cli", "promote", "--tracking-uri", uri,
                        "--method", "cam", "--backbone", "tiny"], cwd=tmp, check=True,
                       capture_output=True)
    model = f"models:/{name}@{schema.CHAMPION}"
    results = at_once([["evaluate", "--tracking-uri", uri, "--model", model, "--device", "cpu",
                        "--json", str(tmp / f"evaluate{i}.json")] for i in range(2)], tmp)
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    version = client.get_model_version_by_alias(name, schema.CHAMPION)
    assert version.tags[schema.TEST_EVALUATIONS] == "2"
    # The numbers as left on the evaluation runs: each command's own JSON tells the number
    # it saw when it finished, which an evaluation that started earlier but was stored later
    # may have overtaken since (it renumbers both).
    evaluations = [json.loads((tmp / f"evaluate{i}.json").read_text())["evaluation_run_id"]
                   for i in range(2)]
    runs = sorted((client.get_run(e) for e in evaluations),
                  key=lambda r: (r.info.start_time, r.info.run_id))
    assert [r.data.tags[schema.EVALUATION_NUMBER] for r in runs] == ["1", "2"]


def test_an_alias_another_promote_set_meanwhile_is_set_again(tmp_path: Path) -> None:
    """The race three promotes at once can meet (CI met it): two promotes both read that the
    alias is not there yet, one inserts it, the other's insert breaks the unique key. Made
    to happen every time here: just before this client inserts the alias row, a second
    store (its own connection, as another process has) sets the same alias."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("m")
    version = client.create_model_version("m", source=str(tmp_path)).version
    other = SqlAlchemyStore(uri)
    raced: list[str] = []

    def meanwhile(connection, cursor, statement, *rest) -> None:
        if not raced and statement.startswith("INSERT INTO registered_model_aliases"):
            raced.append(statement)
            other.set_registered_model_alias("m", schema.CHAMPION, version)

    engine = client._get_registry_client().store.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", meanwhile)
    with pytest.raises(MlflowException, match="IntegrityError"):
        client.set_registered_model_alias("m", schema.CHAMPION, version)
    client.delete_registered_model_alias("m", schema.CHAMPION)
    raced.clear()
    lock_retrying(client).set_registered_model_alias("m", schema.CHAMPION, version)
    assert raced, "the other store never set the alias in between"
    assert client.get_registered_model("m").aliases == {schema.CHAMPION: int(version)}


@pytest.mark.e2e
def test_a_version_another_promote_made_meanwhile_leaves_one(
        searched: tuple[str, Path], tmp_path: Path) -> None:
    """The race the three promotes above were written for, made to happen every time: both
    promotes find no version of the trial, both register one, and the lower version is
    kept. The other promote runs whole just before this one's version insert begins (its
    first write, touching the model's update time); this one then finds the other's lower
    version, removes its own and points the alias at the kept one. On a copy of the
    searched store, without the registered model the tests above made."""
    _, tmp = searched
    shutil.copy(tmp / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    name = schema.model_name("synthetic", "cam", "tiny")
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)
    run = choose(client, "cam", "tiny", None, None)
    other: list[Promotion] = []
    started: list[str] = []

    def meanwhile(connection, cursor, statement, *rest) -> None:
        if not started and statement.startswith("UPDATE registered_models SET last_updated"):
            started.append(statement)
            other.append(register(MlflowClient(uri, registry_uri=uri), run, schema.CHAMPION))

    engine = client._get_registry_client().store.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", meanwhile)
    mine = register(client, run, schema.CHAMPION)
    sqlalchemy.event.remove(engine, "before_cursor_execute", meanwhile)
    assert other, "the other promote never ran in between"
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == [other[0].version] == [mine.version]
    assert client.get_registered_model(name).aliases == {schema.CHAMPION: int(mine.version)}
