"""A real-shape rehearsal: fabricated CUB archives -> `wsol data prepare` -> a VGG16 search on
the prepared folder (real image sizes, 224-pixel crops) -> promote -> evaluate -> report.
A handful of images (VGG16 costs about 0.5 s an image on a CPU): two classes, a few each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import ray
from fabricated_archives import cub_archives, first_classes
from mlflow.tracking import MlflowClient
from small_search import small_experiment

from wsol.cli import main as wsol
from wsol.data.bundled import bundled_metadata
from wsol.data.manifest import read_manifest
from wsol.data.metadata import SplitMetadata
from wsol.data.subset import write_metadata
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search

pytestmark = pytest.mark.e2e

PER_SPLIT = {"train": 3, "val": 2, "test": 2}  # images per class


def _few(split: SplitMetadata, per_class: int) -> SplitMetadata:
    kept: list[str] = []
    for image_id in split.image_ids:
        if sum(split.labels[k] == split.labels[image_id] for k in kept) < per_class:
            kept.append(image_id)
    return SplitMetadata(split.name, split.folder, tuple(kept),
                         {i: split.labels[i] for i in kept}, {i: split.sizes[i] for i in kept},
                         {i: split.boxes[i] for i in kept})


def test_prepared_cub_through_search_promote_evaluate_report(tmp_path: Path) -> None:
    archives, data, metadata = tmp_path / "archives", tmp_path / "CUB", tmp_path / "metadata"
    cub_archives(archives, classes=2)
    splits = {name: _few(split, PER_SPLIT[name]) for name, split in first_classes("cub", 2).items()}
    write_metadata(bundled_metadata("cub"), metadata, splits)
    assert wsol(["data", "prepare", "cub", "--archives", str(archives), "--out", str(data),
                 "--metadata-root", str(metadata)]) == 0
    manifest = read_manifest(data)
    assert manifest is not None and manifest.counts["train"]["images"] == 6

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    values = small_experiment(
        "rehearsal-cub", data, tmp_path, dataset="cub", metadata_root=str(metadata),
        backbones=["vgg16"], tracking_uri=uri,
        trial={"resize": 256, "crop": 224, "eval_size": 224, "batch_size": 3, "weights": None,
               "num_workers": 0, "device": "cpu"})
    values.pop("synthetic_preset")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        summary = run_search(experiment_from_dict(values))
    finally:
        ray.shutdown()
    assert summary["trials"] == 1 and summary["failed"] == 0 and "cam/vgg16" in summary["best"]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rehearsal-cub").experiment_id])
    parent = next(r for r in runs if r.data.tags["wsol.kind"] == "search")
    assert parent.data.tags["wsol.dataset"] == "cub"
    assert parent.data.tags["wsol.dataset_fingerprint"] == manifest.fingerprint

    promoted = tmp_path / "promote.json"
    assert wsol(["promote", "--method", "cam", "--backbone", "vgg16", "--tracking-uri", uri,
                 "--json", str(promoted)]) == 0
    model = json.loads(promoted.read_text())["model_uri"]
    result = tmp_path / "test.json"
    assert wsol(["evaluate", "--model", model, "--tracking-uri", uri, "--json",
                 str(result)]) == 0
    numbers = json.loads(result.read_text())
    assert 0 <= numbers["MaxBoxAccV2"] <= 100 and numbers["evaluation_number"] == 1
    report = tmp_path / "report"
    assert wsol(["report", "--out", str(report), "--tracking-uri", uri]) == 0
    with (report / "report.csv").open() as handle:
        columns = next(csv.DictReader(handle))
    assert columns["cub MaxBoxAccV2 (test)"] == f"{numbers['MaxBoxAccV2']:.2f}"
