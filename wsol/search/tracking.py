"""Everything MLflow: one parent run per search, one child run per trial, from the driver.

The driver logs (a Ray Tune callback), so trials on any node need no MLflow access of their
own, early-stopped and failed trials are closed properly, and a restored search finds its
existing child runs by their Ray trial id instead of creating duplicates. Only values from
the experiment config and the trials are logged, never the environment (credentials).

What a user browses: experiments tagged as model training, trial runs named `cam/tiny #01`,
and a parent run that ends with the search (FINISHED / FAILED / KILLED) holding the best score
per pair as metrics and the summary table as an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import requests
from mlflow.entities import Metric, Param, Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE, ErrorCode
from mlflow.tracking import MlflowClient
from ray.tune import Callback, Checkpoint
from ray.tune.experiment import Trial

from wsol.common import tracking_schema as schema
from wsol.common.protocol import SELECTION_SPLIT
from wsol.search.pairs import PAIR_KEY

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns/artifacts"
# A trial's files that its run keeps: the checkpoint under schema.CHECKPOINT_FOLDER.
ARTIFACTS = ("best.pt", schema.METRICS_JSON, *schema.PICTURES)
# MLflow 3.17's UI picks the view from one global GenAI / Model training switch (browser
# storage, GenAI by default) rather than from the tag; this query opens the model view.
UI_QUERY = "workflowType=machine_learning"
# While MLflow is unreachable the driver retries its queued records this often.
RETRY_S = 5.0
OUTAGE_LIMIT_ENV = "WSOL_TRACKING_OUTAGE_LIMIT_S"
DEFAULT_OUTAGE_LIMIT_S = 900.0
T = TypeVar("T")
# MLflow's client turns a failed request into a plain MlflowException (status 500) with the
# requests error as text: these are the ones with no connection or retries of 5xx used up.
_TRANSIENT_TEXTS = ("Max retries exceeded", "Connection refused", "Read timed out",
                    "Connection aborted", "Connection reset", "failed with timeout exception")
_TRANSIENT_HTTP = (502, 503, 504)
# pyarrow's S3 filesystem (Ray's checkpoint uploads) raises OSError naming the AWS error.
_PYARROW_S3_TEXTS = ("AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
                     "AWS Error THROTTLING", "AWS Error SERVICE_UNAVAILABLE",
                     "AWS Error REQUEST_TIMEOUT", "AWS Error INTERNAL_FAILURE",
                     "(HTTP status 50")


def tracking_uri(given: str | None = None) -> str:
    """The flag or config value, else $MLFLOW_TRACKING_URI, else the local SQLite store."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from wsol import __version__

        return f"wsol {__version__}"


