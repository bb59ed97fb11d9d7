"""Getting started's walkthrough, run as a newcomer runs it: its commands in order, in an empty
folder holding only the venv (as `.venv`), `search.py` and the experiment files, on the synthetic
smoke benchmark; then what they leave: a promoted model, its test numbers, the report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from manual_blocks import REPO, WALKTHROUGH, blocks

pytestmark = pytest.mark.e2e  # the search starts a local Ray instance


def test_the_walkthrough_runs_from_search_to_report(tmp_path: Path) -> None:
    script = "\n".join(block.text for block in blocks(WALKTHROUGH) if block.is_run)
    for step in ("search.py", "wsol promote", "wsol evaluate", "wsol report"):
        assert step in script, f"the walkthrough has no {step}"
    (tmp_path / ".venv").symlink_to(sys.prefix)
    (tmp_path / "search.py").symlink_to(REPO / "search.py")
    # A copy, so that the smoke experiment's data (../data/, relative to the file) lands here.
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    # As on a newcomer's machine: the default tracking store, and a Ray instance of the
    # search's own (RAY_ADDRESS=local), never a cluster another program started here, which
    # ray.init() without an address would join.
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                               "PYTHONPATH")},
           "RAY_ADDRESS": "local"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          text=True, capture_output=True, timeout=840, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    promoted = json.loads((tmp_path / "promote-cam.json").read_text())
    assert promoted["model_uri"] == "models:/wsol-synthetic-cam-tiny@champion"
    assert promoted["choices"] and promoted["lineage"]
    tested = json.loads((tmp_path / "test-cam.json").read_text())
    assert tested["evaluation_number"] == 1
    assert 0 <= tested["MaxBoxAccV2"] <= 100 and 0 <= tested["PxAP"] <= 100
    with (tmp_path / "report" / "report.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    cam = next(row for row in table if row["method"] == "cam")
    assert cam["synthetic MaxBoxAccV2 (test)"] == f"{tested['MaxBoxAccV2']:.2f}"
    assert {row["method"] for row in table if row["synthetic MaxBoxAccV2 (test)"]} == {
        "cam", "bgc"}
    assert (tmp_path / "data" / "synthetic-demo" / "synthetic.json").is_file()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()  # the default store, in the folder
    assert (tmp_path / "mlruns" / "ray" / "wsol-synthetic-smoke").is_dir()
