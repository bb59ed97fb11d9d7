"""cluster/gpu.yaml passes Ray's own cluster-config validation and installs from the lock."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "gpu.yaml"


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
    assert config["file_mounts"] == {"~/wsol": "."}
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
