"""A team's shared tracking server behind MLflow's basic-auth app: anonymous requests are
refused, and a search logs with credentials taken from the environment, which end up in no
file, run or output of the tool."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import mlflow_server
from small_search import small_experiment

pytestmark = pytest.mark.e2e  # starts `mlflow server` (basic-auth) and a search.py search
REPO = Path(__file__).resolve().parents[2]
ADMIN, PASSWORD = "admin", "wsol-team-password-4e1b7c"


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_search_logs_to_a_basic_auth_server(tiny_synth: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{tmp_path / 'users.db'}\n"
                      f"admin_username = {ADMIN}\n"
                      "authorization_function = "
                      "mlflow.server.auth:authenticate_request_basic_auth\n")
    server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": "wsol-test-flask-secret"}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with mlflow_server(tmp_path, app="basic-auth", env=server_env) as uri:
        search_url = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
        assert status_of(search_url) == 401
        token = "Basic " + base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
        assert status_of(search_url, {"Authorization": token}) == 200

        experiment = tmp_path / "exp" / "auth.yaml"
        experiment.parent.mkdir()
        # The project's search spaces (none named), as a user's file would have it.
        experiment.write_text(yaml.safe_dump(small_experiment(
            "auth", tiny_synth, tmp_path, search_spaces=None)))
        env = {**os.environ, "MLFLOW_TRACKING_USERNAME": ADMIN,
               "MLFLOW_TRACKING_PASSWORD": PASSWORD, "RAY_AUTH_MODE": "disabled"}
        done = subprocess.run([sys.executable, str(REPO / "search.py"), "--config",
                               str(experiment), "--tracking-uri", uri],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert PASSWORD not in done.stdout + done.stderr

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("auth").experiment_id])
        assert {r.data.tags.get("wsol.kind") for r in runs} == {"search", "trial"}
        for run in runs:
            assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    written = [p for p in (tmp_path / "ray").rglob("*") if p.is_file()]
    written += [p for p in (tmp_path / "mlflow-artifacts").rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
