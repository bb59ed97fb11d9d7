"""`wsol evaluate`: the one reading of the test split, for a promoted model or a trial run.

It loads the checkpoint and the choices train-fullsup made (normalisation, percentile,
threshold), scores test with them and logs an evaluation run linked to the model version;
the same maps scored with min-max alone are logged beside them as `test/minmax_<metric>`, the
numbers the papers print (wsol.lifecycle.minmax).
It chooses nothing, so running it again gives the same numbers; every reading is counted,
on the trial run and on its model version alike, and before test is opened, so that
repeated peeking at test is visible whichever way the model was named.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.common.outages import lock_retrying
from wsol.lifecycle import runs
from wsol.lifecycle.final_evaluation import evaluate_checkpoint, load_checkpoint
from wsol.lifecycle.minmax import train_fullsup_threshold
from wsol.lifecycle.promote import file_sha256, refusal


def resolve_model(client: MlflowClient, model: str) -> tuple[Run, ModelVersion | None]:
    """`models:/<name>@<alias>`, `models:/<name>/<version>` or a trial run id."""
    if not model.startswith("models:/"):
        return client.get_run(model), None
    reference = model[len("models:/"):]
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in reference:
        name, number = reference.rsplit("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ValueError(f"{model}: expected models:/<name>@<alias> or models:/<name>/<version>")
    if version.run_id is None:
        raise ValueError(f"{model}: version {version.version} names no trial run")
    return client.get_run(version.run_id), version


def _check_choices(state: dict[str, Any], run: Run) -> None:
    """The checkpoint must carry the choices its trial run recorded (nothing re-chosen)."""
    stored = state["metrics"]
    for key in schema.REUSED_CHOICES:
        recorded = run.data.tags.get(schema.selected(key))
        if recorded is not None and recorded != str(stored.get(key)):
            raise ValueError(f"checkpoint of run {run.info.run_id} has {key}={stored.get(key)} "
                             f"but the run recorded {recorded}")


def check_digest(path: str | Path, version: ModelVersion) -> None:
    """The checkpoint must be the one promote hashed: a best.pt replaced on the run since (by
    anyone who can edit that experiment) is refused before it is loaded."""
    recorded = version.tags.get(schema.CHECKPOINT_SHA256)
    if recorded is None:
        raise ValueError(f"version {version.version} of {version.name} records no checkpoint "
                         f"hash ({schema.CHECKPOINT_SHA256}); promote its run again to record "
                         "it")
    actual = file_sha256(Path(path))
    if actual != recorded:
        raise ValueError(f"the checkpoint of version {version.version} of {version.name} "
                         f"changed since it was promoted (sha256 {actual[:12]}..., promoted "
                         f"{recorded[:12]}...); refusing to evaluate it")


def evaluate_model(client: MlflowClient, model: str, data_root: str | None = None,
                   metadata_root: str | None = None, device: str = "auto",
                   batch_size: int | None = None) -> dict[str, Any]:
    client = lock_retrying(client)
    run, version = resolve_model(client, model)
    why = refusal(run)
    if why is not None:
        raise ValueError(f"will not evaluate {model} on test: {why}")
    pair = runs.pair_of(run)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run.info.run_id, schema.CHECKPOINT, tmp)
        if version is not None:
            check_digest(path, version)
        state = load_checkpoint(path, f"{schema.CHECKPOINT} of run {run.info.run_id}")
        _check_choices(state, run)
        selected = state["metrics"]
        result: dict[str, Any] = {
            "split": protocol.TEST_SPLIT, "model": model,
            "run_id": run.info.run_id, "epoch": state["epoch"],
            "normalisation": selected["normalisation"], "percentile": selected["percentile"],
            "threshold": float(selected["threshold"]),
            # Loc of min-max maps is read at this train-fullsup threshold (None: not read).
            "minmax_threshold": train_fullsup_threshold(selected),
        }
        tags = {schema.KIND: schema.EVALUATION, schema.SPLIT: protocol.TEST_SPLIT,
                schema.TRIAL_RUN_ID: run.info.run_id, schema.METHOD: pair.method,
                schema.BACKBONE: pair.backbone, schema.DATASET: pair.dataset,
                schema.MODEL_URI: model}
        if version is not None:
            tags.update({schema.MODEL_NAME: version.name,
                         schema.MODEL_VERSION: version.version})
            result.update({"model_name": version.name, "version": str(version.version)})
        # The run exists and is counted before test is opened: a reading that crashes
        # half-way still counts.
        evaluation = client.create_run(run.info.experiment_id, run_name=f"test {model}",
                                       tags=tags)
        evaluation_id = evaluation.info.run_id
        number = _count(client, run, evaluation_id)
        for key in schema.EVALUATION_PARAMS:
            client.log_param(evaluation_id, key, result[key])
        status = "FAILED"
        try:
            pictures = Path(tmp) / "test"
            score, _ = evaluate_checkpoint(state, data_root, metadata_root, device,
                                           batch_size, pictures=pictures)
            result.update(score.metrics)
            client.log_batch(evaluation_id, metrics=[
                Metric(schema.test_metric(k), float(v), evaluation.info.start_time, 0)
                for k, v in score.metrics.items()])
            (pictures / schema.TEST_METRICS_JSON).write_text(json.dumps(result, indent=2,
                                                                        default=float))
            client.log_artifacts(evaluation_id, str(pictures))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            client.set_terminated(evaluation_id, status)
    result.update({"evaluation_run_id": evaluation_id, "evaluation_number": number})
    return result


def _order(evaluation: Run) -> tuple[int, str]:
    return evaluation.info.start_time, evaluation.info.run_id


def _evaluations(client: MlflowClient, run: Run) -> list[Run]:
    """Every test evaluation of this trial's checkpoint, whether a version or the run id was
    asked for (promote registers one version per trial run and model)."""
    return runs.search(client, [run.info.experiment_id], schema.EVALUATION,
                       tags={schema.TRIAL_RUN_ID: run.info.run_id})


def _count(client: MlflowClient, run: Run, evaluation_id: str) -> int:
    """Numbers the trial's evaluations and writes their count on the trial run and on every
    version registered from it, then returns this evaluation's number."""
    evaluations = _settle_numbers(client, run)
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")

    def write(count: int) -> None:
        client.set_tag(run.info.run_id, schema.TEST_EVALUATIONS, str(count))
        for version in versions:
            client.set_model_version_tag(version.name, version.version,
                                         schema.TEST_EVALUATIONS, str(count))
            client.set_model_version_tag(version.name, version.version,
                                         schema.LAST_EVALUATION_RUN, evaluation_id)

    _settle_count(client, run, len(evaluations), write)
    return 1 + [e.info.run_id for e in evaluations].index(evaluation_id)


