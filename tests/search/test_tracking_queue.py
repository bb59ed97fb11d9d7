"""The driver's MLflow queue on a real SQLite store: a retried start logs its params, a
restored search does not log an epoch twice, what counts as an outage, a refused record; and
the search's end written through a real `mlflow server` that is away for a while."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import botocore.exceptions
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
)
from mlflow.tracking import MlflowClient
from servers import free_port, mlflow_server, silent_proxy, tcp_proxy

from wsol.common import outages
from wsol.common import tracking_schema as schema
from wsol.common.outages import (
    TrackingRefused,
    TrackingUnavailable,
    refused_access,
    through_outage,
    transient,
)
from wsol.common.tracking_store import flat_params
from wsol.search.pairs import PAIR_KEY
from wsol.search.parent_run import end_search_run
from wsol.search.trial_callback import MLflowTrialCallback, Record, TrialInfo

EPOCH = schema.per_epoch("epoch")
TRIAL = TrialInfo("t0001", {PAIR_KEY: "cam/tiny", "lr": 0.01, "nested": {"a": 1}}, "trial_t0001")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str, str, str]:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        "queue", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={schema.KIND: schema.SEARCH}).info.run_id
    return client, uri, experiment_id, parent


def _callback(uri: str, experiment_id: str, parent: str) -> MLflowTrialCallback:
    return MLflowTrialCallback(uri, experiment_id, parent, "synthetic")


def _run_without_params(client: MlflowClient, experiment_id: str, parent: str) -> str:
    """What a start leaves when create_run went through and the params' log_batch did not."""
    return client.create_run(experiment_id, tags={
        schema.PARENT: parent, schema.RAY_TRIAL_ID: TRIAL.trial_id}).info.run_id


def test_a_retried_start_logs_the_params_its_run_lacks(store) -> None:
    client, uri, experiment_id, parent = store
    run_id = _run_without_params(client, experiment_id, parent)
    client.log_param(run_id, "lr", "0.01")  # some made it, the rest did not
    callback = _callback(uri, experiment_id, parent)
    callback.pending.append(Record("start", TRIAL))
    callback._flush()
    assert not callback.pending
    assert callback.runs[TRIAL.trial_id] == run_id
    assert client.get_run(run_id).data.params == flat_params(TRIAL.config)


def test_a_restored_step_behind_mlflow_does_not_log_epochs_twice(store) -> None:
    client, uri, experiment_id, parent = store
    run_id = _run_without_params(client, experiment_id, parent)
    for step in range(5):  # MLflow has epochs 0-4; Tune's saved state only knew up to 2
        client.log_metric(run_id, EPOCH, float(step), timestamp=1000 + step, step=step)
    callback = _callback(uri, experiment_id, parent)
    callback.set_state({"pending": [], "steps": {run_id: 2}})
    for step in (3, 4, 5):  # the trial repeats epochs 3 and 4 from its checkpoint
        callback.pending.append(Record("result", TRIAL, {
            "step": step, "metrics": {EPOCH: float(step) + 0.5}, "timestamp": 9000 + step,
            "node_id": None}))
    callback._flush()
    assert not callback.pending
    history = client.get_metric_history(run_id, EPOCH)
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4, 5]
    assert {m.step: m.value for m in history}[4] == 4.0  # the first one logged stays


def test_a_saved_step_ahead_of_mlflow_is_kept(store) -> None:
    client, uri, experiment_id, parent = store
    run_id = _run_without_params(client, experiment_id, parent)
    callback = _callback(uri, experiment_id, parent)
    callback.set_state({"pending": [Record("start", TRIAL)], "steps": {run_id: 3}})
    callback._flush()
    assert callback.steps[run_id] == 3


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code},
         "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(("error", "expected"), [
    (MlflowException("a plain error"), False),
    (MlflowException("unavailable", error_code=TEMPORARILY_UNAVAILABLE), True),
    (MlflowException("(sqlite3.OperationalError) database is locked"), True),
    (FileNotFoundError("no such file"), False),
    (PermissionError("denied"), False),
    (ValueError("bad value"), False),
    (ConnectionRefusedError("refused"), True),
    (ConnectionResetError("reset"), True),
    (TimeoutError("timed out"), True),
    (requests.ConnectionError("no connection"), True),
    (requests.Timeout("slow"), True),
    (_http_error(404), False),
    (_http_error(403), False),
    (_http_error(503), True),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
    (botocore.exceptions.NoCredentialsError(), False),
    (_client_error("AccessDenied", 403), False),
    (_client_error("NoSuchBucket", 404), False),
    (_client_error("SlowDown", 503), True),
    (_client_error("InternalError", 500), True),
    # pyarrow's S3 filesystem, S3 refusing connections (Ray's checkpoint uploads)
    (OSError("When getting information for key 'k' in bucket 'b': AWS Error "
             "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect "
             "to server"), True),
    (OSError("When uploading part for key 'k' in bucket 'b': AWS Error UNKNOWN (HTTP status "
             "503) during UploadPart operation"), True),
    (OSError("When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED "
             "during HeadObject operation"), False),
])
def test_transient_allows_outages_only(error: BaseException, expected: bool) -> None:
    assert transient(error) is expected


