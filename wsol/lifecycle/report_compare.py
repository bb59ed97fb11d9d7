"""The compare section of `wsol report`: does method X beat the baseline here (CAM, or whichever
method registers as baseline: wsol.methods.baseline_method), and by more than noise?

From the evaluation runs one `wsol compare` tagged (one per search seed and pair, the first
and only reading of test for that model): per method and backbone the test numbers as
mean +- std over the search seeds, the difference to the baseline on the same backbone with its 95%
interval (wsol.lifecycle.intervals) and a verdict; and the selected hyperparameters of every
promoted model, a table a paper can cite.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema
from wsol.lifecycle import runs
from wsol.lifecycle.intervals import Interval, difference, spread
from wsol.methods import baseline_method, method_rank

# Trial params that are the search's candidates for post-hoc choices, not hyperparameters.
NOT_HYPERPARAMETERS = {"pair", "normalisations", "ivr_percentiles", "pas_percentile"}


@dataclass(frozen=True)
class SeedModel:
    """One search seed's promoted model of a pair: its trial and its test evaluation."""

    pair: runs.Pair
    seed: int
    trial: Run
    evaluation: Run

    def test(self, metric: str) -> float | None:
        return self.evaluation.data.metrics.get(schema.test_metric(metric))

    def train_fullsup(self, metric: str) -> float | None:
        return self.trial.data.metrics.get(schema.selected_metric(metric))


def compare_searches(client: MlflowClient, ids: list[str]) -> dict[str, list[Run]]:
    """compare id -> its search parent runs."""
    found: dict[str, list[Run]] = defaultdict(list)
    for run in runs.search(client, ids, schema.SEARCH):
        compare = run.data.tags.get(schema.COMPARE_ID)
        if compare:
            found[compare].append(run)
    return found


def resolve_compare(client: MlflowClient, ids: list[str], wanted: str) -> tuple[str, list[str]]:
    """(compare id, its search parent run ids) for an id or 'latest'."""
    found = compare_searches(client, ids)
    if not found:
        raise ValueError("no compare found in MLflow (run `wsol compare` first)")
    if wanted == "latest":
        wanted = max(found, key=lambda c: max(r.info.start_time for r in found[c]))
    if wanted not in found:
        raise ValueError(f"no compare {wanted!r}; known: {', '.join(sorted(found))}")
    return wanted, [r.info.run_id for r in found[wanted]]


def latest_compare_of(client: MlflowClient, parent_ids: set[str]) -> str | None:
    """The most recent compare among these searches, if any of them belongs to one."""
    parents = [client.get_run(p) for p in parent_ids if p]
    tagged = [r for r in parents if r.data.tags.get(schema.COMPARE_ID)]
    if not tagged:
        return None
    return max(tagged, key=lambda r: r.info.start_time).data.tags[schema.COMPARE_ID]


def seed_models(client: MlflowClient, ids: list[str], compare_id: str) -> list[SeedModel]:
    """Per pair and seed the compare's evaluation (the earliest, should there be more)."""
    first: dict[tuple[runs.Pair, int], Run] = {}
    for run in runs.search(client, ids, schema.EVALUATION, tags={schema.COMPARE_ID: compare_id}):
        key = (runs.pair_of(run), int(run.data.tags[schema.COMPARE_SEED]))
        if key not in first or run.info.start_time < first[key].info.start_time:
            first[key] = run
    return [SeedModel(pair, seed, client.get_run(run.data.tags[schema.TRIAL_RUN_ID]), run)
            for (pair, seed), run in sorted(first.items(), key=lambda item: _order(*item[0]))]


def _order(pair: runs.Pair, seed: int = 0) -> tuple:
    return (pair.dataset, pair.backbone, *method_rank(pair.method), seed)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    s = spread(values)
    return f"{s.mean:.2f} ± {s.std:.2f}" if s.std is not None else f"{s.mean:.2f}"


def _interval_text(interval: Interval) -> tuple[str, str]:
    if interval.low is None or interval.high is None:
        return "", interval.kind
    how = f"{interval.kind}, df {interval.df:.3g}, t from {interval.quantile_source}"
    return f"[{interval.low:+.2f}, {interval.high:+.2f}]", how


