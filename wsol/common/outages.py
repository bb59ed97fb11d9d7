"""Which failures of the tracking store (MLflow, S3 behind it) are worth trying again, and the
two ways of trying again that the search and the lifecycle commands share.

- `through_outage`: the search driver's own calls ride out an unreachable server for up to
  the outage limit (a server restart, a bad minute of S3), instead of failing a search whose
  trials ended.
- `retry_locked` and `LockRetryingClient`: `wsol promote` and `wsol evaluate` read, then
  write; concurrent commands on one store lock each other out, or set the same alias or tag
  for the first time at the same moment.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    PERMISSION_DENIED,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from wsol.common.console import error_line, say

T = TypeVar("T")
# While MLflow is unreachable the driver retries its calls and queued records this often.
RETRY_S = 5.0
OUTAGE_LIMIT_ENV = "WSOL_TRACKING_OUTAGE_LIMIT_S"
DEFAULT_OUTAGE_LIMIT_S = 900.0
# How long the driver waits for any answer from an HTTP tracking server before it writes
# its queued records (outages.unanswered): far below the requests' own timeout, which a
# large artifact upload needs.
PROBE_TIMEOUT_S = 3.0
# A SQLite store refuses a transaction while another process holds its lock (after SQLite's
# own busy wait): promote's and evaluate's calls are tried again for this long.
LOCK_RETRY_S = 60.0
LOCK_RETRY_SLEEP_S = 0.5
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


class TrackingUnavailable(MlflowException):
    """The tracking store stayed unreachable past the outage limit: the search stops, its Ray
    state and its unlogged records kept for `--restore`. An MlflowException, so the command
    line prints its message alone (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=TEMPORARILY_UNAVAILABLE)


class TrackingRefused(MlflowException):
    """The tracking store (or S3 behind it) refused the search's credentials (401/403):
    every later record would be refused the same way, so the search stops at its next Tune
    step with its unlogged records kept for `--restore`, instead of dropping them one by
    one. An MlflowException, so the command line prints its message alone."""

    def __init__(self, message: str):
        super().__init__(message, error_code=PERMISSION_DENIED)


# S3's refusals of a key, a signature or a token (botocore's error codes).
_AWS_REFUSALS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "ExpiredToken", "InvalidToken", "TokenRefreshRequired")


def refused_access(error: BaseException) -> bool:
    """An authorisation failure (401 / 403 from MLflow or S3, no or bad AWS credentials):
    not an outage, nor one bad record. An error raised from another counts when the one it
    came from does."""
    return in_cause_chain(error, _refused_one)


def _refused_one(error: BaseException) -> bool:
    if isinstance(error, MlflowException):
        return error.error_code in (ErrorCode.Name(UNAUTHENTICATED),
                                    ErrorCode.Name(PERMISSION_DENIED))
    if isinstance(error, requests.HTTPError):
        return error.response is not None and error.response.status_code in (401, 403)
    if type(error).__module__.split(".")[0] in ("botocore", "boto3"):
        import botocore.exceptions as bc

        if isinstance(error, bc.NoCredentialsError | bc.PartialCredentialsError):
            return True
        if isinstance(error, bc.ClientError):
            response = error.response or {}
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status in (401, 403) or \
                response.get("Error", {}).get("Code") in _AWS_REFUSALS
        return False
    # pyarrow's S3 filesystem (Ray's checkpoint uploads): OSError naming the AWS error.
    return isinstance(error, OSError) and "AWS Error ACCESS_DENIED" in str(error)


def outage_limit_s() -> float:
    """How long the driver keeps a search going while MLflow is unreachable
    ($WSOL_TRACKING_OUTAGE_LIMIT_S, default 15 minutes): a server restart or a bad minute of S3
    is ridden out, a store that is gone for good stops the search instead of training blind."""
    raw = os.environ.get(OUTAGE_LIMIT_ENV)
    if raw is None:
        return DEFAULT_OUTAGE_LIMIT_S
    try:
        limit = float(raw)
    except ValueError:
        limit = math.nan
    if not (math.isfinite(limit) and limit > 0):  # nan would switch the limit off
        raise ValueError(f"${OUTAGE_LIMIT_ENV}: {raw!r} is not a finite number of seconds > 0")
    return limit


