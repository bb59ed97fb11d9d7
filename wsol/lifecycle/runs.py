"""Finding a search's runs in MLflow: trial runs by pair, evaluation runs by model.

promote, evaluate, compare and report all read what the search's tracking callback wrote, by
the names wsol.common.tracking_schema declares.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema


@dataclass(frozen=True)
class Pair:
    dataset: str
    method: str
    backbone: str

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/{self.backbone}"


def pair_of(run: Run) -> Pair:
    tags = run.data.tags
    return Pair(tags.get(schema.DATASET, "?"), tags.get(schema.METHOD, "?"),
                tags.get(schema.BACKBONE, "?"))


def experiment_ids(client: MlflowClient, names: Iterable[str] | None = None) -> list[str]:
    """The named experiments (an unknown name is an error), or every active one."""
    if names:
        ids = []
        for name in names:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise ValueError(f"no MLflow experiment named {name!r}")
            ids.append(found.experiment_id)
        return ids
    return [e.experiment_id for e in client.search_experiments()]


def scope_note(client: MlflowClient, experiments: Iterable[str] | None,
               searches: Iterable[str] | None) -> str | None:
    """The line a command prints when it takes candidates from every experiment: on a shared
    server, anyone who can edit an experiment there can put runs among them."""
    if experiments or searches:
        return None
    shown = client.tracking_uri
    parts = urllib.parse.urlsplit(shown)
    if "@" in parts.netloc:  # never print a user:password@
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return (f"candidates from every experiment on {shown}: name --experiment or --search to "
            "narrow")


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"quotes are not allowed in names: {value!r}")
    return f"'{value}'"


def check_searches(client: MlflowClient, searches: Collection[str]) -> None:
    """Each id must be a search's parent run (as `search.py` prints it)."""
    for run_id in searches:
        kind = client.get_run(run_id).data.tags.get(schema.KIND)
        if kind != schema.SEARCH:
            raise ValueError(f"run {run_id} is not a search's parent run "
                             f"({schema.KIND}={kind!r})")


def search(client: MlflowClient, ids: list[str], kind: str,
           searches: Collection[str] | None = None,
           tags: Mapping[str, str | None] | None = None) -> list[Run]:
    """Every run of a kind (schema.KINDS) with the given tag values (None: any); trial runs
    only from the given searches (parent run ids), if any."""
    if not ids:
        return []
    clauses = [f"tags.`{schema.KIND}` = {_quote(kind)}"]
    clauses += [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items() if v is not None]
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(ids, " and ".join(clauses), max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if searches:
        runs = [r for r in runs if r.data.tags.get(schema.PARENT) in searches]
    return runs


def parent_of(client: MlflowClient, run: Run) -> Run | None:
    parent_id = run.data.tags.get(schema.PARENT)
    return client.get_run(parent_id) if parent_id else None
