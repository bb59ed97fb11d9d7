"""`wsol promote`: register the best train-fullsup trial of a pair as an MLflow model version.

The choice uses train-fullsup scores only. The version carries the post-hoc choices the
final evaluation must reuse (normalisation, percentile, threshold) and its lineage, and the
alias moves to it while the version it replaces keeps a `previous` alias. The version records
the sha256 of the trial's best.pt, so that `wsol evaluate` loads only the file promoted.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.common.outages import lock_retrying
from wsol.common.protocol import SELECTION_SPLIT
from wsol.common.tracking_store import ui_link
from wsol.lifecycle import runs

TIE_BREAKERS = (*protocol.SELECTION_METRICS, protocol.MAX_BOX_ACC)


class PromotionError(ValueError):
    """Why nothing was promoted."""


@dataclass
class Promotion:
    model_uri: str
    name: str
    version: str
    run_id: str
    alias: str
    previous_version: str | None
    score: float
    choices: dict[str, str]
    lineage: dict[str, str]
    checkpoint_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refusal(run: Run) -> str | None:
    """Why a trial run cannot be promoted, or None."""
    tags = run.data.tags
    if tags.get(schema.KIND) != schema.TRIAL:
        return (f"run {run.info.run_id} is not a search trial "
                f"({schema.KIND}={tags.get(schema.KIND)})")
    if run.info.status != "FINISHED":
        reason = tags.get(schema.FAILURE_REASON, "")
        return f"run {run.info.run_id} is {run.info.status}" + (f": {reason}" if reason else "")
    if tags.get(schema.SELECTED_ON) != SELECTION_SPLIT:
        return (f"run {run.info.run_id} was selected on {tags.get(schema.SELECTED_ON)!r}, "
                f"not {SELECTION_SPLIT}")
    if schema.SCORE not in run.data.metrics:
        return f"run {run.info.run_id} has no {schema.SCORE} metric"
    return None


def choose(client: MlflowClient, method: str, backbone: str, dataset: str | None,
           experiments: list[str] | None, searches: list[str] | None = None) -> Run:
    """The one best promotable trial; anything unclear is refused with the reason."""
    ids = runs.experiment_ids(client, experiments)
    if searches:
        runs.check_searches(client, searches)
    found = runs.search(client, ids, schema.TRIAL, searches, {
        schema.METHOD: method, schema.BACKBONE: backbone, schema.DATASET: dataset})
    if not found:
        where = f" on dataset {dataset!r}" if dataset else ""
        raise PromotionError(f"no trial runs for method {method!r}, backbone {backbone!r}{where}")
    datasets = sorted({runs.pair_of(r).dataset for r in found})
    if len(datasets) > 1:
        raise PromotionError(f"ambiguous: trials of {method}/{backbone} exist on datasets "
                             f"{datasets}; pass --dataset")
    reasons = [refusal(r) for r in found]
    candidates = [r for r, why in zip(found, reasons, strict=True) if why is None]
    if not candidates:
        raise PromotionError("no promotable trial:\n  " + "\n  ".join(filter(None, reasons)))
    metrics = {r.data.tags.get(schema.selected("selection_metric")) for r in candidates}
    if len(metrics) > 1:
        raise PromotionError(f"ambiguous: trials were selected by different metrics {metrics}")
    parents = {r.data.tags.get(schema.PARENT) for r in candidates}
    fingerprints = {client.get_run(p).data.tags.get(schema.DATASET_FINGERPRINT, "") if p else ""
                    for p in parents}
    if len(fingerprints) > 1:
        raise PromotionError(f"ambiguous: dataset {datasets[0]!r} has trials on "
                             f"{len(fingerprints)} different metadata versions; pass --search "
                             "with the parent run id of one search")
    top = max(map(rank, candidates))
    best = [r for r in candidates if rank(r) == top]
    if len(best) > 1:
        raise PromotionError(f"ambiguous: runs {[r.info.run_id for r in best]} tie at "
                             f"{top[0]:.4f} on every train-fullsup metric; pass --run-id")
    return best[0]


def rank(run: Run) -> tuple[float, ...]:
    """The selection score, then the other train-fullsup metrics to break ties (small
    train-fullsup sets make equal scores common); never a test number."""
    metrics = run.data.metrics
    return (metrics[schema.SCORE],
            *(metrics.get(schema.selected_metric(key), float("-inf")) for key in TIE_BREAKERS))


def promote(client: MlflowClient, method: str | None = None, backbone: str | None = None,
            dataset: str | None = None, alias: str = schema.CHAMPION,
            experiments: list[str] | None = None, run_id: str | None = None,
            searches: list[str] | None = None) -> Promotion:
    client = lock_retrying(client)
    if run_id is not None:
        run = client.get_run(run_id)
        why = refusal(run)
        if why is not None:
            raise PromotionError(why)
        pair = runs.pair_of(run)
        for given, actual, what in ((method, pair.method, "method"),
                                    (backbone, pair.backbone, "backbone"),
                                    (dataset, pair.dataset, "dataset")):
            if given is not None and given != actual:
                raise PromotionError(f"run {run_id} is {what} {actual!r}, not {given!r}")
    else:
        if method is None or backbone is None:
            raise PromotionError("name --method and --backbone (or --run-id)")
        run = choose(client, method, backbone, dataset, experiments, searches)
    return register(client, run, alias)


def register(client: MlflowClient, run: Run, alias: str) -> Promotion:
    client = lock_retrying(client)
    pair = runs.pair_of(run)
    name = schema.model_name(pair.dataset, pair.method, pair.backbone)
    tags = run.data.tags
    # The trial's choices and epoch as tagged on its run; selected_on has a tag of its own.
    choices = {key: tags.get(schema.selected(key), "") for key in schema.VERSION_CHOICES
               if key != "selected_on"}
    choices["selected_on"] = tags[schema.SELECTED_ON]
    lineage = {
        "trial_run_id": run.info.run_id,
        "search_run_id": tags.get(schema.PARENT, ""),
        "experiment_id": run.info.experiment_id,
    }
    parent = runs.parent_of(client, run)
    for key, tag in (("code_version", schema.CODE_VERSION),
                     ("dataset_fingerprint", schema.DATASET_FINGERPRINT)):
        lineage[key] = "" if parent is None else parent.data.tags.get(tag, "")
    score = run.data.metrics[schema.SCORE]
    digest = checkpoint_sha256(client, run.info.run_id)
    _ensure_model(client, name, f"WSOL {pair}: promoted search trials")
    version = _first_version(client, name, run.info.run_id)
    if version is not None:
        _keep_digest(client, name, version, run.info.run_id, digest)
    else:
        version_tags = {schema.version_tag(k): v for k, v in {**choices, **lineage}.items()}
        version_tags.update({schema.TRAIN_FULLSUP_SCORE: f"{score:.6f}",
                             schema.METHOD: pair.method, schema.BACKBONE: pair.backbone,
                             schema.DATASET: pair.dataset, schema.CHECKPOINT_SHA256: digest,
                             schema.TEST_EVALUATIONS: run.data.tags.get(
                                 schema.TEST_EVALUATIONS, "0")})
        made = str(client.create_model_version(
            name, source=f"{run.info.artifact_uri}/checkpoint", run_id=run.info.run_id,
            tags=version_tags,
            description=_description(run, choices, score, lineage),
        ).version)
        # A promote of the same trial at the same moment may have made one too: the first
        # version stays, a later one is removed by the promote that made it.
        version = _first_version(client, name, run.info.run_id) or made
        if version != made:
            client.delete_model_version(name, made)
    previous = _alias_version(client, name, alias)
    if previous is not None and previous != version:
        client.set_registered_model_alias(name, schema.previous_alias(alias), previous)
    client.set_registered_model_alias(name, alias, version)
    return Promotion(f"models:/{name}@{alias}", name, version, run.info.run_id, alias,
                     previous if previous != version else None, score, choices, lineage,
                     digest)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(client: MlflowClient, run_id: str) -> str:
    """The sha256 of the trial's best.pt as it is stored now."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, schema.CHECKPOINT, tmp)
        except (MlflowException, OSError) as error:
            raise PromotionError(f"run {run_id} has no {schema.CHECKPOINT} artifact") from error
        return file_sha256(Path(path))


