"""What a user sees of a search: `search.py`'s console, then the MLflow UI in a real browser.

One small search (`search.py --config`, cam on the tiny backbone, two one-epoch trials) makes
a store; `mlflow server` serves it and headless Chromium renders the pages the search's links
lead to (the UI is a JavaScript app: only a browser shows what a user gets). The browser tests
skip where no Chromium is installed (`apt-get install chromium`).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import mlflow_server
from small_search import small_experiment

pytestmark = pytest.mark.e2e  # starts a search.py search (Ray), `mlflow server` and Chromium
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") \
    or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium): the MLflow UI "
    "is a JavaScript app and is only checked in a real browser")
GENAI_ONLY = ("Judges", "Prompts & versions", "Evaluation runs", "Agent versions")


@dataclass
class Searched:
    work: Path
    uri: str
    out: str
    log: Path


@pytest.fixture(scope="module")
def searched(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Searched:
    work = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    config = work / "ui.yaml"
    config.write_text(yaml.safe_dump(small_experiment(
        "ui-demo", tiny_synth, work, trials_per_pair=2, max_concurrent=2, tracking_uri=uri)))
    # Its own local Ray, whatever Ray instance this test process may have started.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(REPO / "search.py"), "--config", str(config)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return Searched(work, uri, out, work / "ray" / "ui-demo" / "search.log")


def test_console_shows_the_search_and_ray_goes_to_the_log(searched: Searched) -> None:
    out = searched.out
    assert f"Ray, Tune and trial output: {searched.log}" in out
    for name in ("cam/tiny #01", "cam/tiny #02"):
        assert re.search(rf"^{name} finished: train-fullsup MaxBoxAccV2 [\d.]+ \(epoch 1, ",
                         out, re.M), out
    elapsed = r"^\[(?:\d+m)?\d+s\] "  # [42s] or, on a slow machine, [1m08s]
    assert re.search(elapsed + r"2/2 trials done \(0 stopped early, 0 failed\)", out, re.M), out
    assert "2 trials, 0 failed" in out
    for noise in ("Checkpoint successfully created", "snapshotting", "Trial status",
                  "search_trial_", "Started a local Ray instance", "A new study created"):
        assert noise not in out, noise
    assert len(out.splitlines()) <= 25, out
    log = searched.log.read_text()
    assert "Started a local Ray instance" in log
    assert log.count("Checkpoint successfully created") == 2
    # Two trials checkpointing together made Tune force back-to-back state snapshots while it
    # kept one checkpoint per trial; it keeps three now.
    assert "snapshotting has been triggered" not in log


@dataclass
class Server:
    url: str
    profile: Path


@pytest.fixture(scope="module")
def mlflow_ui(searched: Searched) -> Iterator[Server]:
    """`mlflow server` on the search's SQLite store (its artifacts are files beside it)."""
    with mlflow_server(searched.work) as url:
        yield Server(url, searched.work / "chromium")


def page(server: Server, link: str, expected: tuple[str, ...]) -> tuple[str, str]:
    """The page's HTML after Chromium ran its scripts, and its visible text; loaded again
    (up to three times) while an expected text is still missing, as a slow machine may
    render late."""
    for _ in range(3):
        done = subprocess.run(
            [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox",
             f"--user-data-dir={server.profile}", "--virtual-time-budget=15000",
             "--dump-dom", f"{server.url}/{link}"],
            capture_output=True, text=True, timeout=180)
        dom = done.stdout
        body = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
        text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))
        if all(e in text for e in expected):
            break
    return dom, text


def printed_link(out: str, label: str) -> str:
    """The MLflow UI link search.py printed, without `mlflow ui`'s default address."""
    found = re.search(rf"{re.escape(label)}\s+http://127\.0\.0\.1:5000/(#/\S+)", out)
    assert found, out
    return found.group(1)


@needs_browser
def test_runs_table_shows_the_trials_by_name(searched: Searched, mlflow_ui: Server) -> None:
    link = printed_link(searched.out, "then the search's runs:")
    _, text = page(mlflow_ui, link, ("cam/tiny #01", "cam/tiny #02"))
    assert "cam/tiny #01" in text and "cam/tiny #02" in text, text[:3000]
    assert "search ui-demo" in text  # the parent run, sorted after its trials
    assert "Sort: selected/score" in text
    assert "Model registry" in text  # the model-training view, not the GenAI one
    for genai in GENAI_ONLY:
        assert genai not in text, genai


@needs_browser
def test_artifact_pages_show_the_summary_and_the_trial_files(searched: Searched,
                                                             mlflow_ui: Server) -> None:
    client = MlflowClient(searched.uri)
    experiment = client.get_experiment_by_name("ui-demo").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags["wsol.kind"] == "search")
    trial = next(r for r in runs if r.info.run_name == "cam/tiny #01")
    query = "?workflowType=machine_learning"

    link = f"#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts/summary.md{query}"
    dom, text = page(mlflow_ui, link, ("summary.json", "Best train-fullsup score"))
    for name in ("experiment.json", "search_spaces", "summary.json", "summary.md"):
        assert name in text, text[:3000]
    assert "Search ui-demo: FINISHED" in text and "2 trials, 0 failed" in text
    # The rendered table links the best trial's run page.
    best = max((r for r in runs if r.data.tags["wsol.kind"] == "trial"),
               key=lambda r: r.data.metrics["selected/score"])
    link = re.search(r'<a [^>]*href="#/experiments/\d+/runs/(\w+)\?[^"]*"[^>]*>'
                     r"(cam/tiny #0\d)</a>", dom)
    assert link, text[:3000]
    assert link.groups() == (best.info.run_id, best.info.run_name)
    for genai in GENAI_ONLY:
        assert genai not in text, genai

    link = f"#/experiments/{experiment}/runs/{trial.info.run_id}/artifacts{query}"
    _, text = page(mlflow_ui, link, ("cam/tiny #01", "overlays.png"))
    assert "cam/tiny #01" in text
    for name in ("checkpoint", "curves.json", "curves.png", "metrics.json", "overlays.png"):
        assert name in text, text[:3000]
