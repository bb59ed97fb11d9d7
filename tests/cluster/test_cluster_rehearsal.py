"""The manual's cluster commands (docs/cluster/aws.md), rehearsed on one machine as Ray runs them.

`ray submit cluster/gpu.yaml search.py -- ARGS` copies search.py alone to the head's home and
runs `python ~/search.py ARGS` there; `ray job submit --working-dir . -- python search.py ARGS`
uploads the project and runs it in a scratch folder. Both must find the experiment, its search
spaces and data through the path rule (wsol.common.paths), not through the working directory. The
cluster is started as gpu.yaml's start commands do: a head with no CPUs for trials and a worker
joined with `ray start --address`, both with Ray's token authentication on (RAY_AUTH_MODE=token,
the token made by the manual's command in the head's ~/.ray/auth_token, where gpu.yaml's
file_mounts put it); MLflow is `mlflow server` with its artifacts on S3 (moto). A client without
the token is refused by the GCS and by the dashboard's job API. The manual's `$USER` is expanded by
the teammate's shell on the laptop (bash here, with USER=alice) while the driver runs as the
head's user (USER=ubuntu): the search's Ray state lies under ray/alice/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import BUCKET, aws_env, bucket_objects, mlflow_server, ray_nodes, s3_server

pytestmark = pytest.mark.e2e  # starts moto's S3, `mlflow server` and `ray start` nodes
REPO = Path(__file__).resolve().parents[2]
AWS_PAGE = REPO / "docs" / "cluster" / "aws.md"
BIN = Path(sys.executable).parent
TEAMMATE, HEAD_USER = "alice", "ubuntu"  # who types the manual's command; who runs the driver


def manual_command(prefix: str, env: dict[str, str]) -> list[str]:
    """The manual's command that starts with `prefix`, continuation lines joined, split into
    words by bash as the teammate's own shell does before Ray sends it ($USER is theirs)."""
    text = AWS_PAGE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(prefix)]
    assert lines, f"{AWS_PAGE.name} has no command starting with {prefix!r}"
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + lines[0].split("  #")[0]],
                           env={**env, "USER": TEAMMATE}, capture_output=True, text=True,
                           check=True, timeout=60).stdout
    return words.split("\0")[:-1]


def rehearsal_args(args: list[str], tracking_uri: str) -> list[str]:
    """The manual's search arguments, on the CPU smoke experiment and the test's servers."""
    replaced = [a.replace("experiments/cub.yaml", "experiments/synthetic-smoke.yaml")
                 .replace("YOUR-BUCKET", BUCKET).replace("http://localhost:5000", tracking_uri)
                for a in args]
    assert "experiments/synthetic-smoke.yaml" in replaced and "auto" in replaced
    return replaced


def make_token(home: Path, env: dict[str, str]) -> Path:
    """The cluster's token, made by the manual's command in `home`/.ray/auth_token."""
    text = AWS_PAGE.read_text()
    commands = [line.strip() for line in text.splitlines()
                if line.strip().startswith("(umask 077 && ray get-auth-token --generate")]
    assert commands, f"{AWS_PAGE.name} has no command that makes the cluster's token"
    subprocess.run(["bash", "-c", commands[0].split("  #")[0]], env={**env, "HOME": str(home)},
                   check=True, capture_output=True, timeout=120)
    token = home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)
    return token


