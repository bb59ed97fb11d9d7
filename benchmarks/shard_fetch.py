"""Many small objects against a few large shards, on a local S3 API (moto's server mode):
what each costs per request and per MB with boto3, and a per-node cost model for ILSVRC and
CUB built from it (extrapolated, and labelled so: the local server has no network latency).

Small objects are fetched as `aws s3 sync` does (one GET each, 10 at a time: the CLI's default
max_concurrent_requests); shards through wsol.data.shards.fetch (one streamed GET per shard,
several shards at once, files written to the node cache), so the shard figure includes
writing the files.

    .venv/bin/python benchmarks/shard_fetch.py --json benchmarks/results/shard_fetch.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, write_result
from wsol.data.shards import CACHE_ENV, fetch, write_shards

BUCKET = "bench"
SYNC_CONCURRENCY = 10  # aws s3 sync's default max_concurrent_requests
# (files, bytes) per dataset. ILSVRC-2012 train + val: 1,281,167 + 50,000 JPEGs; the train
# archive is 147.9 GB (138 GiB), val 6.7 GB: ~115 kB a file. CUB-200-2011: 11,788 JPEGs in a
# 1.15 GB archive.
DATASETS = {"ilsvrc": (1_331_167, 154.6e9), "cub": (11_788, 1.15e9)}
# What the local server cannot show, from AWS's published figures (assumptions of the model):
# first-byte latency of an S3 GET from EC2 in the same region, roughly 100-200 ms for small
# objects (Amazon S3 user guide, "Performance design patterns"); the low end is used.
S3_LATENCY_S = 0.1
GET_PRICE_PER_1000 = 0.0004  # S3 Standard GET, us-east-1 (aws.amazon.com/s3/pricing)
# A node's sustained download from S3 with several streams, bytes/s: g5.2xlarge is "up to 10
# Gbit/s"; 500 MB/s is assumed (half of it), and its disk must take that rate too.
NODE_BYTES_PER_S = 500e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).parent / "moto_server"
    log = (workdir / "moto.log").open("w")
    process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            return process, endpoint
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("moto_server did not start")


def small_objects(client, folder: Path, files: list[str], threads: int) -> dict[str, float]:
    """One GET per file, `threads` at a time, each written to `folder` (as a sync writes)."""
    def get(key: str) -> int:
        data = client.get_object(Bucket=BUCKET, Key=f"small/{key}")["Body"].read()
        target = folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return len(data)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(get, files))
    seconds = time.perf_counter() - start
    return {"objects_per_s": round(len(files) / seconds, 1),
            "mb_per_s": round(total / seconds / 1e6, 1),
            "ms_per_request_per_thread": round(1000 * seconds * threads / len(files), 2)}


def shards(folder: Path, files: list[str], total: int, shard_mb: float) -> dict[str, float]:
    os.environ[CACHE_ENV] = str(folder / f"cache-{shard_mb}")
    uri = f"s3://{BUCKET}/shards-{shard_mb}"
    index = write_shards(folder / "source", files, uri, int(shard_mb * 1e6))
    start = time.perf_counter()
    fetched = fetch(uri)
    seconds = time.perf_counter() - start
    assert len(fetched.downloaded) == len(index.shards)
    return {"shards": len(index.shards), "mb_per_s": round(total / seconds / 1e6, 1),
            "files_per_s": round(len(files) / seconds, 1),
            "ms_per_request": round(1000 * seconds / len(index.shards), 1)}


def per_node_model(dataset: str, local_small_ms: float,
                   shard_files_per_s: float) -> dict[str, object]:
    """Per-node time and request cost, extrapolated (not measured): a sync waits for each
    GET's latency (10 at a time); a shard fetch is bound by the node's bandwidth or by writing
    the files at the rate measured here, whichever is slower."""
    files, size = DATASETS[dataset]
    per_get = S3_LATENCY_S + local_small_ms / 1000
    sync_s = max(files * per_get / SYNC_CONCURRENCY, size / NODE_BYTES_PER_S)
    shard_count = int(np.ceil(size / 1e9))
    shard_s = max(size / NODE_BYTES_PER_S, files / shard_files_per_s)
    return {
        "label": "extrapolated from the assumptions above, not measured on AWS",
        "assumptions": {"s3_first_byte_latency_s": S3_LATENCY_S,
                        "sync_concurrency": SYNC_CONCURRENCY,
                        "node_download_bytes_per_s": NODE_BYTES_PER_S,
                        "shard_files_written_per_s": shard_files_per_s,
                        "get_price_per_1000_usd": GET_PRICE_PER_1000},
        "per_node_sync": {"requests": files, "minutes": round(sync_s / 60, 1),
                          "request_cost_usd": round(files / 1000 * GET_PRICE_PER_1000, 3)},
        "per_node_shards_1gb": {"requests": shard_count, "minutes": round(shard_s / 60, 1),
                                "request_cost_usd": round(shard_count / 1000 * GET_PRICE_PER_1000,
                                                          5)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kb", type=float, default=110, help="ILSVRC's mean: ~115 kB")
    parser.add_argument("--json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wsol-shard-bench-"))
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    moto, endpoint = start_moto(workdir)
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        rng = np.random.default_rng(0)
        size = int(args.file_kb * 1000)
        files = [f"n{i // 100:05d}/img_{i:07d}.JPEG" for i in range(args.files)]
        for name in files:
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            (workdir / "source" / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / "source" / name).write_bytes(data)
            client.put_object(Bucket=BUCKET, Key=f"small/{name}", Body=data)
        total = size * len(files)
        small = {str(n): small_objects(client, workdir / f"sync-{n}", files, n)
                 for n in (1, SYNC_CONCURRENCY)}
        large = {f"{mb:g} MB": shards(workdir, files, total, mb) for mb in (20.0, 100.0)}
        write_result(args.json, "shard_fetch", {
            "files": len(files), "file_bytes": size, "load_average": load_average(),
            "local_s3": "moto server mode on 127.0.0.1 (no network latency)",
            "small_objects_by_threads": small, "shards": large,
            "per_node": {name: per_node_model(name, small["1"]["ms_per_request_per_thread"],
                                              max(v["files_per_s"] for v in large.values()))
                         for name in DATASETS},
        })
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
