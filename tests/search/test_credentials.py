"""Credentials never ride in a URI: a tracking URI (flag, config, $MLFLOW_TRACKING_URI) or a
storage_path holding them is refused in one line that says where they go instead, before
data, Ray or a run exist, so the secret reaches no param, artifact, Ray state or console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import mlflow_server
from small_search import small_experiment

from wsol.cli import search as search_cli
from wsol.cli.parser import main as wsol
from wsol.common.tracking_store import CredentialsInURI, refuse_credentials, tracking_uri

REPO = Path(__file__).resolve().parents[2]
SECRET = "wsol-uri-secret-9d2f41"
MLFLOW_HINT = "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD"
S3_HINT = "AWS credential chain"


@pytest.mark.parametrize(("uri", "hint"), [
    (f"http://admin:{SECRET}@127.0.0.1:5000", MLFLOW_HINT),
    (f"https://{SECRET}@mlflow.example.org", MLFLOW_HINT),
    (f"s3://AKIAKEY:{SECRET}@bucket/ray", S3_HINT),
    (f"s3://bucket/ray?region=eu-west-1&secret_key={SECRET}", S3_HINT),
    (f"postgresql://mlflow:{SECRET}@db.example.org/mlflow", "~/.pgpass"),
])
def test_a_uri_with_credentials_is_refused_without_showing_them(uri: str, hint: str) -> None:
    with pytest.raises(CredentialsInURI) as raised:
        refuse_credentials(uri, "tracking URI")
    message = str(raised.value)
    assert SECRET not in message and "\n" not in message
    assert "holds credentials" in message and hint in message


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:5000", "sqlite:///mlruns/mlflow.db", "postgresql://mlflow@db/mlflow",
    "s3://bucket/ray?region=eu-west-1", "mlruns/ray", "/home/me@lab/ray", "file:///tmp/x",
])
def test_a_uri_without_credentials_passes(uri: str) -> None:
    assert refuse_credentials(uri, "storage_path") == uri


def test_the_environments_tracking_uri_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{SECRET}@127.0.0.1:5000")
    with pytest.raises(CredentialsInURI, match=r"^\$MLFLOW_TRACKING_URI http://\*\*\*@"):
        tracking_uri()
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def _refused(capsys: pytest.CaptureFixture[str], prog: str, hint: str) -> None:
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: ") and hint in err, err


def _nothing_written(work: Path, before: set[Path]) -> None:
    """No data, Ray storage, MLflow store or log appeared in the working folder."""
    assert set(work.rglob("*")) == before


@pytest.mark.parametrize("where", ["flag", "config", "environment", "storage_path"])
def test_a_search_refuses_credentials_before_anything_runs(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://admin:{SECRET}@127.0.0.1:9"
    changes = {"tracking_uri": uri} if where == "config" else {}
    if where == "storage_path":
        changes = {"storage_path": f"s3://AKIAKEY:{SECRET}@bucket/ray"}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(small_experiment(
        "secret", tmp_path / "data", tmp_path, synthetic_preset="tiny", **changes)))
    if where == "environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = set(tmp_path.rglob("*"))
    argv = ["--config", str(config)] + (["--tracking-uri", uri] if where == "flag" else [])
    assert search_cli.main(argv) == 2
    _refused(capsys, "search.py", S3_HINT if where == "storage_path" else MLFLOW_HINT)
    _nothing_written(tmp_path, before)


@pytest.mark.parametrize("command", [
    ["promote", "--method", "cam", "--backbone", "tiny"],
    ["evaluate", "--model", "models:/wsol-cam-tiny@champion"],
    ["report", "--out", "report"],
    ["compare", "--search-seeds", "1", "--config", "CONFIG"],
])
def test_the_lifecycle_commands_refuse_credentials(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(small_experiment("secret", tmp_path / "data", tmp_path)))
    before = set(tmp_path.rglob("*"))
    argv = [str(config) if arg == "CONFIG" else arg for arg in command]
    assert wsol([*argv, "--tracking-uri", f"http://admin:{SECRET}@127.0.0.1:9"]) == 2
    _refused(capsys, "wsol", MLFLOW_HINT)
    _nothing_written(tmp_path, before)


def test_compare_refuses_a_storage_path_with_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(small_experiment("secret", tmp_path / "data", tmp_path)))
    before = set(tmp_path.rglob("*"))
    assert wsol(["compare", "--search-seeds", "1", "--config", str(config), "--storage-path",
                 f"s3://AKIAKEY:{SECRET}@bucket/ray"]) == 2
    _refused(capsys, "wsol", S3_HINT)
    _nothing_written(tmp_path, before)


ADMIN, PASSWORD = "admin", "wsol-team-password-uri-5c9e"


@pytest.mark.e2e  # starts `mlflow server` (basic-auth)
def test_a_search_given_a_password_in_its_uri_leaves_it_nowhere(
        tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The team server's password in --tracking-uri: search.py says where it goes instead,
    and the password is in no file (Ray storage, mlruns, log, the server's store), no run's
    params or tags, and not on the console."""
    auth = tmp_path / "auth.ini"
    auth.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = sqlite:///{tmp_path / 'users.db'}\n"
                    f"admin_username = {ADMIN}\nauthorization_function = "
                    "mlflow.server.auth:authenticate_request_basic_auth\n")
    server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(auth), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": "wsol-test-flask-secret"}
    experiment = tmp_path / "uri.yaml"
    experiment.write_text(yaml.safe_dump(small_experiment("uri", tiny_synth, tmp_path)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    with mlflow_server(tmp_path, app="basic-auth", env=server_env) as uri:
        with_password = uri.replace("http://", f"http://{ADMIN}:{PASSWORD}@")
        done = subprocess.run([sys.executable, str(REPO / "search.py"), "--config",
                               str(experiment), "--tracking-uri", with_password],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        client = MlflowClient(uri)
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments])
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    assert done.stderr.startswith("search.py: error: tracking URI http://***@127.0.0.1:")
    assert MLFLOW_HINT in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not runs and "uri" not in {e.name for e in experiments}  # no run, no params
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlruns").exists()
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert PASSWORD.encode() not in path.read_bytes(), path