def verdict_table(models: list[SeedModel], metrics: tuple[str, ...]
                  ) -> tuple[list[str], list[list[str]]]:
    """One row per dataset, backbone, method and test metric."""
    baseline_name = baseline_method()
    header = ["dataset", "backbone", "method", "metric", "n (seeds)", "test per seed",
              "test mean ± std", "train-fullsup mean ± std", f"test vs {baseline_name}",
              "95% interval", "interval", "verdict"]
    by_pair: dict[runs.Pair, list[SeedModel]] = defaultdict(list)
    for model in models:
        by_pair[model.pair].append(model)
    rows = []
    for pair in sorted(by_pair, key=_order):
        members = by_pair[pair]
        baseline = by_pair.get(runs.Pair(pair.dataset, baseline_name, pair.backbone), [])
        for metric in metrics:
            per_seed = {m.seed: v for m in members if (v := m.test(metric)) is not None}
            if not per_seed:
                continue
            train = [v for m in members if (v := m.train_fullsup(metric)) is not None]
            row = [pair.dataset, pair.backbone, pair.method, f"{metric} (test)",
                   str(len(per_seed)),
                   ", ".join(f"{seed}: {value:.2f}" for seed, value in sorted(per_seed.items())),
                   _mean_std(list(per_seed.values())), _mean_std(train)]
            base = {m.seed: v for m in baseline if (v := m.test(metric)) is not None}
            interval = None if pair.method == baseline_name else difference(per_seed, base)
            if pair.method == baseline_name:
                row += ["", "", "", "baseline"]
            elif interval is None:
                row += ["", "", "", f"no {baseline_name}"]
            else:
                bounds, how = _interval_text(interval)
                row += [f"{interval.estimate:+.2f}", bounds, how, interval.verdict]
            rows.append(row)
    return header, rows


def _hyperparameters(run: Run) -> dict[str, str]:
    return {k: v for k, v in run.data.params.items() if k not in NOT_HYPERPARAMETERS}


def selected_table(models: list[SeedModel]) -> tuple[list[str], list[list[str]]]:
    """What each promoted model was trained and scored with: the trial's sampled (and the
    space's fixed) values, the post-hoc choices train-fullsup made, the registered version."""
    names = sorted({k for m in models for k in _hyperparameters(m.trial)},
                   key=lambda k: (k not in ("lr", "weight_decay"), k))
    header = ["dataset", "method", "backbone", "seed", *names, "normalisation", "percentile",
              "threshold", "selected epoch (1-based)", "train-fullsup score", "model version"]
    rows = []
    for m in models:
        tags, values = m.trial.data.tags, _hyperparameters(m.trial)
        epoch = tags.get(schema.SELECTED_EPOCH)
        percentile = tags.get(schema.selected("percentile"), "")
        rows.append([m.pair.dataset, m.pair.method, m.pair.backbone, str(m.seed),
                     *(_short(values.get(k, "")) for k in names),
                     tags.get(schema.selected("normalisation"), ""),
                     "" if percentile == "None" else percentile,
                     _short(tags.get(schema.selected("threshold"), "")),
                     "" if epoch is None else str(int(epoch) + 1),
                     _fmt(m.trial.data.metrics.get(schema.SCORE)),
                     f"{m.evaluation.data.tags.get(schema.MODEL_NAME, '')}/"
                     f"{m.evaluation.data.tags.get(schema.MODEL_VERSION, '')}"])
    return header, rows


def _short(text: str) -> str:
    """Sampled floats to 4 significant digits (5.123456789e-03 -> 0.005123)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text else f"{value:.4g}"


def interval_note(models: list[SeedModel]) -> str:
    seeds = sorted({m.seed for m in models})
    baseline = baseline_method()
    return (f"Search seeds {', '.join(map(str, seeds))}: one independent search each at the "
            "same budget per pair; per seed and pair the best train-fullsup trial was promoted "
            "and test read once. mean ± std: sample standard deviation over the seeds. "
            f"vs {baseline}: method minus {baseline} (the baseline method) on the same "
            "backbone. 95% interval: Student's t "
            "interval of the per-seed differences (paired by seed when both have the same "
            "seeds; otherwise Welch's unpaired interval); verdict: better / worse when it "
            "excludes 0, within noise when it contains 0, n too small below 2 seeds.")