def through_outage(uri: str, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, tried again every RETRY_S while MLflow is unreachable, up to
    the outage limit: the driver's own reads and writes around the trials (the summary, the
    parent run's end) ride out a server restart as the trials' records do, instead of
    failing a search whose trials all ended."""
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
                say(f"MLflow at {uri} unreachable while {what} ({error_line(str(error))[:200]}); "
                    f"trying again every {RETRY_S:.0f} s for up to {outage_limit_s():.0f} s",
                    error=True)
        time.sleep(RETRY_S)


def retry_locked(call: Callable[..., T], *args: Any, merges: bool = False, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, tried again for up to LOCK_RETRY_S while the store is locked
    by another process (a refused SQLite transaction is rolled back, so trying again is
    safe). A call that `merges` a row (MLflow's set_* calls read a key, then insert or update
    it) is also tried again when another process inserted the same key meanwhile. Any other
    error, or one past the limit, is raised."""
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            again = store_locked(error) or (merges and insert_conflict(error))
            if not again or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_RETRY_SLEEP_S)


class LockRetryingClient(MlflowClient):
    """The MlflowClient of `wsol promote` and `wsol evaluate`: each call they make goes
    through `retry_locked`, and the calls that merge a row say so. A call not listed here
    is made once (tests/common/test_outages.py checks that the lifecycle uses none)."""

    def get_run(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().get_run, *args, **kwargs)

    def search_runs(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().search_runs, *args, **kwargs)

    def search_experiments(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().search_experiments, *args, **kwargs)

    def get_experiment_by_name(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().get_experiment_by_name, *args, **kwargs)

    def list_artifacts(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().list_artifacts, *args, **kwargs)

    def download_artifacts(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().download_artifacts, *args, **kwargs)

    def get_registered_model(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().get_registered_model, *args, **kwargs)

    def get_model_version(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().get_model_version, *args, **kwargs)

    def get_model_version_by_alias(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().get_model_version_by_alias, *args, **kwargs)

    def search_model_versions(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().search_model_versions, *args, **kwargs)

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().create_run, *args, **kwargs)

    def create_registered_model(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().create_registered_model, *args, **kwargs)

    def create_model_version(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().create_model_version, *args, **kwargs)

    def delete_model_version(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().delete_model_version, *args, **kwargs)

    def log_param(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().log_param, *args, **kwargs)

    def log_batch(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().log_batch, *args, **kwargs)

    def log_artifact(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().log_artifact, *args, **kwargs)

    def log_artifacts(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().log_artifacts, *args, **kwargs)

    def set_terminated(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().set_terminated, *args, **kwargs)

    # These merge a row: another process may insert the same key first.

    def set_tag(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().set_tag, *args, merges=True, **kwargs)

    def set_model_version_tag(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().set_model_version_tag, *args, merges=True, **kwargs)

    def set_registered_model_alias(self, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(super().set_registered_model_alias, *args, merges=True, **kwargs)


def lock_retrying(client: MlflowClient) -> LockRetryingClient:
    """The same store's client, retrying (see LockRetryingClient)."""
    if isinstance(client, LockRetryingClient):
        return client
    return LockRetryingClient(client.tracking_uri, client._registry_uri)


def transient(error: BaseException) -> bool:
    """A failure that a later attempt can get past: no connection, a timeout, a gateway or
    unavailable server (502/503/504), S3 unreachable or throttling, SQLite locked by another
    writer. Anything else (a refusal, a missing file, a plain server error) is not. An error
    raised from another (`raise ... from`) counts when the one it came from does."""
    return in_cause_chain(error, _transient_one)


def in_cause_chain(error: BaseException, test: Callable[[BaseException], bool]) -> bool:
    """`test` holds for `error` or for one it was raised from (its `__cause__` chain)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if test(current):
            return True
        current = current.__cause__
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


def unanswered(uri: str, timeout_s: float | None = None) -> requests.Timeout | None:
    """The timeout when an HTTP(S) tracking server gave no answer at all to a GET of its
    /health within `timeout_s` (PROBE_TIMEOUT_S), else None. A server that accepts
    connections and never answers (a hung host or proxy: a black hole, not a refusal) would
    hold each of MLflow's requests for its full timeout, and the callback's writes with it
    Tune's control loop; this probe costs at most `timeout_s`. Any answer, whatever its
    status (401, 404 behind a proxy), and any other failure (refused: MLflow's own request
    fails as fast) leave the judgement to the real request."""
    if not uri.startswith(("http://", "https://")):
        return None
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    started = time.monotonic()
    try:
        with requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s, stream=True):
            return None
    except requests.Timeout as error:
        return error
    except requests.RequestException as error:  # e.g. a TLS handshake that timed out
        if time.monotonic() - started < timeout_s:
            return None
        return requests.Timeout(f"no answer from {uri} in {timeout_s:.0f} s ({error})")


def quick_failing_http() -> None:
    """MLflow's client retries a request 7 times with exponential backoff (minutes in all)
    before it raises; the driver retries on its own between Tune steps instead, so that an
    outage never blocks the search loop. A user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