def _keep_digest(client: MlflowClient, name: str, version: str, run_id: str,
                 digest: str) -> None:
    """A version promoted before hashes were recorded gets one now; a version whose trial's
    checkpoint was replaced since it was promoted is refused, not moved to."""
    recorded = client.get_model_version(name, version).tags.get(schema.CHECKPOINT_SHA256)
    if recorded is None:
        client.set_model_version_tag(name, version, schema.CHECKPOINT_SHA256, digest)
    elif recorded != digest:
        raise PromotionError(f"the checkpoint of run {run_id} changed since it was promoted "
                             f"as version {version} of {name}; refusing to promote it again")


def _description(run: Run, choices: dict[str, str], score: float,
                 lineage: dict[str, str]) -> str:
    """Markdown the registry page renders: the score and links to the trial run and its
    search in the MLflow UI (relative, so they work on any server)."""
    experiment = lineage["experiment_id"]
    lines = [f"best {choices['selection_metric']} on {SELECTION_SPLIT}: {score:.2f}", "",
             f"- trial run: [{run.info.run_name or run.info.run_id}]"
             f"({ui_link(experiment, run.info.run_id)}) (`{run.info.run_id}`)"]
    if lineage["search_run_id"]:
        lines.append(f"- search: [parent run]({ui_link(experiment, lineage['search_run_id'])}) "
                     f"(`{lineage['search_run_id']}`)")
    return "\n".join(lines)


def _ensure_model(client: MlflowClient, name: str, description: str) -> None:
    """The registered model, made if missing; made by another promote meanwhile is fine."""
    try:
        client.get_registered_model(name)
        return
    except MlflowException:
        pass
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _first_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The lowest version registered from this trial run, or None."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None
