"""The tracking schema (wsol.common.tracking_schema) is all there is: every key that a
search, its trials, a promotion, a test evaluation, a compare and a report leave in MLflow is
declared there; no `wsol.` name is spelt elsewhere in the package; and the queries of
docs/tracking-schema.md run against a real store and find what they say."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from small_search import small_experiment

import wsol
from wsol.common import tracking_schema as schema
from wsol.lifecycle.compare import run_compare
from wsol.lifecycle.evaluate import evaluate_model
from wsol.lifecycle.promote import promote, rank
from wsol.lifecycle.report import build_report
from wsol.search.experiment import experiment_from_dict

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(wsol.__file__).parent
DOC = REPO / "docs" / "tracking-schema.md"


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_no_wsol_name_is_spelt_outside_the_schema() -> None:
    """String literals (docstrings aside) name no `wsol.` key: only module paths pass."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(schema.__file__):
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) \
                    or id(node) in skip:
                continue
            for name in re.findall(r"(?<![\w/-])wsol\.[\w.]*", node.value):
                if not _is_module(name.rstrip(".")):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_every_declared_key_is_documented() -> None:
    text = DOC.read_text()
    missing = [f"{kind}: {key.name}" for kind, record in schema.SCHEMA.items()
               for part in ("tags", "params", "metrics", "artifacts")
               for key in getattr(record, part) if f"`{key.name}`" not in text]
    assert missing == []


@pytest.fixture(scope="module")
def store(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A compare of one seed (search, promotion, test evaluation), a champion promoted and
    evaluated on its own, and a logged report: every kind of record, in one SQLite store."""
    tmp = tmp_path_factory.mktemp("schema")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    experiment = experiment_from_dict(small_experiment(
        "schema", tiny_synth, tmp, trials_per_pair=2, max_concurrent=2, tracking_uri=uri))
    ray.init(num_cpus=2, include_dashboard=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # the SQLite store puts artifacts under ./mlruns/artifacts
        try:
            summary = run_compare(experiment, 1, device="cpu", log=lambda line: None)
        finally:
            ray.shutdown()
        client = MlflowClient(uri)
        promotion = promote(client, "cam", "tiny")
        evaluate_model(client, promotion.model_uri, device="cpu")
        build_report(client, tmp / "report")
    return {"uri": uri, "client": client, "promotion": promotion,
            "search_run_id": summary["seeds"][0]["search_run_id"]}


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


@pytest.mark.e2e
def test_every_key_in_the_store_is_declared(store: dict[str, Any]) -> None:
    client: MlflowClient = store["client"]
    undeclared = []
    kinds = set()
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        record = schema.SCHEMA["experiment"]
        undeclared += [f"experiment {experiment.name}: tag {k}"
                       for k in record.undeclared("tags", experiment.tags)]
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL):
            kind = run.data.tags.get(schema.KIND)
            kinds.add(kind)
            record = schema.SCHEMA[kind]
            keys = {"tags": run.data.tags, "params": run.data.params,
                    "metrics": run.data.metrics,
                    "artifacts": _artifacts(client, run.info.run_id)}
            undeclared += [f"{kind} run: {part[:-1]} {k}" for part, values in keys.items()
                           for k in record.undeclared(part, values)]
    assert kinds == set(schema.KINDS)
    versions = client.search_model_versions()
    assert len(versions) == 1  # the champion is the compare's version under a second alias
    for version in versions:
        undeclared += [f"model version: tag {k}"
                       for k in schema.SCHEMA["model_version"].undeclared("tags", version.tags)]
    assert undeclared == []


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.e2e
def test_the_documented_queries_find_what_they_say(store: dict[str, Any]) -> None:
    client: MlflowClient = store["client"]
    namespace: dict[str, Any] = {"tracking_uri": store["uri"],
                                 "search_run_id": store["search_run_id"]}
    examples = _examples()
    assert len(examples) >= 4
    for code in examples:
        exec(compile(code, str(DOC), "exec"), namespace)
    trials = client.search_runs(
        [client.get_run(store["search_run_id"]).info.experiment_id],
        f"tags.`{schema.PARENT}` = '{store['search_run_id']}'")
    assert sorted(r.info.run_id for r in namespace["search_trials"]) == \
        sorted(r.info.run_id for r in trials)
    assert {pair: run.info.run_id for pair, run in namespace["best"].items()} == \
        {("cam", "tiny"): max(trials, key=rank).info.run_id}
    promotion = store["promotion"]
    assert namespace["trial"].info.run_id == promotion.run_id
    assert namespace["search"].info.run_id == store["search_run_id"]
    assert [r.data.tags[schema.EVALUATION_NUMBER] for r in namespace["evaluations"]] == \
        ["1", "2"]  # the compare's reading of test, then the champion's
    assert namespace["choices"]["threshold"] == \
        namespace["trial"].data.tags[schema.selected("threshold")]
