"""Real servers for the integration tests: an S3 API (moto's server mode) and `mlflow server`.

Both run as subprocesses on free localhost ports, with fake credentials that the tests then
look for in everything the product writes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

BIN = Path(sys.executable).parent
FAKE_KEY_ID = "AKIAWSOLTESTKEY00001"
FAKE_SECRET = "wsol-fake-secret-do-not-log-7f3a9c"
BUCKET = "wsol-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {seconds}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _process(command: list[str], url: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def aws_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint}


@contextmanager
def s3_server(workdir: Path) -> Iterator[str]:
    """moto's S3 API on localhost with the artifact bucket; yields the endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **aws_env(endpoint)}
    with _process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                  f"{endpoint}/moto-api/", workdir / "moto.log", env):
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=FAKE_KEY_ID,
                          aws_secret_access_key=FAKE_SECRET, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint


@contextmanager
def mlflow_server(workdir: Path, s3_endpoint: str) -> Iterator[str]:
    """`mlflow server` on SQLite, proxying artifacts to s3://BUCKET/mlflow; yields its URI."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, **aws_env(s3_endpoint)}
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
               "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
    with _process(command, f"{uri}/health", workdir / "mlflow-server.log", env):
        yield uri


def bucket_objects(endpoint: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=FAKE_KEY_ID,
                      aws_secret_access_key=FAKE_SECRET, region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}
