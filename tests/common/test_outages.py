"""The retrying client of `wsol promote` and `wsol evaluate` lists its calls one by one: each
store call those commands make must be one of them, or it would be made once and fail on a
locked store; the calls that merge a row (set_*) are the ones that retry insert conflicts."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import wsol
from wsol.common import outages
from wsol.common.outages import LockRetryingClient, lock_retrying

# The modules whose functions receive the retrying client.
LIFECYCLE = ("promote.py", "evaluate.py", "runs.py")


def _client_calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "client"}


def test_every_store_call_of_promote_and_evaluate_retries() -> None:
    folder = Path(wsol.__file__).parent / "lifecycle"
    used = set().union(*(_client_calls(folder / name) for name in LIFECYCLE))
    assert used, "no client calls found: the scan is broken"
    listed = {name for name, _ in inspect.getmembers(LockRetryingClient)
              if name in vars(LockRetryingClient)}
    assert used <= listed, f"not retried: {sorted(used - listed)}"


def test_only_set_calls_retry_an_insert_conflict(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outages, "LOCK_RETRY_SLEEP_S", 0.0)
    client = lock_retrying(MlflowClient(f"sqlite:///{tmp_path / 'm.db'}"))
    assert lock_retrying(client) is client
    conflict = MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed")
    calls: list[str] = []

    def refused_once(name: str):
        def call(*args, **kwargs):
            calls.append(name)
            if calls.count(name) == 1:
                raise conflict
        return call

    monkeypatch.setattr(MlflowClient, "set_tag", refused_once("set_tag"))
    monkeypatch.setattr(MlflowClient, "log_param", refused_once("log_param"))
    client.set_tag("run", "key", "value")
    assert calls == ["set_tag", "set_tag"]
    with pytest.raises(MlflowException, match="IntegrityError"):
        client.log_param("run", "key", "value")
    assert calls.count("log_param") == 1