@pytest.mark.parametrize(("error", "expected"), [
    (MlflowException("denied", error_code=PERMISSION_DENIED), True),
    (MlflowException("who are you", error_code=UNAUTHENTICATED), True),
    (MlflowException("a plain error"), False),
    (_http_error(401), True),
    (_http_error(403), True),
    (_http_error(404), False),
    (botocore.exceptions.NoCredentialsError(), True),
    (_client_error("AccessDenied", 403), True),
    (_client_error("InvalidAccessKeyId", 403), True),
    (_client_error("NoSuchBucket", 404), False),
    (OSError("When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED "
             "during HeadObject operation"), True),
    (ConnectionRefusedError("refused"), False),
])
def test_refused_access_is_401_and_403_only(error: BaseException, expected: bool) -> None:
    assert refused_access(error) is expected


def test_a_killed_server_counts_as_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client against a port nobody listens on (a killed `mlflow server`)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Exception) as raised:
        MlflowClient(f"http://127.0.0.1:{port}").get_experiment("0")
    assert transient(raised.value), repr(raised.value)


def test_a_missing_run_is_no_outage(store) -> None:
    client = store[0]
    with pytest.raises(MlflowException) as raised:
        client.get_run("0" * 32)
    assert not transient(raised.value)


def test_a_refused_record_is_left_out_with_a_warning(store, capsys) -> None:
    client, uri, experiment_id, parent = store
    callback = _callback(uri, experiment_id, parent)
    bad = Record("result", TRIAL, {"step": 0, "metrics": {"bad key!?": 1.0},
                                   "timestamp": 1000, "node_id": None})
    good = Record("result", TRIAL, {"step": 1, "metrics": {EPOCH: 1.0}, "timestamp": 2000,
                                    "node_id": None})
    callback.pending.extend([Record("start", TRIAL), bad, good])
    callback._flush()  # no exception from a Tune hook
    assert not callback.pending
    run_id = callback.runs[TRIAL.trial_id]
    assert [m.step for m in client.get_metric_history(run_id, EPOCH)] == [1]
    assert "refused a record (result of trial_t0001)" in capsys.readouterr().err


