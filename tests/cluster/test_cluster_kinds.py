"""The cluster kinds beside AWS, each exercised on this machine: cluster/gpu.yaml's node types
replayed on Ray's fake autoscaler (a search's GPU trials make it launch worker nodes and remove
them when idle), the on-prem cluster file through Ray's own validation, and the SLURM batch
script under stand-in `srun`/`scontrol`, its Ray nodes kept on loopback in a network namespace.

Every Ray started here has its own temp dir; the teardown kills only processes that name it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.autoscaler._private.util import prepare_config, validate_config
from servers import free_port, kill_processes_mentioning, processes_mentioning

from wsol.search.cluster_rehearsal import FAKE_HEAD_TYPE, fake_config, head_start_args

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
GPU_YAML = REPO / "cluster" / "gpu.yaml"
LOCAL_YAML = REPO / "cluster" / "local.yaml"
SLURM_SH = REPO / "cluster" / "slurm.sh"
# Ray resolves 127.0.0.1 to the machine's outward address unless told that this "cluster" is
# local only; then every node (the fake ones too) listens on loopback. Token auth stays off, as
# the drivers here do not use it.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
IDLE_TIMEOUT_MINUTES = 0.25


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def rehearsal_experiment(tmp_path: Path, data: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """experiments/rehearsal-gpu.yaml (trials ask for a GPU, train on the CPU) on the tiny
    synthetic set, with its outputs in tmp_path."""
    values = load(REPO / "experiments" / "rehearsal-gpu.yaml")
    values.update(name=name, data_root=str(data), synthetic_preset=None,
                  search_spaces=str(REPO / "search_spaces"), storage_path=str(tmp_path / "ray"))
    values["trial"].update(resize=36, crop=32, eval_size=32, batch_size=8)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path, values


def trial_runs(uri: str, name: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("wsol.kind") == "trial"]


# --- gpu.yaml on the fake autoscaler -------------------------------------------------------


def worker_types(cluster: dict[str, Any]) -> dict[str, Any]:
    return {name: node for name, node in cluster["available_node_types"].items()
            if name != cluster["head_node_type"]}


def test_the_fake_cluster_is_gpu_yaml_node_for_node():
    cluster = load(GPU_YAML)
    config = fake_config(cluster, port=6380, idle_timeout_minutes=0.5)
    validate_config(config)  # what the autoscaler itself runs on the file
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["gcs_address"] == "127.0.0.1:6380"
    assert config["max_workers"] == cluster["max_workers"]
    assert config["upscaling_speed"] == cluster["upscaling_speed"]
    assert config["idle_timeout_minutes"] == 0.5
    fakes = worker_types(config)
    assert set(fakes) == set(worker_types(cluster))
    for name, node in worker_types(cluster).items():
        assert fakes[name]["max_workers"] == node["max_workers"]
        assert fakes[name]["min_workers"] == node["min_workers"]
        assert fakes[name]["resources"]["GPU"] == 1  # g5.2xlarge: 8 vCPUs, 1 A10G
        assert fakes[name]["resources"]["CPU"] == 8
    head = config["available_node_types"][FAKE_HEAD_TYPE]
    assert head["resources"] == cluster["available_node_types"][cluster["head_node_type"]][
        "resources"] == {"CPU": 0}
    assert "--num-cpus=0" in head_start_args(config)
    small = fake_config(cluster, max_cpus_per_node=2)["available_node_types"]["gpu_spot"]
    assert small["resources"]["CPU"] == 2 and small["resources"]["GPU"] == 1


def test_an_instance_type_without_known_resources_is_refused():
    cluster = load(GPU_YAML)
    cluster["available_node_types"]["gpu_spot"]["node_config"]["InstanceType"] = "x9.mega"
    with pytest.raises(ValueError, match=r"x9\.mega"):
        fake_config(cluster)
    cluster["available_node_types"]["gpu_spot"]["resources"] = {"CPU": 4, "GPU": 2}
    assert fake_config(cluster)["available_node_types"]["gpu_spot"]["resources"]["GPU"] == 2


@dataclass
class NodeWatch:
    """Polls the GCS: which worker nodes lived, their types, and how many at once."""

    address: str
    seen: dict[str, str] = field(default_factory=dict)  # node id -> node type
    alive: set[str] = field(default_factory=set)
    peak: int = 0
    error: Exception | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        from ray._raylet import GcsClient

        try:
            client = GcsClient(address=self.address)
            while not self.stop.is_set():
                alive = set()
                for node_id, info in client.get_all_node_info().items():
                    if info.is_head_node:
                        continue
                    self.seen[node_id.hex()] = info.node_type_name
                    if info.state == 0:  # ALIVE
                        alive.add(node_id.hex())
                self.alive, self.peak = alive, max(self.peak, len(alive))
                time.sleep(0.5)
        except Exception as error:  # reported by the test, not lost in the thread
            self.error = error


@pytest.fixture
def fake_gpu_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """`RAY_FAKE_CLUSTER=1 ray start --head` with gpu.yaml's node types (idle timeout cut)."""
    port = free_port()
    config = fake_config(load(GPU_YAML), port=port, idle_timeout_minutes=IDLE_TIMEOUT_MINUTES)
    config_path = tmp_path / "fake-cluster.yaml"
    config_path.write_text(yaml.safe_dump(config))
    temp_dir = tempfile.mkdtemp(prefix="wsol-ray-", dir="/tmp")  # short: socket path limits
    env = {**os.environ, **LOOPBACK_ENV, "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    try:
        subprocess.run([str(RAY), "start", "--head", "--port", str(port),
                        *head_start_args(config), f"--autoscaling-config={config_path}",
                        "--include-dashboard", "false", "--disable-usage-stats",
                        "--temp-dir", temp_dir],
                       check=True, capture_output=True, env=env, timeout=120)
        yield f"127.0.0.1:{port}", config
    finally:
        kill_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.e2e
def test_the_autoscaler_launches_gpu_nodes_for_trials_and_removes_them(
        tiny_synth: Path, tmp_path: Path, fake_gpu_cluster: tuple[str, dict[str, Any]]) -> None:
    address, config = fake_gpu_cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment, values = rehearsal_experiment(tmp_path, tiny_synth, "rehearsal-autoscaler")
    watch = NodeWatch(address)
    watcher = threading.Thread(target=watch.poll, daemon=True)
    watcher.start()
    try:
        search = subprocess.run(
            [sys.executable, str(REPO / "search.py"), "--config", str(experiment),
             "--address", address, "--tracking-uri", uri],
            cwd=tmp_path, env={**os.environ, **LOOPBACK_ENV}, capture_output=True, text=True,
            timeout=600)
        assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
        trials = values["trials_per_pair"] * len(values["methods"])
        assert f"{trials} trials, 0 failed" in search.stdout
        assert watch.error is None, watch.error
        launched = dict(watch.seen)
        print(f"worker nodes launched: {launched}; at most {watch.peak} at once")
        # The head has no CPU and no GPU: every trial needed a node the autoscaler launched,
        # of one of gpu.yaml's worker types. Nodes scale with concurrent trials, not with the
        # trial count; one extra may overlap while an idle node awaits its timeout.
        assert launched and set(launched.values()) <= set(worker_types(config))
        assert 1 <= watch.peak <= values["max_concurrent"] + 1 <= trials
        runs = trial_runs(uri, values["name"])
        assert len(runs) == trials and all(r.info.status == "FINISHED" for r in runs)
        assert {r.data.tags["wsol.ray_node_id"] for r in runs} <= set(launched)
        # Idle nodes go away after the (shortened) idle timeout.
        deadline = time.time() + IDLE_TIMEOUT_MINUTES * 60 + 60
        while watch.alive and time.time() < deadline:
            time.sleep(1)
        assert watch.error is None and not watch.alive, f"still up: {watch.alive} {watch.error}"
    finally:
        watch.stop.set()
        watcher.join(10)


# --- on-prem ---------------------------------------------------------------------------------


def test_the_on_prem_cluster_passes_ray_validation_and_matches_gpu_yaml():
    raw = load(LOCAL_YAML)
    config = prepare_config(raw)  # the local provider's own preparation (prepare_local)
    validate_config(config)
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    node_type = config["available_node_types"][config["head_node_type"]]
    assert node_type["max_workers"] == len(raw["provider"]["worker_ips"])
    # Installed and started exactly as on AWS (minus the S3 dataset sync).
    gpu = load(GPU_YAML)
    # Less what only AWS has: the bucket, and the instance store of AWS's deep-learning AMI
    # for the shard cache (on-prem nodes keep its default under ~/.cache).
    assert raw["setup_commands"] == [c for c in gpu["setup_commands"]
                                     if "s3://" not in c and "/opt/dlami" not in c]
    assert raw["head_start_ray_commands"] == gpu["head_start_ray_commands"]
    assert raw["worker_start_ray_commands"] == gpu["worker_start_ray_commands"]
    assert raw["file_mounts"] == gpu["file_mounts"]
    commands = raw["setup_commands"] + raw["head_setup_commands"]
    assert not any("s3://" in c or "aws " in c for c in commands)  # no AWS on-prem


# --- SLURM -----------------------------------------------------------------------------------

SRUN = """#!/bin/bash
# Stand-in srun: runs the step here, as if on the node named by -w; logs "node: command".
node=""
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        -w) node=$2; shift 2 ;;
        --nodelist=*) node=${1#*=}; shift ;;
        --nodes=*|--ntasks=*|--cpus-per-task=*|--gpus-per-node=*) shift ;;
        *) echo "stand-in srun: unexpected option $1" >&2; exit 2 ;;
    esac
done
echo "$node: $*" >> "$SRUN_LOG"
SLURMD_NODENAME=$node exec "$@"
"""

SCONTROL = """#!/bin/bash
# Stand-in scontrol: the two queries slurm.sh makes.
if [[ $1 == show && $2 == hostnames ]]; then
    tr ',' '\\n' <<< "$3"
elif [[ $1 == show && $2 == job ]]; then
    echo "JobId=$SLURM_JOB_ID JobName=wsol-search Command=$SUBMITTED_SCRIPT WorkDir=$PWD"
else
    echo "stand-in scontrol: unexpected $*" >&2; exit 2
fi
"""

HOSTNAME = """#!/bin/bash
# Stand-in hostname: every stand-in node is this machine, on loopback.
if [[ ${1:-} == --ip-address ]]; then echo 127.0.0.1; else echo "${SLURMD_NODENAME:-node}"; fi
"""


def loopback_namespace_works() -> bool:
    """Unprivileged user+network namespaces (only a loopback interface inside)."""
    try:
        probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SLURM_SH)], check=True)
    header = [line for line in SLURM_SH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert any("--gpus-per-node" in line for line in header)
    assert any("--ntasks-per-node=1" in line for line in header)


# Stands in for WSOL_PYTHON: before search.py starts (the job's cluster is up), tries the job's
# address as another user of the node would, with no token (and no ~/.ray/auth_token).
PYTHON = """#!/bin/bash
if [[ ${2:-} == */search.py && ${3:-} == --address ]]; then
    env -u RAY_AUTH_TOKEN RAY_AUTH_MODE=disabled HOME="$STRANGER_HOME" \\
        "$(dirname "$0")/ray" status --address "$4" > "$PROBE_LOG" 2>&1
    echo "rc=$?" >> "$PROBE_LOG"
fi
exec "$REAL_PYTHON" "$@"
"""


def stand_ins(tmp_path: Path) -> Path:
    """tmp_path/bin with the stand-in srun, scontrol and hostname, to put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"srun": SRUN, "scontrol": SCONTROL, "hostname": HOSTNAME}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_slurm_script_outside_the_project_says_what_to_set(tmp_path: Path) -> None:
    """A spool copy whose submitted path is not in a checkout stops before starting Ray."""
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(SLURM_SH, spool / "slurm_script")
    env = {**os.environ, "PATH": f"{stand_ins(tmp_path)}:{os.environ['PATH']}",
           "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "gpu-a", "SRUN_LOG": "/dev/null",
           "SUBMITTED_SCRIPT": str(spool / "slurm_script")}
    env.pop("WSOL_HOME", None)
    job = subprocess.run(["bash", str(spool / "slurm_script")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert job.returncode == 2 and "set WSOL_HOME" in job.stderr


FAILING_HEAD = """#!/bin/bash
# Stand-in ray: `start --head` fails as on a taken port; a worker would wait to be stopped.
echo "ray $*" >> "$SRUN_LOG"
if [[ " $* " == *" --head "* ]]; then echo "port taken" >&2; exit 1; fi
exec sleep 120
"""


def test_slurm_workers_never_join_a_head_that_is_not_the_jobs(tmp_path: Path) -> None:
    """Something else listens on the job's port (another job's head, on a shared node) and
    the job's own head cannot start: the script stops, instead of sending its workers and
    search.py (with their token) to whatever answers there."""
    bin_dir = stand_ins(tmp_path)
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    (python_dir / "python").write_text(f'#!/bin/bash\nexec {sys.executable} "$@"\n')
    (python_dir / "ray").write_text(FAILING_HEAD)
    for name in ("python", "ray"):
        (python_dir / name).chmod(0o755)
    srun_log = tmp_path / "srun.log"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "HOME": str(tmp_path), "SLURM_JOB_ID": "43", "SLURM_JOB_NODELIST": "gpu-a,gpu-b",
               "SUBMITTED_SCRIPT": str(SLURM_SH), "SRUN_LOG": str(srun_log),
               "WSOL_PYTHON": str(python_dir / "python"),
               "WSOL_RAY_PORT": str(listener.getsockname()[1]),
               "WSOL_RAY_TMPDIR": str(tmp_path / "ray"), "WSOL_NODE_WAIT_S": "5"}
        job = subprocess.Popen(["bash", str(SLURM_SH), "--config", "unused.yaml"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = job.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 1, out + err
    assert "the job's Ray head did not come up" in err
    steps = srun_log.read_text()
    assert "--head" in steps and "--address=" not in steps, steps  # no worker was started


@pytest.mark.e2e
def test_slurm_script_runs_a_search_across_its_nodes(tiny_synth: Path, tmp_path: Path) -> None:
    """sbatch's view: the script runs as a spool copy, from another folder, with the job's
    SLURM_* variables; srun starts each Ray node "on" its node (here, in one network namespace
    that has only loopback). The job's Ray has token authentication on, with a token of its
    own that a client without it cannot use; its port and temp dir are its own too."""
    if not loopback_namespace_works():
        pytest.skip("needs unprivileged user and network namespaces (unshare -rn)")
    bin_dir = stand_ins(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(SLURM_SH, spool / "slurm_script")
    submit_dir = tmp_path / "submitted-from"
    submit_dir.mkdir()
    experiment, values = rehearsal_experiment(tmp_path, tiny_synth, "rehearsal-slurm")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_id = f"7{os.getpid()}{int(time.time()) % 10000}"
    srun_log = tmp_path / "srun.log"
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    (python_dir / "python").write_text(PYTHON)
    (python_dir / "python").chmod(0o755)
    (python_dir / "ray").symlink_to(RAY)  # slurm.sh finds `ray` beside WSOL_PYTHON
    for home in ("home", "stranger"):
        (tmp_path / home).mkdir()  # no ~/.ray/auth_token in either
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": "gpu-a,gpu-b", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_CPUS_PER_TASK": "1", "SLURM_GPUS_PER_NODE": "a10g:1",
           "SUBMITTED_SCRIPT": str(SLURM_SH), "SRUN_LOG": str(srun_log),
           "WSOL_PYTHON": str(python_dir / "python"), "REAL_PYTHON": sys.executable,
           "STRANGER_HOME": str(tmp_path / "stranger"), "PROBE_LOG": str(tmp_path / "probe.log")}
    for name in ("WSOL_HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    command = ["unshare", "-rn", "bash", "-c", 'ip link set lo up && exec bash "$@"', "bash",
               str(spool / "slurm_script"), "--config", str(experiment), "--tracking-uri", uri]
    temp_dirs: set[str] = set()
    try:
        job = subprocess.run(command, cwd=submit_dir, env=env, capture_output=True, text=True,
                             timeout=600)
        steps = srun_log.read_text().splitlines() if srun_log.exists() else []
        temp_dirs = {os.path.dirname(m) for s in steps for m in re.findall(r"--temp-dir=(\S+)", s)}
        temp_modes = {d: os.stat(d).st_mode & 0o777 for d in temp_dirs if os.path.isdir(d)}
        # The script stops the Ray nodes it started when the search ends.
        deadline = time.time() + 30
        while any(processes_mentioning(d) for d in temp_dirs) and time.time() < deadline:
            time.sleep(1)
        leftover = [pid for d in temp_dirs for pid in processes_mentioning(d)]
    finally:
        for temp_dir in temp_dirs:
            kill_processes_mentioning(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
    output = job.stdout[-4000:] + job.stderr[-4000:]
    assert job.returncode == 0, output
    assert "2 of 2 Ray nodes up" in job.stdout, output
    trials = values["trials_per_pair"] * len(values["methods"])
    assert f"{trials} trials, 0 failed" in job.stdout, output
    heads = [s for s in steps if s.startswith("gpu-a: ") and "start --head" in s]
    assert len(heads) == 1 and "--num-gpus=1" in heads[0], steps
    port = re.search(r"--port=(\d+)", heads[0]).group(1)
    assert port != "6379"  # a port of the job's own, not the one every job would take
    assert any(s.startswith("gpu-b: ") and f"start --address=127.0.0.1:{port}" in s
               and "--num-gpus=1" in s for s in steps), steps
    assert all(f"{python_dir / 'ray'} start " in s for s in steps if " start " in s)
    # One folder for Ray's temp dir, unguessable (not named after the job id), private.
    assert len(temp_dirs) == 1, temp_dirs
    (temp_dir,) = temp_dirs
    assert re.fullmatch(r"/tmp/wsol-ray-\w{8}", temp_dir) and job_id not in temp_dir
    assert temp_modes.get(temp_dir) == 0o700, temp_modes
    # Token auth on: the stranger's `ray status` on the job's address was refused, and the
    # token never appeared on a command line.
    probe = (tmp_path / "probe.log").read_text()
    assert "AuthenticationError" in probe and not probe.rstrip().endswith("rc=0"), probe[-2000:]
    assert not re.search(r"\b[0-9a-f]{64}\b", srun_log.read_text() + output)
    runs = trial_runs(uri, values["name"])
    assert len(runs) == trials and all(r.info.status == "FINISHED" for r in runs)
    # Both nodes joined (above); whether two trials overlap, and so use both GPUs, depends on
    # timing (under load one may end before the next starts), so only the count is bounded.
    assert 1 <= len({r.data.tags["wsol.ray_node_id"] for r in runs}) <= 2
    assert not leftover, f"Ray processes left running: {leftover}"
