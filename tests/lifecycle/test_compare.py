"""`wsol compare` end to end on the tiny preset (local Ray, MLflow on SQLite): two seeded
searches, each pair's best trial of each search promoted under its own alias and read once on
test, and `wsol report --compare` whose intervals are recomputed here from the evaluation runs.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats
from small_search import small_experiment

from wsol.cli import main as wsol
from wsol.lifecycle.promote import rank
from wsol.methods import baseline_method

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
BASE_SEED = 5


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def kind(client: MlflowClient, name: str, **tags: str) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    clauses = [f"tags.`wsol.kind` = '{name}'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    return client.search_runs(ids, " and ".join(clauses), max_results=1000)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.e2e
def test_compare_searches_promotes_evaluates_once_and_reports(
        tiny_synth: Path, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # the SQLite store puts artifacts under ./mlruns/artifacts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(small_experiment(
        "cmp", tiny_synth, tmp_path, trial={"epochs": 2}, methods=["cam", "bgc"],
        trials_per_pair=2, max_concurrent=2, seed=BASE_SEED,
        method_params={"bgc": {"warm": 0}})))
    out = tmp_path / "compare.json"
    assert wsol(["compare", "--config", str(config), "--search-seeds", "2",
                 "--tracking-uri", uri, "--device", "cpu", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    compare_id = summary["compare_id"]
    assert {"MaxBoxAccV2", "minmax_MaxBoxAccV2", "PxAP", "minmax_PxAP"} <= \
        set(summary["seeds"][0]["pairs"]["cam/tiny"]["test"])
    seeds = [BASE_SEED, BASE_SEED + 1]
    client = MlflowClient(uri)

    # one search per seed, each its own parent run in its own MLflow experiment
    searches = kind(client, "search", **{"wsol.compare_id": compare_id})
    assert sorted(int(r.data.tags["wsol.compare_seed"]) for r in searches) == seeds
    parent_of_seed = {int(r.data.tags["wsol.compare_seed"]): r for r in searches}
    for seed, parent in parent_of_seed.items():
        assert client.get_experiment(parent.info.experiment_id).name == f"cmp-seed{seed}"
        assert parent.data.params["seed"] == str(seed)
    trials = kind(client, "trial")
    assert len(trials) == 8 and all(t.info.status == "FINISHED" for t in trials)

    # per seed and pair: the best trial of THAT search, its own version under its own alias
    versions = {}
    for method in ("cam", "bgc"):
        name = f"wsol-synthetic-{method}-tiny"
        for seed in seeds:
            version = client.get_model_version_by_alias(name, f"compare-{compare_id}-seed{seed}")
            parent = parent_of_seed[seed].info.run_id
            own = [t for t in trials if t.data.tags["mlflow.parentRunId"] == parent
                   and t.data.tags["wsol.method"] == method]
            assert len(own) == 2 and version.run_id == max(own, key=rank).info.run_id
            assert version.tags["wsol.compare_id"] == compare_id
            assert version.tags["wsol.test_evaluations"] == "1"  # test read exactly once
            versions[(method, seed)] = str(version.version)
        assert len({versions[(method, s)] for s in seeds}) == 2  # no seed's model lost

    # exactly one evaluation per promoted model and seed, and nothing else read test
    evaluations = kind(client, "evaluation")
    assert len(evaluations) == 4
    per_seed: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in evaluations:
        tags = run.data.tags
        method, seed = tags["wsol.method"], int(tags["wsol.compare_seed"])
        assert tags["wsol.compare_id"] == compare_id
        assert tags["wsol.model_version"] == versions[(method, seed)]
        for metric in ("MaxBoxAccV2", "PxAP"):
            per_seed[metric][method][seed] = run.data.metrics[f"test/{metric}"]
            assert f"test/minmax_{metric}" in run.data.metrics  # the papers' reading too
    assert {len(v) for m in per_seed.values() for v in m.values()} == {2}

    report = tmp_path / "report"
    assert wsol(["report", "--compare", compare_id, "--out", str(report), "--tracking-uri",
                 uri, "--no-log"]) == 0
    rows = read_csv(report / "compare.csv")
    assert {(r["method"], r["metric"]) for r in rows} == {
        (m, f"{k} (test)") for m in ("cam", "bgc") for k in ("MaxBoxAccV2", "PxAP")}
    for row in rows:
        metric = row["metric"].split()[0]
        mine, cam = per_seed[metric][row["method"]], per_seed[metric]["cam"]
        values = [mine[s] for s in seeds]
        assert row["n (seeds)"] == "2"
        assert row["test mean ± std"] == \
            f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
        if row["method"] == "cam":
            assert row["verdict"] == "baseline"
            continue
        diffs = [mine[s] - cam[s] for s in seeds]  # paired by seed
        mean = statistics.fmean(diffs)
        half = stats.t.ppf(0.975, 1) * statistics.stdev(diffs) / math.sqrt(2)
        assert row[f"test vs {baseline_method()}"] == f"{mean:+.2f}"
        assert row["95% interval"] == f"[{mean - half:+.2f}, {mean + half:+.2f}]"
        assert row["interval"].startswith("paired t, df 1")
        expected = "better" if mean - half > 0 else "worse" if mean + half < 0 \
            else "within noise"
        assert row["verdict"] == expected

    selected = read_csv(report / "selected.csv")
    assert sorted((r["method"], int(r["seed"])) for r in selected) == sorted(versions)
    for row in selected:
        trial = client.get_run(client.get_model_version(
            f"wsol-synthetic-{row['method']}-tiny", versions[(row["method"],
                                                              int(row["seed"]))]).run_id)
        assert float(row["lr"]) == pytest.approx(float(trial.data.params["lr"]), rel=1e-3)
        assert row["normalisation"] == trial.data.tags["wsol.selected_normalisation"]
        assert row["selected epoch (1-based)"] == \
            str(int(trial.data.tags["wsol.selected_epoch"]) + 1)
    assert read_csv(report / "importance.csv")
    text = (report / "report.md").read_text()
    assert f"Compare {compare_id}: test over search seeds" in text
    assert "scores-synthetic-tiny.png" in {p.name for p in report.iterdir()}
    assert "fANOVA" in text

    # the plain report finds the latest compare by itself; the report reads no test split
    plain = tmp_path / "plain"
    assert wsol(["report", "--out", str(plain), "--tracking-uri", uri, "--no-log"]) == 0
    assert f"Compare {compare_id}" in (plain / "report.md").read_text()
    assert len(kind(client, "evaluation")) == 4


def test_intervals_paired_welch_and_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsol.lifecycle import intervals

    paired = intervals.difference({0: 40.0, 1: 42.0, 2: 45.0}, {0: 35.0, 1: 36.0, 2: 41.0})
    diffs = [5.0, 6.0, 4.0]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3)
    assert paired.kind == "paired t" and paired.df == 2
    assert (paired.low, paired.high) == pytest.approx((5.0 - half, 5.0 + half))
    assert paired.verdict == "better"
    welch = intervals.difference({0: 40.0, 1: 42.0, 3: 41.0}, {0: 35.0, 1: 46.0})
    assert welch.kind == "Welch t" and welch.verdict == "within noise"
    assert intervals.difference({0: 30.0}, {0: 35.0}).verdict == "n too small"
    assert intervals.difference({0: 30.0, 1: 31.0}, {0: 40.0, 1: 40.5}).verdict == "worse"

    monkeypatch.setitem(sys.modules, "scipy", None)  # as if not installed
    for df in (1, 2, 5, 10, 30):
        value, source = intervals.t_quantile(df)
        assert source == "table" and value == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    assert intervals.t_quantile(2.7)[0] == intervals.T_975[2]  # the wider neighbour