def _settle_numbers(client: MlflowClient, run: Run) -> list[Run]:
    """Numbers every evaluation of this trial 1, 2, ... by (start time, run id), writing all
    the numbers again until the list of evaluations stands. A run's start time is taken
    before it is stored, so an evaluation at the same moment may appear after this one was
    numbered while starting earlier: whichever evaluation writes last has seen every run
    (each writes after its own run exists), so the numbers left on the runs are right even
    where the number one command printed was overtaken. Returns the settled list, in order."""
    evaluations = sorted(_evaluations(client, run), key=_order)
    while True:
        for number, evaluation in enumerate(evaluations, 1):
            client.set_tag(evaluation.info.run_id, schema.EVALUATION_NUMBER, str(number))
        again = sorted(_evaluations(client, run), key=_order)
        if [e.info.run_id for e in again] == [e.info.run_id for e in evaluations]:
            return evaluations
        evaluations = again


def _settle_count(client: MlflowClient, run: Run, count: int,
                  write: Callable[[int], None]) -> None:
    """Writes the count of test evaluations, counting again after each write until the count
    stands: of evaluations of one trial at the same moment, the last to write has counted
    them all (each writes after its own run exists), so none is lost."""
    while True:
        write(count)
        again = len(_evaluations(client, run))
        if again == count:
            return
        count = again