def dataset_fingerprint(metadata_root: str | Path) -> str:
    """sha256 over every metadata file (names and contents), so runs on other data differ."""
    digest = hashlib.sha256()
    root = Path(metadata_root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ui_link(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's own relative link (append it to the server's address) to one run, or
    to the runs table with the trials flat and best first (sorted by anything but start time,
    the table stops folding trials under their search's run), in the model-training view."""
    if run_id:
        return f"#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"
    order = urllib.parse.quote(f"metrics.`{schema.SCORE}`", safe=".")
    return f"#/experiments/{experiment_id}/runs?{UI_QUERY}&orderByKey={order}&orderByAsc=false"


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The tracking server's page, or `mlflow ui`'s default address for a local store; no
    credentials (a user:password@ in the URI is left out)."""
    base = "http://127.0.0.1:5000"
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(tracking_uri)
        host = parts.netloc.rsplit("@", 1)[-1]
        base = f"{parts.scheme}://{host}{parts.path.rstrip('/')}"
    return f"{base}/{ui_link(experiment_id, run_id)}"


def trial_run_name(pair: str, number: int) -> str:
    return f"{pair} #{number:02d}"


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, created if missing; tagged as model training either way, so
    experiments made by older versions get the tag too."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if tracking_uri.startswith("sqlite:"):
            location = (Path(DEFAULT_ARTIFACT_ROOT).resolve()).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={schema.EXPERIMENT_KIND: schema.MODEL_TRAINING})
        except MlflowException as error:  # another search made it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise error from None
    if found.tags.get(schema.EXPERIMENT_KIND) != schema.MODEL_TRAINING:
        client.set_experiment_tag(found.experiment_id, schema.EXPERIMENT_KIND,
                                  schema.MODEL_TRAINING)
    return found.experiment_id


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(f"{name}.", value))
        else:
            out[name] = str(value)[:500]
    return out


def open_store(tracking_uri: str, wait_s: float = 60) -> MlflowClient:
    """A client of the store. MLflow builds a new SQLite file's tables on first use; a second
    search starting at that moment fails inside the build (an alembic error) and waits for
    the first one's instead."""
    deadline = time.time() + wait_s
    while True:
        try:
            return MlflowClient(tracking_uri)
        except Exception:
            if not tracking_uri.startswith("sqlite:") or time.time() > deadline:
                raise
            time.sleep(1)


def start_search_run(tracking_uri: str, experiment: dict[str, Any], spaces: dict[str, Path],
                     fingerprint: str) -> tuple[str, str]:
    """Creates the parent run; returns (experiment id, run id)."""
    client = open_store(tracking_uri)
    if tracking_uri.startswith("sqlite:"):
        _note_other_writers(client)
    experiment_id = ensure_experiment(client, experiment["name"], tracking_uri)
    run = client.create_run(experiment_id, run_name=f"search {experiment['name']}", tags={
        schema.KIND: schema.SEARCH, schema.DATASET: experiment["dataset"],
        schema.CODE_VERSION: code_version(), schema.DATASET_FINGERPRINT: fingerprint,
        schema.SELECTION_SPLIT: SELECTION_SPLIT,
    })
    run_id = run.info.run_id
    for key, value in _flat("", experiment).items():
        client.log_param(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / schema.EXPERIMENT_JSON).write_text(json.dumps(experiment, indent=2))
        client.log_artifact(run_id, str(Path(tmp) / schema.EXPERIMENT_JSON))
        for path in spaces.values():
            client.log_artifact(run_id, str(path), schema.SPACES_FOLDER)
    return experiment_id, run_id


def _note_other_writers(client: MlflowClient) -> None:
    """Says up front when another search is writing to the same SQLite file: SQLite takes
    one writer at a time, so both searches wait on each other's writes (retried here when
    the file is locked); a shared `mlflow server` is the store made for that."""
    from wsol.search.progress import say

    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(
        experiments, f"tags.`{schema.KIND}` = '{schema.SEARCH}' and attributes.status = "
        "'RUNNING'", max_results=5) if experiments else []
    if running:
        names = ", ".join(r.info.run_name or r.info.run_id for r in running)
        say(f"note: another search ({names}) is writing to this SQLite store: SQLite takes one "
            "writer at a time (this search retries when the file is locked); for searches at "
            "once, share one `mlflow server` instead (README, Tracking server)", error=True)


def reopen_search_run(tracking_uri: str, run_id: str) -> None:
    """A restored search runs again: its parent run too, until it ends."""
    client = MlflowClient(tracking_uri)
    client.update_run(run_id, RunStatus.to_string(RunStatus.RUNNING))
    if schema.END_REASON in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, schema.END_REASON)


def end_search_run(tracking_uri: str, run_id: str, status: str,
                   summary: dict[str, Any] | None = None, reason: str | None = None) -> None:
    """Closes the parent run with the search: the best train-fullsup score per pair as
    metrics `best/<method>/<backbone>`, the summary as summary.md / summary.json, the status
    (FINISHED, FAILED or KILLED) and, if it did not finish, why."""
    client = MlflowClient(tracking_uri)
    if reason:
        client.set_tag(run_id, schema.END_REASON, _reason(reason))
    if summary is not None:
        metrics = [mlflow.entities.Metric(schema.best_metric(pair), float(best["score"]),
                                          _now_ms(), 0)
                   for pair, best in sorted(summary["best"].items())]
        metrics += [mlflow.entities.Metric(name, float(summary[key]), _now_ms(), 0)
                    for name, key in ((schema.TRIALS, "trials"), (schema.TRIALS_FAILED, "failed"))]
        client.log_batch(run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / schema.SUMMARY_JSON).write_text(json.dumps(summary, indent=2,
                                                                    default=str))
            (Path(tmp) / schema.SUMMARY_MD).write_text(summary_markdown(summary, status))
            client.log_artifact(run_id, str(Path(tmp) / schema.SUMMARY_JSON))
            client.log_artifact(run_id, str(Path(tmp) / schema.SUMMARY_MD))
    client.set_terminated(run_id, status)


def summary_markdown(summary: dict[str, Any], status: str) -> str:
    """The search's result table as MLflow's artifact viewer renders it (links stay in the
    UI)."""
    experiment_id = summary.get("experiment_id", "")
    lines = [f"# Search {summary.get('name', '')}: {status}", "",
             f"{summary['trials']} trials, {summary['failed']} failed. Best train-fullsup "
             "score per (method, backbone):", "",
             "| method/backbone | best score | trial | trials (finished / stopped early / "
             "failed) |", "|---|---:|---|---|"]
    pairs = summary.get("pairs", {})
    for pair in sorted(set(pairs) | set(summary["best"])):
        counts = pairs.get(pair, {})
        done = (f"{counts.get('finished', 0)} / {counts.get('stopped', 0)} / "
                f"{counts.get('failed', 0)}")
        best = summary["best"].get(pair)
        if best is None:
            lines.append(f"| {pair} | - | - | {done} |")
            continue
        name = best.get("run_name") or best.get("run_id") or "?"
        trial = f"[{name}]({ui_link(experiment_id, best['run_id'])})" if best.get("run_id") \
            else name
        lines.append(f"| {pair} | {best['score']:.2f} | {trial} | {done} |")
    return "\n".join(lines) + "\n"


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackingUnavailable(MlflowException):
    """The tracking store stayed unreachable past the outage limit: the search stops, its Ray
    state and its unlogged records kept for `--restore`. An MlflowException, so the command
    line prints its message alone (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=TEMPORARILY_UNAVAILABLE)


def outage_limit_s() -> float:
    """How long the driver keeps a search going while MLflow is unreachable
    ($WSOL_TRACKING_OUTAGE_LIMIT_S, default 15 minutes): a server restart or a bad minute of S3
    is ridden out, a store that is gone for good stops the search instead of training blind."""
    return float(os.environ.get(OUTAGE_LIMIT_ENV, DEFAULT_OUTAGE_LIMIT_S))


def through_outage(uri: str, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, tried again every RETRY_S while MLflow is unreachable, up to
    the outage limit: the driver's own reads and writes around the trials (the summary, the
    parent run's end) ride out a server restart as the trials' records do, instead of
    failing a search whose trials all ended."""
    from wsol.search.progress import say

    since = None
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not transient(error):
                raise
            away = 0.0 if since is None else time.time() - since
            if away > outage_limit_s():
                raise TrackingUnavailable(
                    f"MLflow at {uri} unreachable for {away:.0f} s while {what} (limit "
                    f"{outage_limit_s():.0f} s, ${OUTAGE_LIMIT_ENV})") from error
            if since is None:
                since = time.time()
                say(f"MLflow at {uri} unreachable while {what} ({_reason(str(error))[:200]}); "
                    f"trying again every {RETRY_S:.0f} s for up to {outage_limit_s():.0f} s",
                    error=True)
        time.sleep(RETRY_S)


def transient(error: BaseException) -> bool:
    """A failure that a later attempt can get past: no connection, a timeout, a gateway or
    unavailable server (502/503/504), S3 unreachable or throttling, SQLite locked by another
    writer. Anything else (a refusal, a missing file, a plain server error) is not. An error
    raised from another (`raise ... from`) counts when the one it came from does."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _transient_one(error):
            return True
        error = error.__cause__
    return False


def store_locked(error: BaseException) -> bool:
    """The store busy with another process's transaction (SQLite locked, raw or wrapped by
    MLflow, or MLflow's TEMPORARILY_UNAVAILABLE): trying again is safe, the refused
    transaction was rolled back."""
    if isinstance(error, MlflowException) and \
            error.error_code == ErrorCode.Name(TEMPORARILY_UNAVAILABLE):
        return True
    return "database is locked" in str(error)


def insert_conflict(error: BaseException) -> bool:
    """A write that reads a key and then inserts its row lost to another process inserting
    the same key in between (MLflow's set_* calls merge a row: alias, tag). The row exists
    now, so the same call made again updates it. The database's own error, as MLflow passes
    it on directly or through a server: IntegrityError (SQLite, MySQL), UniqueViolation
    (PostgreSQL)."""
    return isinstance(error, MlflowException) and \
        any(text in str(error) for text in ("IntegrityError", "UniqueViolation"))


def _transient_one(error: BaseException) -> bool:
    if store_locked(error):
        return True
    text = str(error)
    if isinstance(error, MlflowException):
        return (error.get_http_status_code() in _TRANSIENT_HTTP
                or any(t in text for t in _TRANSIENT_TEXTS))
    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is not None and status >= 500
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(error, requests.RequestException):
        return isinstance(error, requests.exceptions.RetryError)  # retries of 5xx ran out
    if isinstance(error, ConnectionError | TimeoutError | socket.timeout):
        return True
    module = type(error).__module__.split(".")[0]
    if module == "urllib3":
        import urllib3.exceptions as u3

        return isinstance(error, u3.NewConnectionError | u3.ConnectTimeoutError
                          | u3.ReadTimeoutError | u3.ProtocolError | u3.MaxRetryError)
    if module in ("botocore", "boto3"):
        return _transient_aws(error)
    if isinstance(error, OSError):  # pyarrow's S3 filesystem: OSError with the AWS error
        return any(t in text for t in _PYARROW_S3_TEXTS)
    return False


def _transient_aws(error: BaseException) -> bool:
    import botocore.exceptions as bc

    if isinstance(error, bc.EndpointConnectionError | bc.ConnectTimeoutError
                  | bc.ReadTimeoutError | bc.ConnectionClosedError):
        return True
    if isinstance(error, bc.ClientError):
        response = error.response or {}
        code = response.get("Error", {}).get("Code", "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or code in ("SlowDown", "Throttling", "ThrottlingException",
                                         "RequestTimeout", "ServiceUnavailable")
    return False


def _quick_failing_http() -> None:
    """MLflow's client retries a request 7 times with exponential backoff (minutes in all)
    before it raises; the callback retries on its own between Tune steps instead, so that an
    outage never blocks the search loop. A user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class MLflowTrialCallback(Callback):
    """Logs each trial to its child run. Every record goes through a queue that is written
    in order: while MLflow (or S3 behind it) is unreachable the queue waits and the search
    goes on; it is retried every few seconds, saved with Tune's experiment state (so a
    restored search still logs it), and a search that cannot log for longer than the outage
    limit stops. Records are idempotent on retry (a run is looked up by trial id before it
    is created; a metric repeats its timestamp, which MLflow stores once), and an epoch a
    trial repeats after losing its worker is logged once (the first time)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 dataset: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.dataset = dataset
        self.runs: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.placed: set[str] = set()
        self.pending: list[Record] = []
        self.steps: dict[str, int] = {}
        self.outage_since: float | None = None
        self.last_attempt = 0.0
        self.gave_up = False

    @property
    def client(self) -> MlflowClient:
        _quick_failing_http()
        return MlflowClient(self.tracking_uri)

    def get_state(self) -> dict[str, Any]:
        return {"pending": list(self.pending), "steps": dict(self.steps)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pending = list(state.get("pending", []))
        self.steps = dict(state.get("steps", {}))

    def run_of(self, trial_id: str) -> Run | None:
        existing = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{schema.PARENT}` = '{self.parent_run_id}' "
            f"and tags.`{schema.RAY_TRIAL_ID}` = '{trial_id}'",
        )
        return existing[0] if existing else None

    def name_of(self, trial: Trial) -> str:
        """The trial's run name (`cam/tiny #01`), or Ray's name before its run exists."""
        return self.names.get(trial.trial_id, str(trial))

    def _next_number(self, client: MlflowClient, method: str, backbone: str) -> int:
        """Trials are numbered per pair in the order they start; runs of this search left by
        a killed driver (also deleted ones) keep their numbers."""
        runs = client.search_runs(
            [self.experiment_id],
            f"tags.`{schema.PARENT}` = '{self.parent_run_id}' "
            f"and tags.`{schema.METHOD}` = '{method}' and tags.`{schema.BACKBONE}` = '{backbone}'",
            run_view_type=ViewType.ALL,
            max_results=10_000)
        numbers = [int(r.data.tags.get(schema.TRIAL_NUMBER, 0)) for r in runs]
        return max(numbers, default=0) + 1

    def _run_for(self, trial: TrialInfo) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        client = self.client
        run = self.run_of(trial.trial_id)
        if run is not None:
            run_id = run.info.run_id
            self.names[trial.trial_id] = run.info.run_name
            if run.info.status != "RUNNING":
                client.update_run(run_id, "RUNNING")
            # A retried start whose run was made but whose params were not logged.
            missing = [Param(k, v) for k, v in _flat("", trial.config).items()
                       if k not in run.data.params]
            if missing:
                client.log_batch(run_id, params=missing)
            # Tune saves `steps` now and then, so a restored value can lag what MLflow has.
            history = client.get_metric_history(run_id, _EPOCH_METRIC)
            self.steps[run_id] = max(self.steps.get(run_id, -1),
                                     max((m.step for m in history), default=-1))
        else:
            pair = trial.config[PAIR_KEY]
            method, backbone = pair.split("/")
            number = self._next_number(client, method, backbone)
            name = trial_run_name(pair, number)
            run_id = client.create_run(self.experiment_id, run_name=name, tags={
                schema.PARENT: self.parent_run_id, schema.RAY_TRIAL_ID: trial.trial_id,
                schema.TRIAL_NUMBER: str(number), schema.RAY_TRIAL_NAME: trial.name,
                schema.KIND: schema.TRIAL, schema.METHOD: method, schema.BACKBONE: backbone,
                schema.DATASET: self.dataset, schema.SELECTION_SPLIT: SELECTION_SPLIT,
            }).info.run_id
            self.names[trial.trial_id] = name
            client.log_batch(run_id, params=[Param(k, v)
                                             for k, v in _flat("", trial.config).items()])
        self.runs[trial.trial_id] = run_id
        return run_id

    # The Tune hooks only queue records; _flush writes them.

    def _queue(self, kind: str, trial: Trial, **data: Any) -> None:
        info = TrialInfo(trial.trial_id, dict(trial.config), str(trial))
        self.pending.append(Record(kind, info, data))
        self._flush()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._queue("start", trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict, **info: Any) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = {schema.per_epoch(k): float(v) for k, v in result.items()
                   if k in _METRICS and v is not None}
        self._queue("result", trial, step=step, metrics=metrics,
                    timestamp=int(result.get("timestamp", 0)) * 1000,
                    node_id=result.get("node_id"))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        from wsol.search.progress import say

        error = trial.get_error()
        # Tune may not hold the error yet (a lost worker, or a trial error still in flight).
        why = f" ({_reason(str(error))[:160]})" if error else ""
        say(f"{self.name_of(trial)} failed{why}; retry {trial.num_failures} of "
            f"{trial.max_failures} from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self._queue("close", trial, error=None, checkpoint=trial.checkpoint, stamp=_now_ms())

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        # Ray writes the error text after this hook; on_experiment_end adds it as the reason.
        self._queue("close", trial, error="trial failed", checkpoint=trial.checkpoint,
                    stamp=_now_ms())

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._flush()
        self._check_outage()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self.gave_up:  # the search is stopping for the outage: its state keeps the rest
            return
        for trial in trials:
            error = trial.get_error() if trial.status == Trial.ERROR else None
            if error:
                tries = f"{trial.num_failures} failures (max_failures {trial.max_failures}): " \
                    if trial.max_failures else ""
                self._queue("reason", trial, reason=tries + _reason(str(error)))
        self.pending.append(Record("orphans", TrialInfo("", {}, ""),
                                   {"known": {trial.trial_id for trial in trials}}))
        while True:
            self._flush()
            if not self.pending:
                return
            self._check_outage()
            time.sleep(RETRY_S)

    def _flush(self) -> None:
        """Writes the queued records in order; on a transient failure keeps them for the next
        try, at most every RETRY_S."""
        if self.outage_since is not None and time.time() - self.last_attempt < RETRY_S:
            return
        while self.pending:
            try:
                self._write(self.pending[0])
            except Exception as error:
                if not transient(error):
                    self._drop(self.pending.pop(0), error)
                    continue
                # From the failed attempt's end: one that hung on a timeout waits in full.
                self.last_attempt = time.time()
                self._outage(error)
                return
            self.pending.pop(0)
            if self.outage_since is not None:
                self._recovered()

    def _drop(self, record: Record, error: BaseException) -> None:
        """A record MLflow refused (not an outage: retrying it would fail the same way) is
        left out with a warning, so that one bad write neither stops the search nor blocks
        the queue (and a --restore) behind it."""
        from wsol.search.progress import say

        what = f"{record.kind} of {record.trial.name}" if record.trial.name else record.kind
        say(f"warning: MLflow at {self.tracking_uri} refused a record ({what}), not logged: "
            f"{type(error).__name__}: {_reason(str(error))[:300]}", error=True)

    def _outage(self, error: BaseException) -> None:
        from wsol.search.progress import say

        if self.outage_since is None:
            self.outage_since = time.time()
            say(f"MLflow at {self.tracking_uri} unreachable ({_reason(str(error))[:200]}); "
                f"the search goes on and its records wait (up to {outage_limit_s():.0f} s)",
                error=True)

    def _check_outage(self) -> None:
        """Stops the search (from a Tune step, where an exception ends fit()) once MLflow has
        been unreachable for longer than the limit."""
        if self.outage_since is None:
            return
        away = time.time() - self.outage_since
        if away <= outage_limit_s():
            return
        self.gave_up = True
        raise TrackingUnavailable(
            f"MLflow at {self.tracking_uri} unreachable for {away:.0f} s (limit "
            f"{outage_limit_s():.0f} s, ${OUTAGE_LIMIT_ENV}); the search stopped with "
            f"{len(self.pending)} records not yet logged, kept in its Ray state. When MLflow "
            "is back, run the same search command with --restore to resume it and log them.")

    def _recovered(self) -> None:
        from wsol.search.progress import say

        assert self.outage_since is not None
        say(f"MLflow reachable again after {time.time() - self.outage_since:.0f} s; "
            f"{len(self.pending)} records still to log", error=True)
        self.outage_since = None

    def _write(self, record: Record) -> None:
        if record.kind == "orphans":
            self._retire_orphans(record.data["known"])
            return
        run_id = self._run_for(record.trial)
        client = self.client
        if record.kind == "result":
            self._log_result(client, run_id, record.trial.trial_id, record.data)
        elif record.kind == "close":
            self._close(client, run_id, record.data)
        elif record.kind == "reason":
            client.set_tag(run_id, schema.FAILURE_REASON, record.data["reason"])

    def _log_result(self, client: MlflowClient, run_id: str, trial_id: str,
                    data: dict[str, Any]) -> None:
        """An epoch already logged (a trial that lost its worker repeats the epochs after its
        last checkpoint) is skipped: each step of a run's history is one evaluation."""
        if data["node_id"] and trial_id not in self.placed:
            client.set_tag(run_id, schema.RAY_NODE_ID, data["node_id"])
            self.placed.add(trial_id)
        if data["step"] <= self.steps.get(run_id, -1):
            return
        client.log_batch(run_id, metrics=[Metric(k, v, data["timestamp"], data["step"])
                                          for k, v in data["metrics"].items()])
        self.steps[run_id] = data["step"]

    def _retire_orphans(self, known: set[str]) -> None:
        """Child runs that a killed driver made for trials Ray had not saved yet: the restored
        search spent their budget on new trials, so unfinished ones are deleted (MLflow keeps
        them restorable) and finished ones, real results, are only tagged."""
        client = self.client
        children = client.search_runs([self.experiment_id],
                                      f"tags.`{schema.PARENT}` = '{self.parent_run_id}'")
        for run in children:
            trial_id = run.data.tags.get(schema.RAY_TRIAL_ID)
            if trial_id is None or trial_id in known:
                continue
            client.set_tag(run.info.run_id, schema.ORPHANED,
                           "the driver died before Ray saved this trial")
            if run.info.status != "FINISHED":
                client.set_terminated(run.info.run_id, "KILLED")
                client.delete_run(run.info.run_id)

    def _close(self, client: MlflowClient, run_id: str, data: dict[str, Any]) -> None:
        error: str | None = data["error"]
        checkpoint: Checkpoint | None = data["checkpoint"]
        if error is not None:
            client.set_tag(run_id, schema.FAILURE_REASON, _reason(error))
        if checkpoint is not None:
            with checkpoint.as_directory() as saved:
                self._log_selection(client, run_id, Path(saved), data["stamp"])
        status = RunStatus.to_string(RunStatus.FAILED if error else RunStatus.FINISHED)
        client.set_terminated(run_id, status)

    def _log_selection(self, client: MlflowClient, run_id: str, saved: Path,
                       stamp: int) -> None:
        summary_path = saved / schema.METRICS_JSON
        if not summary_path.exists():
            return
        summary = json.loads(summary_path.read_text())
        selected = summary.get("metrics") or {}
        client.set_tag(run_id, schema.SELECTED_ON, summary["selected_on"])
        if summary.get("selected_epoch") is not None:
            client.set_tag(run_id, schema.SELECTED_EPOCH, str(summary["selected_epoch"]))
        for key in schema.CHOICES:
            client.set_tag(run_id, schema.selected(key), str(selected.get(key)))
        client.log_batch(run_id, metrics=[
            Metric(schema.selected_metric(key), float(value), stamp, 0)
            for key, value in selected.items() if key in _METRICS and value is not None])
        for name in ARTIFACTS:
            if (saved / name).exists():
                client.log_artifact(run_id, str(saved / name),
                                    schema.CHECKPOINT_FOLDER if name.endswith(".pt") else None)


@dataclass(frozen=True)
class TrialInfo:
    """What a record needs of its trial to find or make its run (picklable, unlike a Trial)."""

    trial_id: str
    config: dict[str, Any]
    name: str


@dataclass
class Record:
    """One queued write: start (make or find the run), result (one epoch), close, reason (a
    failed trial's error), orphans (retire runs Ray does not know)."""

    kind: str
    trial: TrialInfo
    data: dict[str, Any] = field(default_factory=dict)


def _reason(error: str) -> str:
    """The exception line of a traceback ('NonFiniteLossError: non-finite loss ...')."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "trial failed")[:4000]


_METRICS = set(schema.TRIAL_METRICS)
_EPOCH_METRIC = schema.per_epoch("epoch")  # logged at every evaluation: a run's last step
