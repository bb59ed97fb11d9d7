"""cluster/gpu.yaml passes Ray's own cluster-config validation and installs from the lock; the
cluster files turn Ray's token authentication on, give every AWS node type an instance profile
scoped to the project's bucket prefixes (the manual's policies, docs/cluster/security.md), and
look for an `mlflow server` of their own user only."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "gpu.yaml"
LOCAL = REPO / "cluster" / "local.yaml"
SLURM = REPO / "cluster" / "slurm.sh"
SECURITY_PAGE = REPO / "docs" / "cluster" / "security.md"


def load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_ray_validates_the_cluster_config():
    config = prepare_config(load())
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    workers = {k: v for k, v in config["available_node_types"].items()
               if k != config["head_node_type"]}
    assert workers and all(v["node_config"]["InstanceType"].startswith(("g", "p"))
                           for v in workers.values())
    assert any(v["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
               for v in workers.values())
    assert all(v["min_workers"] <= v["max_workers"] for v in workers.values())


def test_setup_installs_the_locked_project_and_no_credentials():
    config = load()
    setup = "\n".join(config["setup_commands"])
    assert "-c requirements/constraints.txt" in setup
    assert (REPO / "requirements" / "constraints.txt").is_file()
    assert config["file_mounts"] == {"~/wsol": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    text = CONFIG.read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "aws_secret"):
        assert secret not in text
    # Only the driver on the head and a port-forwarded browser talk to MLflow: loopback only.
    server = " ".join(config["head_setup_commands"])
    assert "mlflow server --host 127.0.0.1" in server and "0.0.0.0" not in server
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("~/wsol/.venv/bin/ray" in command for command in starts)


def test_a_misspelt_key_is_rejected_by_ray():
    broken = copy.deepcopy(load())
    broken["available_node_types"]["gpu_spot"]["max_wrkers"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_wrkers"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_experiments_load_with_their_search_spaces(path: Path, monkeypatch, tmp_path):
    from wsol.search.experiment import load_experiment
    from wsol.search.pair_spaces import load_spaces

    monkeypatch.chdir(tmp_path)  # the path rule: no lookup depends on the working directory
    experiment = load_experiment(path, {})
    assert set(load_spaces(experiment)) == set(experiment.methods)


# --- Ray token authentication ----------------------------------------------------------------


@pytest.mark.parametrize("path", [CONFIG, LOCAL], ids=lambda p: p.name)
def test_every_ray_node_starts_with_token_authentication(path: Path):
    """Ray 2.60's `ray start` is open unless RAY_AUTH_MODE=token (or a token file) says
    otherwise: each start command sets it, file_mounts carries the one token to every node
    (workers get the head's copy), kept private, and the head's shell (the `ray submit`
    driver's) exports the mode too."""
    config = yaml.safe_load(path.read_text())
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if " start " in c]
    assert len(starts) == 2
    for command in starts:
        started = r"(^|[;&|]\s*)RAY_AUTH_MODE=token ~/wsol/\.venv/bin/ray start "
        assert re.search(started, command), command
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = config["setup_commands"]
    assert setup[0] == "chmod 600 ~/.ray/auth_token"
    assert any("echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in c for c in setup)


def test_the_slurm_job_makes_and_exports_its_own_token():
    text = SLURM.read_text()
    assert "export RAY_AUTH_TOKEN RAY_AUTH_MODE=token" in text
    assert "secrets.token_hex(32)" in text
    assert "6379" not in text and "/tmp/wsol-ray-${SLURM_JOB_ID" not in text
    assert "/dev/tcp" not in text  # a listener is not the job's head


# --- IAM: an instance profile on every node type, scoped to the bucket ----------------------


def manual_policy(name: str) -> dict:
    """The manual's IAM policy for instance profile `name` (the first ```json block after the
    line that introduces it, in docs/cluster/security.md)."""
    text = SECURITY_PAGE.read_text()
    start = text.index(f"`{name}` policy")
    block = re.search(r"```json\n(.*?)```", text[start:], re.S)
    assert block, f"{SECURITY_PAGE.name} shows no policy for {name}"
    return json.loads(block.group(1))


def statements(policy: dict) -> list[dict]:
    assert policy["Version"] == "2012-10-17"
    found = policy["Statement"]
    assert all(s["Effect"] == "Allow" for s in found)
    return [{**s, "Action": [s["Action"]] if isinstance(s["Action"], str) else s["Action"],
             "Resource": [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]}
            for s in found]


def s3_grants(policy: dict) -> dict[str, set[str]]:
    """S3 action -> the resources it is allowed on (ListBucket: the s3:prefix values)."""
    grants: dict[str, set[str]] = {}
    for s in statements(policy):
        for action in s["Action"]:
            if not action.startswith("s3:"):
                continue
            if action == "s3:ListBucket":
                assert s["Resource"] == ["arn:aws:s3:::YOUR-BUCKET"]
                prefixes = s["Condition"]["StringLike"]["s3:prefix"]
                grants.setdefault(action, set()).update(
                    [prefixes] if isinstance(prefixes, str) else prefixes)
            else:
                grants.setdefault(action, set()).update(s["Resource"])
    return grants


def test_every_node_type_has_an_instance_profile_ray_accepts():
    config = load()
    profiles = {name: node["node_config"].get("IamInstanceProfile")
                for name, node in config["available_node_types"].items()}
    assert all(profiles.values()), profiles  # Ray's default profile reaches the head only
    head = config["head_node_type"]
    assert profiles[head] == {"Arn": "arn:aws:iam::YOUR-ACCOUNT-ID:instance-profile/wsol-head"}
    for name, profile in profiles.items():
        if name != head:
            assert profile == {
                "Arn": "arn:aws:iam::YOUR-ACCOUNT-ID:instance-profile/wsol-worker"}, name
    prepared = prepare_config(config)
    validate_config(prepared)  # Ray's own schema takes the field on every node type
    assert all(node["node_config"]["IamInstanceProfile"]
               for node in prepared["available_node_types"].values())


def test_the_manual_policies_reach_the_bucket_prefixes_only():
    worker, head = manual_policy("wsol-worker"), manual_policy("wsol-head")
    objects = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    bucket = "arn:aws:s3:::YOUR-BUCKET/"
    # Workers: read the datasets, read and write Ray's storage (trial checkpoints); no EC2/IAM.
    grants = s3_grants(worker)
    assert set(grants) == objects | {"s3:ListBucket"}
    assert grants["s3:GetObject"] == {bucket + "datasets/*", bucket + "ray/*"}
    assert grants["s3:PutObject"] == grants["s3:DeleteObject"] == {bucket + "ray/*"}
    assert grants["s3:ListBucket"] == {"datasets/*", "ray/*"}
    assert all(a.startswith("s3:") for s in statements(worker) for a in s["Action"])
    # Head: the same plus MLflow's artifacts, the EC2 calls of the autoscaler, and passing the
    # worker role (to launch workers with wsol-worker), nothing wider.
    grants = s3_grants(head)
    assert set(grants) == objects | {"s3:ListBucket"}
    assert grants["s3:GetObject"] == {bucket + p for p in ("datasets/*", "ray/*", "mlflow/*")}
    assert grants["s3:PutObject"] == grants["s3:DeleteObject"] == {bucket + "ray/*",
                                                                   bucket + "mlflow/*"}
    assert grants["s3:ListBucket"] == {"datasets/*", "ray/*", "mlflow/*"}
    actions = {a for s in statements(head) for a in s["Action"]}
    assert not any(a.endswith(":*") or a == "*" for a in actions)
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:DescribeInstances",
            "ec2:CreateTags"} <= actions
    assert {a.split(":")[0] for a in actions} == {"s3", "ec2", "iam"}
    iam = [s for s in statements(head) if any(a.startswith("iam:") for a in s["Action"])]
    assert [s["Action"] for s in iam] == [["iam:PassRole"]]
    assert iam[0]["Resource"] == ["arn:aws:iam::YOUR-ACCOUNT-ID:role/wsol-worker"]
    # What the cluster file and the commands of the README and the manual use lies inside
    # these prefixes.
    text = "".join(p.read_text() for p in [CONFIG, REPO / "README.md",
                                           *sorted((REPO / "docs").rglob("*.md"))])
    for uri in set(re.findall(r"s3://YOUR-BUCKET/([\w-]+)", text)):
        assert uri in {"datasets", "ray", "mlflow"}, uri


# --- the MLflow server a head reuses is its own user's ----------------------------------------


@pytest.mark.parametrize("path", [CONFIG, LOCAL], ids=lambda p: p.name)
def test_the_mlflow_server_check_ignores_other_users(path: Path, tmp_path: Path):
    """The head_setup command starts `mlflow server` unless one runs: one of the same user, not
    anyone's (whose server would then get the search's logs and credentials)."""
    command = yaml.safe_load(path.read_text())["head_setup_commands"][0]
    check = command.split("||")[0].strip()
    assert check.startswith("pgrep")
    # A process of this user that looks like an `mlflow server`; seen as another user's.
    fake = subprocess.Popen(["bash", "-c", "exec -a 'mlflow server --port 5000' sleep 60"])
    try:
        mine = subprocess.run(["bash", "-c", check], env={**os.environ, "USER": str(os.getuid())},
                              capture_output=True, text=True, timeout=30)
        assert mine.returncode == 0 and str(fake.pid) in mine.stdout.split()
        other = subprocess.run(["bash", "-c", check], env={**os.environ, "USER": "nobody"},
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 1, other.stdout  # nothing of *that* user: start our own
    finally:
        fake.kill()
        fake.wait()
