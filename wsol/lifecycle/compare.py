"""`wsol compare`: the verdict the tool exists for, at equal budget and beyond noise.

N independent searches of one experiment (search seed = the experiment's seed + i), each its
own MLflow parent run; then, per search and (method, backbone) pair, the pair's best
train-fullsup trial of THAT search is promoted under the alias `compare-<id>-seed<seed>` and
read once on test. It composes `run_search`, `promote` and `evaluate_model`; every run is
tagged with the compare's id and seed, which is how `wsol report --compare` finds
them. Nothing here looks at a test number before the last step, and nothing chooses by it.

The benchmark is part of the setting, not of the search: the synthetic data is generated
once at the experiment's own seed, and the seeded searches read that copy (they do not
regenerate it at their seed).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.common.tracking_store import DEFAULT_TRACKING_URI, ensure_experiment, tracking_uri
from wsol.lifecycle import runs
from wsol.lifecycle.evaluate import evaluate_model
from wsol.lifecycle.promote import Promotion, PromotionError, promote, rank, refusal
from wsol.search.experiment import Experiment
from wsol.search.runner import prepare_data, run_search
from wsol.trial.evaluation import minmax_key

TEST_KEYS = (protocol.MAX_BOX_ACC, *protocol.SELECTION_METRICS)
# compare.json's test numbers: the selected normalisation's and min-max's (the papers').
SUMMARY_KEYS = (*TEST_KEYS, *map(minmax_key, TEST_KEYS))


def new_compare_id() -> str:
    """Sortable by time, unique without coordination: 20250101-120000-1a2b3c."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def seeded_experiment(experiment: Experiment, index: int, compare_id: str) -> Experiment:
    """The i-th search: its own seed (sampler, initialisation, data order), its own name (so its
    own MLflow experiment and parent run), its Ray folder under the compare's, and the data
    the base experiment prepared (no regeneration at the search seed)."""
    seed = experiment.seed + index
    storage = experiment.storage_path.rstrip("/")
    return dataclasses.replace(experiment, name=f"{experiment.name}-seed{seed}", seed=seed,
                               synthetic_preset=None,
                               storage_path=f"{storage}/compare-{compare_id}")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_compare(experiment: Experiment, search_seeds: int, device: str = "auto",
                compare_id: str | None = None, log: Callable[[str], None] = _log
                ) -> dict[str, Any]:
    """Searches, promotions and test evaluations of every seed; returns the summary that is
    also logged (compare.json) as a run in the `wsol-compares` experiment."""
    if search_seeds < 1:
        raise ValueError(f"--search-seeds must be at least 1, got {search_seeds}")
    compare_id = compare_id or new_compare_id()
    uri = tracking_uri(experiment.tracking_uri)
    if uri == DEFAULT_TRACKING_URI:
        Path("mlruns").mkdir(exist_ok=True)
    client = MlflowClient(uri)
    prepare_data(experiment)
    if experiment.trial.get("weights") == "synthetic-pretrained":
        from wsol.models.synthetic_pretrained import ensure_pretrained

        ensure_pretrained()  # once here, not in the first trials (one thread each)
    record = client.create_run(ensure_experiment(client, schema.COMPARE_EXPERIMENT, uri),
                               run_name=f"compare {experiment.name}",
                               tags={schema.KIND: schema.COMPARE,
                                     schema.COMPARE_ID: compare_id,
                                     schema.DATASET: experiment.dataset})
    params = (experiment.name, search_seeds, experiment.seed, ",".join(experiment.pairs()),
              experiment.trials_per_pair)
    for key, value in zip(schema.COMPARE_PARAMS, params, strict=True):
        client.log_param(record.info.run_id, key, value)
    summary: dict[str, Any] = {"compare_id": compare_id, "tracking_uri": uri,
                               "experiment": experiment.name, "seeds": [],
                               "compare_run_id": record.info.run_id}
    status = "FAILED"
    try:
        for index in range(search_seeds):
            seeded = seeded_experiment(experiment, index, compare_id)
            log(f"compare {compare_id}: search {index + 1}/{search_seeds} (seed {seeded.seed})")
            summary["seeds"].append(_one_seed(client, seeded, compare_id, device, log))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / schema.COMPARE_JSON
            path.write_text(json.dumps(summary, indent=2, default=str))
            client.log_artifact(record.info.run_id, str(path))
        client.set_terminated(record.info.run_id, status)
    return summary


