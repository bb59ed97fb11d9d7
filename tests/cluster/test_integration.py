"""Search -> promote -> evaluate -> report with real parts: a two-node Ray cluster, `mlflow
server` with its artifacts in an S3 bucket (moto's S3 API server), Ray storage in the same
bucket. The test split's metadata is moved away until `wsol evaluate`, so nothing before it
can have read the test split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from servers import (
    BUCKET,
    FAKE_KEY_ID,
    FAKE_SECRET,
    aws_env,
    bucket_objects,
    mlflow_server,
    s3_server,
)
from small_search import small_experiment

from wsol.cli import main as wsol
from wsol.data.synthetic import PRESETS, generate
from wsol.lifecycle.promote import rank
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search

pytestmark = pytest.mark.e2e  # starts moto's S3, `mlflow server` and a two-node Ray
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with s3_server(tmp_path) as endpoint:
        # The driver and the Ray nodes (started below) reach the bucket like on AWS: through
        # the standard variables; pyarrow (Ray storage) reads AWS_ENDPOINT_URL.
        for key, value in {**aws_env(endpoint), "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with mlflow_server(tmp_path, endpoint) as uri:
            yield endpoint, uri


@pytest.fixture
def two_nodes(servers):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def all_runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000)


def test_search_promote_evaluate_report(tmp_path: Path, servers, two_nodes, capfd) -> None:
    endpoint, uri = servers
    data = tmp_path / "synth"
    generate(data, PRESETS["tiny"], seed=3)
    hidden = tmp_path / "test-metadata-hidden"
    shutil.move(data / "metadata" / "test", hidden)

    experiment = experiment_from_dict(small_experiment(
        "integration", data, tmp_path, trial={"epochs": 2}, methods=["cam", "bgc"],
        trials_per_pair=2, max_concurrent=2, method_params={"bgc": {"warm": 0}},
        storage_path=f"s3://{BUCKET}/ray", tracking_uri=uri))
    summary = run_search(experiment)
    assert summary["trials"] == 4 and summary["failed"] == 0

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("integration").experiment_id])
    parent = [r for r in runs if r.data.tags["wsol.kind"] == "search"]
    children = [r for r in runs if r.data.tags["wsol.kind"] == "trial"]
    assert len(parent) == 1 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent[0].info.run_id}
    assert len({r.data.tags["wsol.ray_node_id"] for r in children}) == 2  # both nodes ran trials
    for child in children:
        assert child.info.status == "FINISHED"
        assert "selected/MaxBoxAccV2" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "train_fullsup/score")) == 2
    objects = bucket_objects(endpoint)
    for child in children:
        stored = {k.split("/artifacts/", 1)[1] for k in objects if child.info.run_id in k}
        assert {"checkpoint/best.pt", "overlays.png", "curves.png", "metrics.json"} <= stored
    assert any(k.startswith("ray/integration/") for k in objects)  # Ray storage on S3

    promoted = tmp_path / "promote.json"
    assert wsol(["promote", "--method", "cam", "--backbone", "tiny", "--tracking-uri", uri,
                 "--json", str(promoted)]) == 0
    promotion = json.loads(promoted.read_text())
    name = "wsol-synthetic-cam-tiny"
    assert promotion["model_uri"] == f"models:/{name}@champion"
    best_cam = max((r for r in children if r.data.tags["wsol.method"] == "cam"), key=rank)
    assert promotion["run_id"] == best_cam.info.run_id
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == promotion["version"]
    assert version.tags["wsol.search_run_id"] == parent[0].info.run_id
    assert version.tags["wsol.code_version"] and version.tags["wsol.selected_on"] == "train-fullsup"
    assert version.tags["wsol.threshold"] == best_cam.data.tags["wsol.selected_threshold"]

    other = next(r for r in children if r.data.tags["wsol.method"] == "cam" and r != best_cam)
    assert wsol(["promote", "--method", "cam", "--backbone", "tiny", "--run-id",
                 other.info.run_id, "--tracking-uri", uri]) == 0
    assert client.get_model_version_by_alias(name, "previous").version == promotion["version"]
    assert wsol(["promote", "--method", "cam", "--backbone", "tiny", "--tracking-uri", uri]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == promotion["version"]

    report = tmp_path / "report-before"
    assert wsol(["report", "--out", str(report), "--tracking-uri", uri]) == 0

    shutil.move(hidden, data / "metadata" / "test")  # only the final evaluation reads it
    numbers = []
    for attempt in (1, 2):
        out = tmp_path / f"test-{attempt}.json"
        assert wsol(["evaluate", "--model", promotion["model_uri"], "--tracking-uri", uri,
                     "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["evaluation_number"] == attempt
        numbers.append({k: v for k, v in result.items() if not k.startswith("evaluation")})
    assert numbers[0] == numbers[1]
    for key in ("MaxBoxAcc", "MaxBoxAccV2", "BoxAccV2@30", "BoxAccV2@50", "BoxAccV2@70", "PxAP",
                "top1_loc", "top5_loc", "gt_known_loc"):
        assert key in numbers[0]
    assert numbers[0]["threshold"] == float(best_cam.data.tags["wsol.selected_threshold"])
    evaluations = [r for r in all_runs(client) if r.data.tags.get("wsol.kind") == "evaluation"]
    assert len(evaluations) == 2
    assert {r.data.tags["wsol.model_version"] for r in evaluations} == {promotion["version"]}
    assert client.get_model_version(name, promotion["version"]).tags["wsol.test_evaluations"] == "2"

    report = tmp_path / "report"
    assert wsol(["report", "--out", str(report), "--tracking-uri", uri]) == 0
    header, cam_row = (report / "report.csv").read_text().splitlines()[:2]
    columns = dict(zip(header.split(","), cam_row.split(","), strict=True))
    assert columns["synthetic MaxBoxAccV2 (test)"] == f"{numbers[0]['MaxBoxAccV2']:.2f}"
    assert columns["synthetic trials (finished/all)"] == "2/2"
    assert {"report.md", "report.tex", "curves-synthetic-tiny.png",
            "history-synthetic-cam-tiny.png", "parallel-synthetic-bgc-tiny.png"} <= {
        p.name for p in report.iterdir()}

    # no credential anywhere the product writes: params, tags, artifacts, Ray storage, output
    printed = capfd.readouterr()
    for secret in (FAKE_SECRET, FAKE_KEY_ID):
        for run in all_runs(client):
            assert secret not in json.dumps([run.data.params, run.data.tags])
        for key, body in bucket_objects(endpoint).items():
            assert secret.encode() not in body, key
        assert secret not in printed.out + printed.err
