"""Two people at once on one store: `wsol promote` of the same pair twice at the same moment
ends with one version and one consistent alias; `wsol evaluate` of the same model twice counts
2 test evaluations. Real processes on a real SQLite store, released together by a start time
so that their MLflow calls interleave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema

REPO = Path(__file__).resolve().parents[1]
# Imports and the store's connection first (seconds on a busy machine; MLflow keeps one
# store per URI), then the command at the agreed moment.
AT_ONCE = ("import sys, time; from wsol.cli.parser import main; import wsol.lifecycle.evaluate; "
           "from mlflow.tracking import MlflowClient; "
           "MlflowClient(sys.argv[sys.argv.index('--tracking-uri') + 1]).search_experiments(); "
           "time.sleep(max(0.0, float(sys.argv[1]) - time.time())); "
           "sys.exit(main(sys.argv[2:]))")


def at_once(commands: list[list[str]], cwd: Path, lead_s: float = 12) -> list[
        subprocess.CompletedProcess]:
    """Runs `wsol <command>` in one process each, all starting their command at one moment."""
    start = time.time() + lead_s
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", AT_ONCE, str(start), *command],
                                  cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for command in commands]
    done = []
    for process in processes:
        out, _ = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out))
    return done


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
                          cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return uri, tmp


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
    numbers = sorted(json.loads((tmp / f"evaluate{i}.json").read_text())["evaluation_number"]
                     for i in range(2))
    assert numbers == [1, 2]