def test_a_failed_attempt_waits_from_its_end(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    callback = MLflowTrialCallback(f"http://127.0.0.1:{port}", "1", "p" * 32, "synthetic")
    callback.pending.append(Record("start", TRIAL))
    import time

    before = time.time()
    callback._flush()
    assert callback.pending and callback.outage_since is not None
    assert callback.last_attempt >= before
    stamp = callback.last_attempt
    callback._flush()  # within RETRY_S: no new attempt
    assert callback.last_attempt == stamp and len(callback.pending) == 1


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request as MLflow's basic-auth app does a bad password (401) or a user
    without the permission (403): a plain-text body."""

    def _refuse(self) -> None:
        status = self.server.status  # type: ignore[attr-defined]
        if self.path != "/health":  # the driver's probe before it writes: not a write
            self.server.hits += 1  # type: ignore[attr-defined]
        body = b"You are not authenticated." if status == 401 else b"Permission denied"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _refusing(status: int) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    server.status, server.hits = status, 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_keep_the_queue_and_stop_the_search(status: int, capsys) -> None:
    """Not one refused record each: the queue stays whole (in Tune's state for --restore),
    no write is tried again, and the next Tune step stops the search in one line."""
    with _refusing(status) as server:
        callback = MLflowTrialCallback(f"http://127.0.0.1:{server.server_port}", "1",
                                       "p" * 32, "synthetic")
        records = [Record("start", TRIAL), Record("result", TRIAL, {
            "step": 0, "metrics": {EPOCH: 0.0}, "timestamp": 1000, "node_id": None})]
        callback.pending.extend(records)
        callback._flush()  # from a Tune hook: no exception there
        callback._flush()
        assert server.hits == 1  # type: ignore[attr-defined]
        assert callback.pending == records and callback.get_state()["pending"] == records
        with pytest.raises(TrackingRefused) as raised:
            callback.on_step_end(0, [])
        callback.on_experiment_end([])  # the stopping search leaves the rest to its state
    assert callback.pending == records
    message = raised.value.message
    assert "\n" not in message and f"failed with error code {status}" in message
    assert message.startswith(f"MLflow at http://127.0.0.1:{server.server_port} refused the "
                              "search's credentials (start of trial_t0001: ")
    assert "records not yet logged" in message and "--restore" in message
    assert "refused a record" not in capsys.readouterr().err  # nothing dropped


SUMMARY = {"best": {"cam/tiny": {"score": 61.5, "run_id": ""}}, "trials": 2, "failed": 0,
           "pairs": {"cam/tiny": {"finished": 2}}}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real `mlflow server` behind a proxy the test takes away and brings back (the server
    keeps its state, as through a load balancer's bad minute); yields (proxy URI, proxy port,
    server port, run id) with a parent run made through it in experiment 'end'."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(outages, "RETRY_S", 0.5)
    with mlflow_server(tmp_path) as server:
        port, target = free_port(), int(server.rsplit(":", 1)[1])
        uri = f"http://127.0.0.1:{port}"
        with tcp_proxy(port, target):
            client = MlflowClient(uri)
            run = client.create_run(client.create_experiment("end")).info.run_id
        yield uri, port, target, run


@pytest.mark.e2e
def test_the_search_run_ends_once_the_server_is_back(served, capsys) -> None:
    uri, port, target, run = served
    ended = threading.Event()

    def back_later() -> None:
        time.sleep(3)
        with tcp_proxy(port, target):
            ended.wait(120)

    thread = threading.Thread(target=back_later, daemon=True)
    thread.start()
    try:
        through_outage(uri, "ending the search's run", end_search_run, uri, run, "FINISHED",
                       SUMMARY, None)
        finished = MlflowClient(uri).get_run(run)
        files = {f.path for f in MlflowClient(uri).list_artifacts(run)}
    finally:
        ended.set()
        thread.join()
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics[schema.best_metric("cam/tiny")] == 61.5
    assert {schema.SUMMARY_JSON, schema.SUMMARY_MD} <= files
    said = capsys.readouterr().err
    assert f"MLflow at {uri} unreachable while ending the search's run" in said


@pytest.mark.e2e
def test_a_server_away_past_the_limit_stops_with_one_clear_error(
        served, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _, _, run = served
    monkeypatch.setenv(outages.OUTAGE_LIMIT_ENV, "2")
    with pytest.raises(TrackingUnavailable, match=rf"MLflow at {uri} unreachable for \d+ s "
                       r"while ending the search's run \(limit 2 s"):
        through_outage(uri, "ending the search's run", end_search_run, uri, run, "FINISHED",
                       SUMMARY, None)


@pytest.mark.e2e
def test_a_silent_server_does_not_hold_tunes_loop(served, monkeypatch: pytest.MonkeyPatch,
                                                   capsys) -> None:
    """A server that accepts connections and never answers (a black hole, not a refusal):
    each Tune step returns in seconds, not after the requests' 30 s timeout, the records wait
    in order and are logged once the server answers again."""
    uri, port, target, run = served
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    experiment_id = MlflowClient(f"http://127.0.0.1:{target}").get_run(run).info.experiment_id
    callback = MLflowTrialCallback(uri, experiment_id, run, "synthetic")
    records = [Record("start", TRIAL), Record("result", TRIAL, {
        "step": 0, "metrics": {EPOCH: 0.0}, "timestamp": 1000, "node_id": None})]
    callback.pending.extend(records)
    with silent_proxy(port):
        for _ in range(2):  # the first try and a retry
            time.sleep(outages.RETRY_S + 0.1)
            started = time.monotonic()
            callback.on_step_end(0, [])
            assert time.monotonic() - started < 12
            assert callback.outage_since is not None and callback.pending == records
    with tcp_proxy(port, target):
        time.sleep(outages.RETRY_S + 0.1)
        callback.on_step_end(0, [])
        assert not callback.pending and callback.outage_since is None
        run_id = callback.runs[TRIAL.trial_id]
        history = MlflowClient(uri).get_metric_history(run_id, EPOCH)
    assert [m.step for m in history] == [0]
    said = capsys.readouterr().err
    assert f"MLflow at {uri} unreachable (" in said and "timed out" in said, said
    assert "MLflow reachable again" in said


def test_only_silence_counts_as_unanswered() -> None:
    """Not a store without HTTP, nor a refused connection (MLflow's own request fails as
    fast, and says why)."""
    assert outages.unanswered("sqlite:///mlflow.db") is None
    assert outages.unanswered(f"http://127.0.0.1:{free_port()}") is None


def test_a_refusal_is_raised_at_once(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an outage (the run does not exist): no waiting, MLflow's own error. One wait
    would take a minute, far beyond a busy machine's slowest call."""
    monkeypatch.setattr(outages, "RETRY_S", 60.0)
    _, uri, _, _ = store
    started = time.monotonic()
    with pytest.raises(MlflowException) as raised:
        through_outage(uri, "ending the search's run", end_search_run, uri, "0" * 32,
                       "FINISHED", SUMMARY, None)
    assert not isinstance(raised.value, TrackingUnavailable)
    assert time.monotonic() - started < outages.RETRY_S
