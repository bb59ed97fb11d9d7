"""What a search ended with: the best train-fullsup score per pair and how its trials ended.

It becomes the parent run's summary.json / summary.md and `wsol search`'s return value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from ray import tune

from wsol.common import tracking_schema as schema
from wsol.search.pairs import PAIR_KEY

OUTCOMES = ("trials", "finished", "stopped", "failed", "unfinished")


@dataclass
class SearchSummary:
    """Per pair the best trial and the count of each outcome: finished, stopped early (ASHA
    or the time budget), failed, or unfinished (an interrupted search: their runs stay
    RUNNING until --restore continues them)."""

    parent_run_id: str
    tracking_uri: str
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, int]] = field(default_factory=dict)
    trials: int = 0
    failed: int = 0
    unfinished: int = 0
    trial_seconds: list[float] = field(default_factory=list)
    name: str = ""
    experiment_id: str = ""
    log: str = ""
    optuna: dict[str, Any] | None = None  # the studies, once closed (wsol.search.studies)
    continued: int | None = None  # how many --more-trials rounds followed the first

    def add(self, result: tune.Result, run: Run | None, epochs: int) -> None:
        """One trial of this Tune run, with its MLflow run (None if it has none yet)."""
        pair = (result.config or {}).get(PAIR_KEY)  # None: interrupted before it started
        metrics = result.metrics or {}
        counts = self.pairs.setdefault(pair or "?", dict.fromkeys(OUTCOMES, 0))
        counts["trials"] += 1
        self.trials += 1
        if result.error is not None:
            outcome = "failed"
            self.failed += 1
        elif run is not None and run.info.status == "RUNNING":
            outcome = "unfinished"
            self.unfinished += 1
        elif int(metrics.get("epoch", -1)) + 1 < epochs:
            outcome = "stopped"
        else:
            outcome = "finished"
        counts[outcome] += 1
        if "time_total_s" in metrics:
            self.trial_seconds.append(metrics["time_total_s"])
        score = metrics.get("best_score")
        if pair is None or score is None:
            return
        if pair not in self.best or score > self.best[pair]["score"]:
            self.best[pair] = {"score": score, "run_id": run.info.run_id if run else None,
                               "run_name": run.info.run_name if run else None,
                               "config": {k: v for k, v in (result.config or {}).items()
                                          if k != PAIR_KEY}}

    def merge(self, previous: dict[str, Any]) -> None:
        """A continued search's summary covers the search it continues too (`previous`, its
        summary.json): the best per pair over both, trial counts added."""
        for pair, best in previous.get("best", {}).items():
            if pair not in self.best or best["score"] > self.best[pair]["score"]:
                self.best[pair] = best
        for pair, counts in previous.get("pairs", {}).items():
            mine = self.pairs.setdefault(pair, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value
        self.trials += previous.get("trials", 0)
        self.failed += previous.get("failed", 0)
        self.trial_seconds = previous.get("trial_seconds", []) + self.trial_seconds
        self.continued = previous.get("continued", 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """The summary.json record (keys of a step not taken are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def collect(grid: tune.ResultGrid, tracking_uri: str, experiment_id: str,
            parent_run_id: str, epochs: dict[str, int]) -> SearchSummary:
    """This Tune run's trials, each with its MLflow child run (found by its Ray trial id)."""
    client = MlflowClient(tracking_uri)
    children = {r.data.tags.get(schema.RAY_TRIAL_ID): r for r in client.search_runs(
        [experiment_id], f"tags.`{schema.PARENT}` = '{parent_run_id}'", max_results=10_000)}
    summary = SearchSummary(parent_run_id, tracking_uri)
    for index in range(len(grid)):
        result = grid[index]
        pair = (result.config or {}).get(PAIR_KEY)
        summary.add(result, children.get((result.metrics or {}).get("trial_id")),
                    epochs.get(pair, 0) if pair is not None else 0)
    return summary
