"""Fixtures of the lifecycle tests."""

from pathlib import Path

import pytest
from mlflow import MlflowClient


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.chdir(tmp_path)  # the report experiment's artifacts go under ./mlruns
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("searches", artifact_location=str(tmp_path / "artifacts"))
    return client