@pytest.fixture
def cluster(tmp_path: Path):
    """S3, `mlflow server`, and a head (0 CPUs, dashboard for jobs) plus one 2-CPU worker, with
    Ray's token authentication on; `home` holds the token (the head's and the laptop's home)."""
    home = tmp_path / "home"
    home.mkdir()
    with s3_server(tmp_path) as endpoint:
        env = {**aws_env(endpoint), "AWS_ENDPOINT_URL": endpoint,
               "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        base = {k: v for k, v in os.environ.items()
                if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        make_token(home, {**base, **env})
        with mlflow_server(tmp_path, endpoint) as uri, \
                ray_nodes(head_cpus=0, worker_cpus=(2,), dashboard=True, env=env,
                          token_home=home) as nodes:
            # What the cluster files' ~/.bashrc line exports for `ray submit`'s driver.
            yield {"s3": endpoint, "uri": uri, "nodes": nodes, "home": home,
                   "env": {**base, **env, "RAY_ADDRESS": nodes.address, "HOME": str(home),
                           "RAY_AUTH_MODE": "token", "USER": HEAD_USER}}


def check_refused_without_the_token(cluster: dict, tmp_path: Path) -> None:
    """Someone who reaches the ports but has no token (or a wrong one) is refused by the GCS
    (what `ray start --address`, drivers and `ray status` talk to) and by the job API."""
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    env = {k: v for k, v in cluster["env"].items() if k != "RAY_ADDRESS"}
    ray = str(BIN / "ray")
    for auth in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token",
                                                 "RAY_AUTH_TOKEN": "0" * 64}):
        status = subprocess.run([ray, "status", "--address", cluster["nodes"].address],
                                env={**env, "HOME": str(stranger), **auth}, capture_output=True,
                                text=True, timeout=120)
        assert status.returncode != 0, status.stdout
        assert "AuthenticationError" in status.stderr, status.stderr[-2000:]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster['nodes'].dashboard}/api/jobs/", timeout=30)
    assert refused.value.code in (401, 403)
    # With the token, the same command is answered.
    subprocess.run([ray, "status", "--address", cluster["nodes"].address], env=env,
                   check=True, capture_output=True, timeout=120)


def node_cpus(address: str, env: dict[str, str]) -> dict[str, float]:
    code = ("import json, ray; ray.init(logging_level='ERROR'); print(json.dumps({n['NodeID']:"
            " n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']}))")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_ADDRESS": address},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_search(cluster: dict, experiment: str = "wsol-synthetic-smoke") -> None:
    """Every trial finished on the worker; MLflow has the runs, S3 their artifacts."""
    client = MlflowClient(cluster["uri"])
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    trials = [r for r in runs if r.data.tags.get("wsol.kind") == "trial"]
    assert len(trials) == 8 and all(r.info.status == "FINISHED" for r in trials)
    workers = {node for node, cpus in node_cpus(cluster["nodes"].address,
                                                cluster["env"]).items() if cpus > 0}
    assert {r.data.tags["wsol.ray_node_id"] for r in trials} <= workers
    objects = bucket_objects(cluster["s3"])
    for run in trials:
        assert any(run.info.run_id in key and key.endswith("checkpoint/best.pt")
                   for key in objects)
    # The search's Ray state under the teammate's folder (the manual's $USER), nowhere else
    # (S3 folder markers such as `ray/` aside).
    assert any(key.startswith(f"ray/{TEAMMATE}/wsol-synthetic-smoke/") for key in objects)
    stray = [key for key in objects if key.startswith("ray/") and not key.endswith("/")
             and not key.startswith(f"ray/{TEAMMATE}/")]
    assert not stray, stray


def test_ray_submit_runs_search_py_alone_from_the_heads_home(cluster, tmp_path: Path) -> None:
    check_refused_without_the_token(cluster, tmp_path)
    submit = manual_command("ray submit cluster/gpu.yaml search.py", cluster["env"])
    args = rehearsal_args(submit[submit.index("--") + 1:], cluster["uri"])
    home = cluster["home"]
    shutil.copy(REPO / "search.py", home / "search.py")  # what `ray submit` rsyncs
    done = subprocess.run([sys.executable, str(home / "search.py"), *args], cwd=home,
                          env={**cluster["env"], "HOME": str(home)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "8 trials, 0 failed" in done.stdout
    check_search(cluster)
    # No data, store or search state beside the script: only the search's log, which goes
    # under mlruns/logs/ when its storage is S3 (tool caches in dot folders aside).
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == \
        ["mlruns", "search.py"]
    assert [p.name for p in (home / "mlruns").iterdir()] == ["logs"]
    assert (home / "mlruns" / "logs" / "wsol-synthetic-smoke" / "search.log").is_file()


def test_ray_job_submit_with_the_project_as_working_dir(cluster) -> None:
    job = manual_command("ray job submit", cluster["env"])
    assert job[job.index("--working-dir") + 1] == "."
    entry = job[job.index("--") + 1:]
    assert entry[:2] == ["python", "search.py"]
    args = rehearsal_args(entry[2:], cluster["uri"])
    address = cluster["nodes"].dashboard
    submitted = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
         "--", "python", "search.py", *args],
        cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=600)
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    assert re.search(r"Job '.+' succeeded", output), output[-4000:]
    assert "8 trials, 0 failed" in output
    check_search(cluster)
