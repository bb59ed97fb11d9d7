"""The Ray Tune callback that records each trial in its MLflow child run, from the driver.

The driver logs, so trials on any node need no MLflow access of their own, early-stopped and
failed trials are closed properly, and a restored search finds its existing child runs by
their Ray trial id instead of creating duplicates. Trial runs are named `cam/tiny #01`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunStatus, ViewType
from mlflow.tracking import MlflowClient
from ray.tune import Callback, Checkpoint
from ray.tune.experiment import Trial

from wsol.common import outages
from wsol.common import tracking_schema as schema
from wsol.common.console import error_line, say
from wsol.common.outages import (
    OUTAGE_LIMIT_ENV,
    TrackingRefused,
    TrackingUnavailable,
    outage_limit_s,
    quick_failing_http,
    refused_access,
    transient,
)
from wsol.common.protocol import SELECTION_SPLIT
from wsol.common.tracking_store import flat_params
from wsol.search.pairs import PAIR_KEY

# A trial's files that its run keeps: the checkpoint under schema.CHECKPOINT_FOLDER.
ARTIFACTS = ("best.pt", schema.METRICS_JSON, *schema.PICTURES)


def trial_run_name(pair: str, number: int) -> str:
    return f"{pair} #{number:02d}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _one_line(error: BaseException) -> str:
    """The error as one short line (a server's refusal may carry a page of HTML)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


class MLflowTrialCallback(Callback):
    """Logs each trial to its child run. Every record goes through a queue that is written
    in order: while MLflow (or S3 behind it) is unreachable the queue waits and the search
    goes on; it is retried every few seconds, saved with Tune's experiment state (so a
    restored search still logs it), and a search that cannot log for longer than the outage
    limit stops, as it does at once when MLflow refuses its credentials (401/403). Records
    are idempotent on retry (a run is looked up by trial id before it is created; a metric
    repeats its timestamp, which MLflow stores once), and an epoch a trial repeats after
    losing its worker is logged once (the first time)."""

    # A callback pickled by an older version (a restored search) has no Tune run name: it
    # retires, as it did, any run of its parent run that Ray does not know.
    tune_run: str | None = None
    # Per pair, the recipe card and its source (wsol.search.pair_spaces.pair_recipes); empty
    # in a callback pickled by an older version.
    recipes: dict[str, dict[str, Any]] = {}  # noqa: RUF012  (never mutated)
    recipe_sources: dict[str, str] = {}  # noqa: RUF012

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 dataset: str, tune_run: str | None = None,
                 recipes: dict[str, dict[str, Any]] | None = None,
                 recipe_sources: dict[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.tune_run = tune_run
        self.recipes = dict(recipes or {})
        self.recipe_sources = dict(recipe_sources or {})
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.dataset = dataset
        self.runs: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.placed: set[str] = set()
        self.pending: list[Record] = []
        self.steps: dict[str, int] = {}
        self.outage_since: float | None = None
        self.last_attempt = 0.0
        self.gave_up = False
        # What MLflow refused (401/403): the search stops at its next Tune step.
        self.refused: str | None = None

    @property
    def client(self) -> MlflowClient:
        quick_failing_http()
        return MlflowClient(self.tracking_uri)

    def get_state(self) -> dict[str, Any]:
        return {"pending": list(self.pending), "steps": dict(self.steps)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pending = list(state.get("pending", []))
        self.steps = dict(state.get("steps", {}))

    def run_of(self, trial_id: str) -> Run | None:
        existing = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{schema.PARENT}` = '{self.parent_run_id}' "
            f"and tags.`{schema.RAY_TRIAL_ID}` = '{trial_id}'",
        )
        return existing[0] if existing else None

    def name_of(self, trial: Trial) -> str:
        """The trial's run name (`cam/tiny #01`), or Ray's name before its run exists."""
        return self.names.get(trial.trial_id, str(trial))

    def _next_number(self, client: MlflowClient, method: str, backbone: str) -> int:
        """Trials are numbered per pair in the order they start; runs of this search left by
        a killed driver (also deleted ones) keep their numbers."""
        runs = client.search_runs(
            [self.experiment_id],
            f"tags.`{schema.PARENT}` = '{self.parent_run_id}' "
            f"and tags.`{schema.METHOD}` = '{method}' and tags.`{schema.BACKBONE}` = '{backbone}'",
            run_view_type=ViewType.ALL,
            max_results=10_000)
        numbers = [int(r.data.tags.get(schema.TRIAL_NUMBER, 0)) for r in runs]
        return max(numbers, default=0) + 1

    def _run_for(self, trial: TrialInfo) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        client = self.client
        run = self.run_of(trial.trial_id)
        if run is not None:
            run_id = run.info.run_id
            self.names[trial.trial_id] = run.info.run_name
            if run.info.status != "RUNNING":
                client.update_run(run_id, "RUNNING")
            # A retried start whose run was made but whose params were not logged.
            missing = [Param(k, v) for k, v in self._params(trial.config).items()
                       if k not in run.data.params]
            if missing:
                client.log_batch(run_id, params=missing)
            # Tune saves `steps` now and then, so a restored value can lag what MLflow has.
            history = client.get_metric_history(run_id, _EPOCH_METRIC)
            self.steps[run_id] = max(self.steps.get(run_id, -1),
                                     max((m.step for m in history), default=-1))
        else:
            pair = trial.config[PAIR_KEY]
            method, backbone = pair.split("/")
            number = self._next_number(client, method, backbone)
            name = trial_run_name(pair, number)
            run_id = client.create_run(self.experiment_id, run_name=name, tags={
                schema.PARENT: self.parent_run_id, schema.RAY_TRIAL_ID: trial.trial_id,
                schema.TRIAL_NUMBER: str(number), schema.RAY_TRIAL_NAME: trial.name,
                schema.KIND: schema.TRIAL, schema.METHOD: method, schema.BACKBONE: backbone,
                schema.DATASET: self.dataset, schema.SELECTION_SPLIT: SELECTION_SPLIT,
                **({schema.TUNE_RUN: self.tune_run} if self.tune_run else {}),
                **({schema.RECIPE_SOURCE: self.recipe_sources[pair][:5000]}
                   if pair in self.recipe_sources else {}),
            }).info.run_id
            self.names[trial.trial_id] = name
            client.log_batch(run_id, params=[Param(k, v)
                                             for k, v in self._params(trial.config).items()])
        self.runs[trial.trial_id] = run_id
        return run_id

    def _params(self, config: dict[str, Any]) -> dict[str, str]:
        """A trial's params: its sampled and fixed values, and its recipe card (`recipe.*`:
        the pair's recipe with the trial's sampled values of its fields)."""
        card = self.recipes.get(config.get(PAIR_KEY, ""), {})
        resolved = {key: config.get(key, value) for key, value in card.items()}
        return {**flat_params(config),
                **flat_params(resolved, schema.RECIPE_PARAM_PREFIX)}

    # The Tune hooks only queue records; _flush writes them.

    def _queue(self, kind: str, trial: Trial, **data: Any) -> None:
        info = TrialInfo(trial.trial_id, dict(trial.config), str(trial))
        self.pending.append(Record(kind, info, data))
        self._flush()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._queue("start", trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict, **info: Any) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = {schema.per_epoch(k): float(v) for k, v in result.items()
                   if k in _METRICS and v is not None}
        self._queue("result", trial, step=step, metrics=metrics,
                    timestamp=int(result.get("timestamp", 0)) * 1000,
                    node_id=result.get("node_id"))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        error = trial.get_error()
        # Tune may not hold the error yet (a lost worker, or a trial error still in flight).
        why = f" ({error_line(str(error))[:160]})" if error else ""
        say(f"{self.name_of(trial)} failed{why}; retry {trial.num_failures} of "
            f"{trial.max_failures} from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self._queue("close", trial, error=None, checkpoint=trial.checkpoint, stamp=_now_ms())

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        # Ray writes the error text after this hook; on_experiment_end adds it as the reason.
        self._queue("close", trial, error="trial failed", checkpoint=trial.checkpoint,
                    stamp=_now_ms())

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._flush()
        self._check_outage()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self.gave_up:  # the search is stopping for the outage: its state keeps the rest
            return
        for trial in trials:
            error = trial.get_error() if trial.status == Trial.ERROR else None
            if error:
                tries = f"{trial.num_failures} failures (max_failures {trial.max_failures}): " \
                    if trial.max_failures else ""
                self._queue("reason", trial, reason=tries + error_line(str(error)))
        self.pending.append(Record("orphans", TrialInfo("", {}, ""),
                                   {"known": {trial.trial_id for trial in trials}}))
        while True:
            self._flush()
            if not self.pending:
                return
            self._check_outage()
            time.sleep(outages.RETRY_S)

    def _flush(self) -> None:
        """Writes the queued records in order; on a transient failure keeps them for the next
        try, at most every RETRY_S; on refused credentials keeps them all and tries no more
        (the next Tune step stops the search)."""
        if self.refused is not None:  # every write would be refused the same way
            return
        if self.outage_since is not None and time.time() - self.last_attempt < outages.RETRY_S:
            return
        # A server that accepts and never answers would hold each write for the requests'
        # full timeout: a short probe first keeps Tune's loop going.
        silence = outages.unanswered(self.tracking_uri) if self.pending else None
        if silence is not None:
            self.last_attempt = time.time()
            self._outage(silence)
            return
        while self.pending:
            try:
                self._write(self.pending[0])
            except Exception as error:
                if refused_access(error):  # kept, with the rest, for --restore
                    self.refused = f"{self._what(self.pending[0])}: {_one_line(error)}"
                    return
                if not transient(error):
                    self._drop(self.pending.pop(0), error)
                    continue
                # From the failed attempt's end: one that hung on a timeout waits in full.
                self.last_attempt = time.time()
                self._outage(error)
                return
            self.pending.pop(0)
            if self.outage_since is not None:
                self._recovered()

    def _drop(self, record: Record, error: BaseException) -> None:
        """A record MLflow refused (not an outage: retrying it would fail the same way) is
        left out with a warning, so that one bad write neither stops the search nor blocks
        the queue (and a --restore) behind it."""
        say(f"warning: MLflow at {self.tracking_uri} refused a record ({self._what(record)}), "
            f"not logged: {type(error).__name__}: {error_line(str(error))[:300]}", error=True)

    @staticmethod
    def _what(record: Record) -> str:
        return f"{record.kind} of {record.trial.name}" if record.trial.name else record.kind

    def _outage(self, error: BaseException) -> None:
        if self.outage_since is None:
            self.outage_since = time.time()
            say(f"MLflow at {self.tracking_uri} unreachable ({error_line(str(error))[:200]}); "
                f"the search goes on and its records wait (up to {outage_limit_s():.0f} s)",
                error=True)

    def _check_outage(self) -> None:
        """Stops the search (from a Tune step, where an exception ends fit()) once MLflow
        refused its credentials, or has been unreachable for longer than the limit."""
        if self.refused is not None:
            self.gave_up = True
            raise TrackingRefused(
                f"MLflow at {self.tracking_uri} refused the search's credentials "
                f"({self.refused}); the search stopped with {len(self.pending)} records not "
                "yet logged, kept in its Ray state. Once the credentials or permissions are "
                "fixed ($MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD, the user's "
                "permissions, S3's credentials), run the same search command with --restore "
                "to resume it and log them.")
        if self.outage_since is None:
            return
        away = time.time() - self.outage_since
        if away <= outage_limit_s():
            return
        self.gave_up = True
        raise TrackingUnavailable(
            f"MLflow at {self.tracking_uri} unreachable for {away:.0f} s (limit "
            f"{outage_limit_s():.0f} s, ${OUTAGE_LIMIT_ENV}); the search stopped with "
            f"{len(self.pending)} records not yet logged, kept in its Ray state. When MLflow "
            "is back, run the same search command with --restore to resume it and log them.")

    def _recovered(self) -> None:
        assert self.outage_since is not None
        say(f"MLflow reachable again after {time.time() - self.outage_since:.0f} s; "
            f"{len(self.pending)} records still to log", error=True)
        self.outage_since = None

    def _write(self, record: Record) -> None:
        if record.kind == "orphans":
            self._retire_orphans(record.data["known"])
            return
        run_id = self._run_for(record.trial)
        client = self.client
        if record.kind == "result":
            self._log_result(client, run_id, record.trial.trial_id, record.data)
        elif record.kind == "close":
            self._close(client, run_id, record.data)
        elif record.kind == "reason":
            client.set_tag(run_id, schema.FAILURE_REASON, record.data["reason"])

    def _log_result(self, client: MlflowClient, run_id: str, trial_id: str,
                    data: dict[str, Any]) -> None:
        """An epoch already logged (a trial that lost its worker repeats the epochs after its
        last checkpoint) is skipped: each step of a run's history is one evaluation."""
        if data["node_id"] and trial_id not in self.placed:
            client.set_tag(run_id, schema.RAY_NODE_ID, data["node_id"])
            self.placed.add(trial_id)
        if data["step"] <= self.steps.get(run_id, -1):
            return
        client.log_batch(run_id, metrics=[Metric(k, v, data["timestamp"], data["step"])
                                          for k, v in data["metrics"].items()])
        self.steps[run_id] = data["step"]

    def _retire_orphans(self, known: set[str]) -> None:
        """Child runs that a killed driver made for trials Ray had not saved yet: the restored
        search spent their budget on new trials, so unfinished ones are deleted (MLflow keeps
        them restorable) and finished ones, real results, are only tagged. Only runs of this
        Tune run: the trials of earlier rounds (--more-trials), which this Tune run does not
        know, stay as they ended."""
        client = self.client
        mine = f" and tags.`{schema.TUNE_RUN}` = '{self.tune_run}'" if self.tune_run else ""
        children = client.search_runs([self.experiment_id],
                                      f"tags.`{schema.PARENT}` = '{self.parent_run_id}'" + mine,
                                      max_results=10_000)
        for run in children:
            trial_id = run.data.tags.get(schema.RAY_TRIAL_ID)
            if trial_id is None or trial_id in known:
                continue
            client.set_tag(run.info.run_id, schema.ORPHANED,
                           "the driver died before Ray saved this trial")
            if run.info.status != "FINISHED":
                client.set_terminated(run.info.run_id, "KILLED")
                client.delete_run(run.info.run_id)

    def _close(self, client: MlflowClient, run_id: str, data: dict[str, Any]) -> None:
        error: str | None = data["error"]
        checkpoint: Checkpoint | None = data["checkpoint"]
        if error is not None:
            client.set_tag(run_id, schema.FAILURE_REASON, error_line(error))
        if checkpoint is not None:
            with checkpoint.as_directory() as saved:
                self._log_selection(client, run_id, Path(saved), data["stamp"])
        status = RunStatus.to_string(RunStatus.FAILED if error else RunStatus.FINISHED)
        client.set_terminated(run_id, status)

    def _log_selection(self, client: MlflowClient, run_id: str, saved: Path,
                       stamp: int) -> None:
        summary_path = saved / schema.METRICS_JSON
        if not summary_path.exists():
            return
        summary = json.loads(summary_path.read_text())
        selected = summary.get("metrics") or {}
        client.set_tag(run_id, schema.SELECTED_ON, summary["selected_on"])
        if summary.get("selected_epoch") is not None:
            client.set_tag(run_id, schema.SELECTED_EPOCH, str(summary["selected_epoch"]))
        for key in schema.CHOICES:
            client.set_tag(run_id, schema.selected(key), str(selected.get(key)))
        client.log_batch(run_id, metrics=[
            Metric(schema.selected_metric(key), float(value), stamp, 0)
            for key, value in selected.items() if key in _METRICS and value is not None])
        for name in ARTIFACTS:
            if (saved / name).exists():
                client.log_artifact(run_id, str(saved / name),
                                    schema.CHECKPOINT_FOLDER if name.endswith(".pt") else None)


@dataclass(frozen=True)
class TrialInfo:
    """What a record needs of its trial to find or make its run (picklable, unlike a Trial)."""

    trial_id: str
    config: dict[str, Any]
    name: str


@dataclass
class Record:
    """One queued write: start (make or find the run), result (one epoch), close, reason (a
    failed trial's error), orphans (retire runs Ray does not know)."""

    kind: str
    trial: TrialInfo
    data: dict[str, Any] = field(default_factory=dict)


_METRICS = set(schema.TRIAL_METRICS)
_EPOCH_METRIC = schema.per_epoch("epoch")  # logged at every evaluation: a run's last step