def _one_seed(client: MlflowClient, experiment: Experiment, compare_id: str, device: str,
              log: Callable[[str], None]) -> dict[str, Any]:
    result = run_search(experiment)
    parent = result["parent_run_id"]
    client.set_tag(parent, schema.COMPARE_ID, compare_id)
    client.set_tag(parent, schema.COMPARE_SEED, str(experiment.seed))
    if result.get("unfinished"):  # Tune returns on Ctrl+C: no promotion from half a budget
        raise KeyboardInterrupt(f"search {experiment.name} was interrupted with "
                                f"{result['unfinished']} trials unfinished; compare "
                                f"{compare_id} stops here")
    entry: dict[str, Any] = {"seed": experiment.seed, "search_run_id": parent,
                             "experiment": experiment.name, "trials": result["trials"],
                             "failed": result["failed"], "pairs": {}}
    for pair in experiment.pairs():
        try:
            entry["pairs"][pair] = _promote_and_evaluate(client, experiment, pair, parent,
                                                         compare_id, device)
        except PromotionError as error:  # e.g. every trial of the pair failed: n shrinks
            log(f"compare {compare_id}: seed {experiment.seed}, {pair}: not promoted: {error}")
            entry["pairs"][pair] = {"error": str(error)}
    return entry


def _promote_and_evaluate(client: MlflowClient, experiment: Experiment, pair: str,
                          parent: str, compare_id: str, device: str) -> dict[str, Any]:
    """Promote the pair's best trial of this search under the seed's alias, tag the version,
    read test once and tag that evaluation run."""
    method, backbone = pair.split("/")
    alias = schema.compare_alias(compare_id, experiment.seed)
    promotion, tie = _promote(client, experiment, method, backbone, parent, alias)
    tags = {schema.COMPARE_ID: compare_id, schema.COMPARE_SEED: str(experiment.seed)}
    for key, value in tags.items():
        client.set_model_version_tag(promotion.name, promotion.version, key, value)
    result = evaluate_model(client, promotion.model_uri, device=device)
    for key, value in tags.items():
        client.set_tag(result["evaluation_run_id"], key, value)
    return {"model_uri": promotion.model_uri, "version": promotion.version,
            "run_id": promotion.run_id, "train_fullsup_score": promotion.score,
            "choices": promotion.choices, "tie_break": tie,
            "evaluation_run_id": result["evaluation_run_id"],
            "test": {k: result[k] for k in SUMMARY_KEYS if k in result}}


def _promote(client: MlflowClient, experiment: Experiment, method: str, backbone: str,
             parent: str, alias: str) -> tuple[Promotion, str | None]:
    """promote() on this search's trials only. A tie on every train-fullsup metric, which it
    refuses, is broken here by the earliest trial, so that a compare never stops for it."""
    try:
        return promote(client, method, backbone, experiment.dataset, alias,
                       [experiment.name], searches=[parent]), None
    except PromotionError as error:
        if "tie at" not in str(error):
            raise
        ids = runs.experiment_ids(client, [experiment.name])
        found = [r for r in runs.search(client, ids, schema.TRIAL, [parent], {
                     schema.METHOD: method, schema.BACKBONE: backbone,
                     schema.DATASET: experiment.dataset})
                 if refusal(r) is None]
        top = max(map(rank, found), default=None)
        tied = [r for r in found if rank(r) == top]
        if len(tied) < 2:
            raise
        first = min(tied, key=lambda r: r.info.start_time)
        return (promote(client, alias=alias, run_id=first.info.run_id),
                f"earliest of {len(tied)} trials tied on every train-fullsup metric")
