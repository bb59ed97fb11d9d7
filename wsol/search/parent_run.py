"""The search's MLflow parent run, from start to end, and the record on the search's Ray
storage that lets `--restore` and `--more-trials` find it again.

A user browses the parent run beside its trials: it ends with the search (FINISHED / FAILED
/ KILLED), holding the best score per pair as metrics and the summary table as an artifact.
Only values from the experiment config are logged, never the environment (credentials).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema
from wsol.common.console import error_line, say
from wsol.common.durable import write_bytes_atomic
from wsol.common.protocol import SELECTION_SPLIT
from wsol.common.tracking_store import ensure_experiment, flat_params, open_store, ui_link

# In the record on storage: the Tune run of the search's latest --more-trials continuation.
CONTINUED_KEY = "continued"


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        from wsol import __version__

        return f"wsol {__version__}"


def start_search_run(tracking_uri: str, experiment: dict[str, Any], spaces: dict[str, Path],
                     fingerprint: str) -> tuple[str, str]:
    """Creates the parent run; returns (experiment id, run id)."""
    client = open_store(tracking_uri)
    if tracking_uri.startswith("sqlite:"):
        _note_other_writers(client)
    experiment_id = ensure_experiment(client, experiment["name"], tracking_uri)
    run = client.create_run(experiment_id, run_name=f"search {experiment['name']}", tags={
        schema.KIND: schema.SEARCH, schema.DATASET: experiment["dataset"],
        schema.CODE_VERSION: code_version(), schema.DATASET_FINGERPRINT: fingerprint,
        schema.SELECTION_SPLIT: SELECTION_SPLIT,
    })
    run_id = run.info.run_id
    for key, value in flat_params(experiment).items():
        client.log_param(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / schema.EXPERIMENT_JSON).write_text(json.dumps(experiment, indent=2))
        client.log_artifact(run_id, str(Path(tmp) / schema.EXPERIMENT_JSON))
        for path in spaces.values():
            client.log_artifact(run_id, str(path), schema.SPACES_FOLDER)
    return experiment_id, run_id


def _note_other_writers(client: MlflowClient) -> None:
    """Says up front when another search is writing to the same SQLite file: SQLite takes
    one writer at a time, so both searches wait on each other's writes (retried here when
    the file is locked); a shared `mlflow server` is the store made for that."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(
        experiments, f"tags.`{schema.KIND}` = '{schema.SEARCH}' and attributes.status = "
        "'RUNNING'", max_results=5) if experiments else []
    if running:
        names = ", ".join(r.info.run_name or r.info.run_id for r in running)
        say(f"note: another search ({names}) is writing to this SQLite store: SQLite takes one "
            "writer at a time (this search retries when the file is locked); for searches at "
            "once, share one `mlflow server` instead (manual: docs/cluster/team.md)", error=True)


def reopen_search_run(tracking_uri: str, run_id: str) -> None:
    """A restored search runs again: its parent run too, until it ends."""
    client = MlflowClient(tracking_uri)
    client.update_run(run_id, RunStatus.to_string(RunStatus.RUNNING))
    if schema.END_REASON in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, schema.END_REASON)


def end_search_run(tracking_uri: str, run_id: str, status: str,
                   summary: dict[str, Any] | None = None, reason: str | None = None) -> None:
    """Closes the parent run with the search: the best train-fullsup score per pair as
    metrics `best/<method>/<backbone>`, the summary as summary.md / summary.json, the status
    (FINISHED, FAILED or KILLED) and, if it did not finish, why."""
    client = MlflowClient(tracking_uri)
    if reason:
        client.set_tag(run_id, schema.END_REASON, error_line(reason))
    if summary is not None:
        now = int(time.time() * 1000)
        metrics = [Metric(schema.best_metric(pair), float(best["score"]), now, 0)
                   for pair, best in sorted(summary["best"].items())]
        metrics += [Metric(name, float(summary[key]), now, 0)
                    for name, key in ((schema.TRIALS, "trials"), (schema.TRIALS_FAILED, "failed"))]
        client.log_batch(run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / schema.SUMMARY_JSON).write_text(json.dumps(summary, indent=2,
                                                                    default=str))
            (Path(tmp) / schema.SUMMARY_MD).write_text(summary_markdown(summary, status))
            client.log_artifact(run_id, str(Path(tmp) / schema.SUMMARY_JSON))
            client.log_artifact(run_id, str(Path(tmp) / schema.SUMMARY_MD))
    client.set_terminated(run_id, status)


@contextlib.contextmanager
def ended_on_error(tracking_uri: str, run_id: str) -> Iterator[None]:
    """A search that raises ends its parent run: KILLED for a Ctrl+C, else FAILED, with the
    error as the reason. The search's own error is the one the user sees."""
    try:
        yield
    except BaseException as error:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            end_search_run(tracking_uri, run_id, status,
                           reason=f"{type(error).__name__}: {error}")
        raise


def summary_markdown(summary: dict[str, Any], status: str) -> str:
    """The search's result table as MLflow's artifact viewer renders it (links stay in the
    UI)."""
    experiment_id = summary.get("experiment_id", "")
    lines = [f"# Search {summary.get('name', '')}: {status}", "",
             f"{summary['trials']} trials, {summary['failed']} failed. Best train-fullsup "
             "score per (method, backbone):", "",
             "| method/backbone | best score | trial | trials (finished / stopped early / "
             "failed) |", "|---|---:|---|---|"]
    pairs = summary.get("pairs", {})
    for pair in sorted(set(pairs) | set(summary["best"])):
        counts = pairs.get(pair, {})
        done = (f"{counts.get('finished', 0)} / {counts.get('stopped', 0)} / "
                f"{counts.get('failed', 0)}")
        best = summary["best"].get(pair)
        if best is None:
            lines.append(f"| {pair} | - | - | {done} |")
            continue
        name = best.get("run_name") or best.get("run_id") or "?"
        trial = f"[{name}]({ui_link(experiment_id, best['run_id'])})" if best.get("run_id") \
            else name
        lines.append(f"| {pair} | {best['score']:.2f} | {trial} | {done} |")
    return "\n".join(lines) + "\n"


def _record_path(experiment_dir: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in experiment_dir:
        fs, path = pyarrow.fs.FileSystem.from_uri(experiment_dir)
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), experiment_dir
    return fs, path


def write_record(experiment_dir: str, experiment_id: str, run_id: str, **record: str) -> None:
    """Where a restored search finds its MLflow parent run (and, once continued, the Tune run
    of its latest continuation). On a local disk it is written aside, fsync'd and renamed
    (wsol.common.durable): a crash never leaves a truncated record that fails --restore; an
    object store's put is whole already."""
    fs, path = _record_path(experiment_dir)
    fs.create_dir(path, recursive=True)
    data = json.dumps({"experiment_id": experiment_id, "run_id": run_id, **record}).encode()
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        write_bytes_atomic(f"{path}/wsol_parent_run.json", data)
        return
    with fs.open_output_stream(f"{path}/wsol_parent_run.json") as out:
        out.write(data)


def read_record(experiment_dir: str) -> dict[str, str]:
    fs, path = _record_path(experiment_dir)
    with fs.open_input_stream(f"{path}/wsol_parent_run.json") as handle:
        return json.loads(handle.read().decode())
