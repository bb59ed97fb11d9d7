"""A search whose data_root is an s3:// shard prefix, on a two-node Ray cluster shaped like
cluster/gpu.yaml's (a head without CPUs for trials, one worker): two concurrent trials on the
worker share one fetch of the shards into the worker's cache, and the driver on the head
downloads nothing (it reads the local metadata only)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import ray
from ray.cluster_utils import Cluster
from servers import BUCKET, FAKE_KEY_ID, FAKE_SECRET, aws_env, s3_server
from small_search import small_experiment

from wsol.cli import main as wsol
from wsol.data.shards import CACHE_ENV, INDEX_NAME, parse_index
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search

pytestmark = pytest.mark.e2e  # starts moto's S3 and a two-node Ray cluster
URI = f"s3://{BUCKET}/datasets/synth-tiny"


def test_trials_on_a_node_share_one_fetch_and_the_driver_fetches_nothing(
        tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with s3_server(tmp_path) as endpoint:
        for key, value in {**aws_env(endpoint), "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        assert wsol(["data", "shard", "--metadata-root", str(tiny_synth / "metadata"),
                     "--data-root", str(tiny_synth), "--out", URI, "--shard-mb", "0.05"]) == 0
        index = parse_index(_index(endpoint), "index")
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "worker-cache"))  # what the worker inherits
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        cluster.add_node(num_cpus=2)
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "driver-cache"))
        ray.init(address=cluster.address)
        try:
            values = small_experiment("shards", tiny_synth, tmp_path, trials_per_pair=2,
                                      max_concurrent=2, tracking_uri=f"sqlite:///{tmp_path}/m.db")
            experiment = experiment_from_dict({**values, "data_root": URI,
                                               "metadata_root": str(tiny_synth / "metadata")})
            summary = run_search(experiment)
        finally:
            ray.shutdown()
            cluster.shutdown()
    assert summary["trials"] == 2 and summary["failed"] == 0
    assert not (tmp_path / "driver-cache").exists()
    copies = [p for p in (tmp_path / "worker-cache").iterdir() if p.is_dir()]
    assert len(copies) == 1  # one copy on the node, for both trials
    done = sorted(p.name for p in (copies[0] / "done").iterdir())
    assert done == [s.name for s in index.shards] and (copies[0] / "complete").is_file()


def _index(endpoint: str) -> bytes:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=FAKE_KEY_ID,
                          aws_secret_access_key=FAKE_SECRET, region_name="us-east-1")
    return client.get_object(Bucket=BUCKET, Key=f"datasets/synth-tiny/{INDEX_NAME}")["Body"].read()
