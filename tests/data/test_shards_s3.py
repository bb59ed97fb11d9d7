"""Shards on an S3 API (moto's server): `wsol data shard` writes them, datasets read them through
one node-local copy, which two processes share, an interrupted fetch resumes, and a hostile
index in the bucket is refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import torch
from servers import BUCKET, FAKE_KEY_ID, FAKE_SECRET, aws_env, s3_server
from torch.utils.data import DataLoader

from wsol.cli import main
from wsol.data.datasets import EvalDataset, TrainDataset
from wsol.data.metadata import load_split
from wsol.data.shards import (
    CACHE_ENV,
    INDEX_NAME,
    ShardIndexError,
    fetch,
    index_problem,
    parse_index,
)
from wsol.data.transforms import eval_transform, train_transform

pytestmark = pytest.mark.e2e  # starts moto's S3 server
URI = f"s3://{BUCKET}/datasets/synth-tiny"
PREFIX = "datasets/synth-tiny"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_synth: Path):
    """The tiny synthetic set sharded to URI by the CLI; a fresh node cache per test."""
    for key, value in aws_env(s3).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert main(["data", "shard", "--metadata-root", str(tiny_synth / "metadata"),
                 "--data-root", str(tiny_synth), "--out", URI, "--shard-mb", "0.04"]) == 0
    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id=FAKE_KEY_ID,
                          aws_secret_access_key=FAKE_SECRET, region_name="us-east-1")
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])


def _index(client) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{INDEX_NAME}")["Body"].read()


def _batches(dataset, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return [torch.cat([images.flatten(), labels.float(), indices.float()])
            for images, labels, indices in loader]


def test_the_same_images_in_the_same_order_as_the_folder(bucket, tiny_synth: Path):
    train = load_split(tiny_synth / "metadata", "train")
    from_s3 = TrainDataset(train, URI, train_transform(40, 32))
    local = TrainDataset(train, tiny_synth, train_transform(40, 32))
    assert from_s3.data_root != local.data_root
    for seed in (0, 7):
        first, second = _batches(from_s3, seed), _batches(local, seed)
        assert len(first) == len(second) > 1
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    val = load_split(tiny_synth / "metadata", "val")
    evaluated = EvalDataset(val, URI, eval_transform(32))
    reference = EvalDataset(val, tiny_synth, eval_transform(32))
    for index in range(len(val.image_ids)):
        assert torch.equal(evaluated[index][0], reference[index][0])
        assert (evaluated.gt_mask(index, (32, 32)) == reference.gt_mask(index, (32, 32))).all()
        assert (evaluated.gt_boxes(index, (32, 32)) == reference.gt_boxes(index, (32, 32))).all()


FETCH = """
import json, sys
from wsol.data.shards import fetch
got = fetch(sys.argv[1])
print(json.dumps({"root": str(got.root), "downloaded": list(got.downloaded)}))
"""


def test_two_processes_on_a_node_download_each_shard_once(bucket, tiny_synth: Path):
    shards = parse_index(_index(bucket), "index").shards
    runs = [subprocess.Popen([sys.executable, "-c", FETCH, URI], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["root"] == results[1]["root"]
    downloaded = results[0]["downloaded"] + results[1]["downloaded"]
    assert sorted(downloaded) == sorted(s.name for s in shards)  # one process did them all
    assert fetch(URI).downloaded == ()  # a later trial on the node: nothing to fetch
    root = Path(results[0]["root"])
    image = load_split(tiny_synth / "metadata", "train").image_ids[0]
    assert (root / image).read_bytes() == (tiny_synth / image).read_bytes()


def test_an_interrupted_fetch_resumes_with_the_missing_shards(bucket):
    shards = parse_index(_index(bucket), "index").shards
    key = f"{PREFIX}/{shards[1].name}"
    good = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    bucket.put_object(Bucket=BUCKET, Key=key, Body=good[:-1024])  # truncated upload
    with pytest.raises(ShardIndexError, match=f"{shards[1].name}: not the {shards[1].size} "):
        fetch(URI)
    bucket.put_object(Bucket=BUCKET, Key=key, Body=good)
    assert fetch(URI).downloaded == (shards[1].name,)


def test_a_hostile_index_in_the_bucket_writes_nothing(bucket, tmp_path: Path):
    index = json.loads(_index(bucket))
    index["entries"][0][0] = "../../../outside.txt"
    bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{INDEX_NAME}", Body=json.dumps(index))
    with pytest.raises(ShardIndexError, match=f"{URI}/index.json: entries\\[0\\]: '..' in path"):
        fetch(URI)
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert all(p.suffix == ".lock" for p in written), written
    assert not list(tmp_path.rglob("outside.txt"))


def test_a_resharded_dataset_is_fetched_afresh(bucket, tiny_synth: Path):
    first = fetch(URI).root
    assert main(["data", "shard", "--metadata-root", str(tiny_synth / "metadata"),
                 "--data-root", str(tiny_synth), "--out", URI, "--shard-mb", "0.1"]) == 0
    second = fetch(URI)
    assert second.root != first and second.downloaded


def test_the_driver_checks_the_index_without_downloading(bucket, tmp_path: Path):
    assert index_problem(URI) is None
    missing = f"s3://{BUCKET}/datasets/nothing-here"
    assert index_problem(missing) == (
        f"data_root {missing} holds no index.json: pack the dataset there with `wsol data shard "
        f"--metadata-root METADATA --data-root DIR --out {missing}`")
    assert not (tmp_path / "cache").exists()
