"""Real servers for the integration tests: an S3 API (moto's server mode), `mlflow server`,
PostgreSQL, and Ray nodes started with `ray start` as a cluster's start commands do.

All run as subprocesses on free localhost ports, with fake credentials that the tests then
look for in everything the product writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
def mlflow_server(workdir: Path, s3_endpoint: str | None = None, app: str | None = None,
                  env: dict[str, str] | None = None, port: int | None = None) -> Iterator[str]:
    """`mlflow server` on SQLite, proxying artifacts to s3://BUCKET/mlflow (or to a folder
    without `s3_endpoint`), optionally as one of MLflow's apps (`basic-auth`); yields its URI.
    The same `workdir` and `port` restart it on the same store and address."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, **(aws_env(s3_endpoint) if s3_endpoint else {}), **(env or {})}
    artifacts = f"s3://{BUCKET}/mlflow" if s3_endpoint else str(workdir / "mlflow-artifacts")
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
               "--artifacts-destination", artifacts, *(["--app-name", app] if app else [])]
    with _process(command, f"{uri}/health", workdir / "mlflow-server.log", env):
        yield uri


# A script's own `handle(reader, writer)` served on 127.0.0.1:argv[1], "ready" once listening.
_SERVE = """
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]),
                                        reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

_PROXY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    try:
        target = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, target[1]), pipe(target[0], writer))
"""


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """A real PostgreSQL (pgserver's binaries) with its data and Unix socket in `workdir`,
    trusting local connections; yields a SQLAlchemy URL template with `{password}` to fill in.
    Any password is accepted, so a test can put one in the URL and look for it afterwards."""
    import pgserver

    server = pgserver.get_server(workdir, cleanup_mode="delete")
    try:
        yield f"postgresql+psycopg2://postgres:{{password}}@/postgres?host={workdir}"
    finally:
        server.cleanup()


@contextmanager
def tcp_proxy(port: int, target: int) -> Iterator[None]:
    """Forwards 127.0.0.1:`port` to `target`: stopping it takes a service away (connections
    refused) while the service behind keeps its state, as S3 keeps a bucket through its bad
    minutes; starting it again on the same port brings the service back."""
    with _script_server(_PROXY + _SERVE, port, target):
        yield


_SILENT = """
import asyncio, sys

async def handle(reader, writer):
    try:
        while await reader.read(65536):
            pass  # read and never answer
    except OSError:
        pass
    writer.close()
"""


@contextmanager
def silent_proxy(port: int) -> Iterator[None]:
    """A black hole on 127.0.0.1:`port`: connections are accepted and what is sent is read,
    but nothing ever answers (a hung host or load balancer, not a refusal). Stopping it
    resets its connections; a tcp_proxy on the same port then brings the service back."""
    with _script_server(_SILENT + _SERVE, port):
        yield


@contextmanager
def _script_server(script: str, *args: int) -> Iterator[None]:
    """`script` run in its own Python, from its "ready" line until the block ends."""
    process = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield
    finally:
        process.kill()
        process.wait()


def bucket_objects(endpoint: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=FAKE_KEY_ID,
                      aws_secret_access_key=FAKE_SECRET, region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def kill_mlflow_server(workdir: Path) -> None:
    """SIGKILL the `mlflow server` of `workdir` (and its workers), as a crash would end it."""
    kill_processes_mentioning(str(workdir / "mlflow.db"))


def _processes() -> Iterator[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process still there when /proc is read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), int(stat.rsplit(")", 1)[1].split()[1]), cmdline


def ray_workers(temp_dir: str, title: str = "ray::ImplicitFunc") -> dict[int, str]:
    """The worker processes (by process title) of the nodes under `temp_dir`, each with its
    node's folder name (`h`, `w0`, ...): a raylet's children, found by the raylet's command
    line, so another Ray instance on the machine is never touched."""
    raylets: dict[int, str] = {}
    parents: dict[int, int] = {}
    titles: dict[int, bytes] = {}
    for pid, parent, cmdline in _processes():
        parents[pid] = parent
        titles[pid] = cmdline
        if b"raylet" in cmdline.split(b"\0")[0] and temp_dir.encode() in cmdline:
            node = cmdline.split(temp_dir.encode() + b"/", 1)[1].split(b"/", 1)[0]
            raylets[pid] = node.decode()
    return {pid: raylets[parent] for pid, parent in parents.items()
            if parent in raylets and titles[pid].startswith(title.encode())}


def processes_mentioning(marker: str) -> list[int]:
    """The processes (not this one) whose command line holds `marker`."""
    return [pid for pid, _, cmdline in _processes()
            if marker.encode() in cmdline and pid != os.getpid()]


def kill_processes_mentioning(marker: str) -> None:
    """SIGKILL the processes whose command line holds `marker` and all their descendants, as
    a machine that goes away ends them (a server's workers, a loop's children). Unlike
    `ray stop`, this leaves any other Ray instance on the machine (a developer's demo) alive."""
    children: dict[int, list[int]] = {}
    for pid, parent, _ in _processes():
        children.setdefault(parent, []).append(pid)
    doomed: set[int] = set()
    todo = processes_mentioning(marker)
    while todo:
        pid = todo.pop()
        if pid not in doomed:
            doomed.add(pid)
            todo.extend(children.get(pid, []))
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class RayNodes:
    address: str
    dashboard: str | None
    temp_dir: str


@contextmanager
def ray_nodes(head_cpus: int, worker_cpus: tuple[int, ...] = (), dashboard: bool = False,
              env: dict[str, str] | None = None,
              token_home: Path | None = None) -> Iterator[RayNodes]:
    """`ray start --head` and one `ray start --address` per worker, like a cluster's start
    commands. Without `token_home`, Ray's token authentication is off (local drivers do not
    use it); with it, the nodes start as the cluster files start them, RAY_AUTH_MODE=token
    with the token in `token_home`/.ray/auth_token (their HOME, as file_mounts puts it). Their own
    temp dir (short: Ray's socket paths are length-limited) marks their processes, so the
    teardown stops only them. Each node has a folder of its own in it, as on separate machines
    (a job's working directory is unpacked per node)."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="wsol-ray-", dir="/tmp")
    env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "disabled"}
    if token_home is not None:
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(HOME=str(token_home), RAY_AUTH_MODE="token")
    ray = str(BIN / "ray")
    head = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--num-cpus", str(head_cpus), "--disable-usage-stats", "--temp-dir", f"{temp_dir}/h"]
    dashboard_url = None
    if dashboard:
        dashboard_port = free_port()
        head += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(dashboard_port)]
        dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    else:
        head += ["--include-dashboard", "false"]
    try:
        subprocess.run(head, check=True, capture_output=True, env=env, timeout=120)
        for index, cpus in enumerate(worker_cpus):
            subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address",
                            "127.0.0.1", "--num-cpus", str(cpus), "--disable-usage-stats",
                            "--temp-dir", f"{temp_dir}/w{index}"],
                           check=True, capture_output=True, env=env, timeout=120)
        yield RayNodes(f"127.0.0.1:{port}", dashboard_url, temp_dir)
    finally:
        kill_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
