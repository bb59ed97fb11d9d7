"""The replay benchmark in the repo: its recorded curves are the ones its results were made
from (sha256), its surrogate fits them, and a replayed search spends the budget the way the
real one does (FIFO: every trial its 6 epochs; ASHA: fewer, never more)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import replay  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "replay.json"


@pytest.fixture(scope="module")
def fitted() -> tuple:
    rows = replay.load_curves(replay.CURVES)
    space, first, max_t, grace, rf = replay.setting(REPO / "experiments" / "synthetic-demo.yaml")
    return rows, replay.fit(rows), space, first, max_t, grace, rf


def test_results_come_from_the_shipped_curves() -> None:
    result = json.loads(RESULT.read_text())
    assert result["curves_sha256"] == replay.fingerprint(replay.CURVES)
    assert replay.CURVES.stat().st_size < 1_000_000
    assert result["default"] in result["table"]
    assert all(row["seeds"] >= 50 for row in result["table"].values())


def test_the_surrogate_follows_the_recorded_curves(fitted: tuple) -> None:
    rows, surrogate, *_ = fitted
    recorded = np.array([row["scores"] for row in rows])
    fitted_means = np.array([surrogate.mean(np.array(row["unit"])) for row in rows])
    # Closer to the recordings than their own spread, and the optimum at least as good as
    # the fitted mean anywhere recorded.
    assert np.abs(fitted_means - recorded).mean() < recorded.std()
    assert surrogate.optimum >= np.maximum.accumulate(fitted_means, axis=1)[:, -1].max() - 1e-6


def test_replayed_searches_spend_the_real_budget(fitted: tuple) -> None:
    _, surrogate, space, first, max_t, grace, rf = fitted
    fifo = replay.replay(surrogate, space, first, "random", "fifo", 0, 30, max_t, grace, rf)
    asha = replay.replay(surrogate, space, first, "random", "asha", 0, 30, max_t, grace, rf)
    assert fifo["epochs"][-1] == 30 * max_t
    assert asha["epochs"][-1] < 30 * max_t
    assert np.all(np.diff(fifo["best"]) >= 0) and np.all(np.array(fifo["regret"]) >= -1e-9)
