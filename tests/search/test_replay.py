"""The replay benchmark in the repo: its results were made from the recorded curves it ships
(sha256, and a changed curves file is refused), its surrogate predicts recorded
configurations it was not fitted to within the measured noise, and a replayed search spends
the budget the way the real one does (FIFO: every trial its 6 epochs; ASHA: stops trials at
its rungs)."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import replay  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
RESULT = RESULTS / "replay.json"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return replay.load_curves(replay.CURVES)


@pytest.fixture(scope="module")
def fitted(rows: list[dict]) -> tuple:
    space, first, max_t, grace, rf = replay.setting(REPO / "experiments" / "synthetic-demo.yaml")
    return replay.fit(rows), space, first, max_t, grace, rf


def test_results_come_from_the_shipped_curves() -> None:
    for name in ("replay", "replay_hull", "replay_repeat_noise", "replay_hull_repeat_noise"):
        result = json.loads((RESULTS / f"{name}.json").read_text())
        replay.check_fingerprint(result, replay.CURVES)
        assert result["default"] in result["table"]
        assert all(row["seeds"] >= 50 for row in result["table"].values())
    assert replay.CURVES.stat().st_size < 1_000_000


def test_a_changed_curves_file_is_refused(tmp_path: Path) -> None:
    changed = tmp_path / "curves.jsonl"
    shutil.copy(replay.CURVES, changed)
    lines = changed.read_text().splitlines()
    row = json.loads(lines[0])
    row["scores"][-1] += 0.83  # one image more at one epoch of one configuration
    changed.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    result = json.loads(RESULT.read_text())
    with pytest.raises(ValueError, match="other curves"):
        replay.check_fingerprint(result, changed)
    runs = RESULTS / "replay_runs.json.gz"
    seeds = json.loads(gzip.decompress(runs.read_bytes()))["seeds"]
    assert replay.stored_runs(runs, replay.CURVES, seeds, "fitted")["runs"]  # kept
    assert replay.stored_runs(runs, changed, seeds, "fitted")["runs"] == {}  # replayed anew
    assert replay.stored_runs(runs, replay.CURVES, seeds, "hull")["runs"] == {}


def test_the_surrogate_predicts_configurations_left_out(rows: list[dict]) -> None:
    """Three folds over the recorded configurations (a configuration's repeat goes with it):
    fitted without a fold, the surrogate's error on it is the observation's own noise (the
    repeats at a second training seed measure it) plus the surrogate's error. It must stay
    within 1.5 times that noise, and be far below a constant predictor's (the training
    folds' mean curve). Epoch 1 does not rank the configurations (its scores are nearly
    flat), so the constant is compared from epoch 2 on."""
    noise = float(np.sqrt(np.mean(replay.repeat_noise(rows) ** 2)))
    assert 1.0 < noise < 3.0  # about 1.9 points: the bound below is tied to it
    indices = sorted({row["index"] for row in rows})
    errors, constant = [], []
    for fold in range(3):
        out = set(indices[fold::3])
        train = [row for row in rows if row["index"] not in out]
        test = [row for row in rows if row["index"] in out]
        surrogate = replay.fit(train)
        recorded = np.array([row["scores"] for row in test])
        errors.append(np.array([surrogate.mean(np.array(row["unit"])) for row in test])
                      - recorded)
        constant.append(np.array([row["scores"] for row in train]).mean(axis=0) - recorded)
    errors, constant = np.concatenate(errors), np.concatenate(constant)
    rmse = float(np.sqrt(np.mean(errors ** 2)))
    assert rmse < 1.5 * noise
    assert np.sqrt(np.mean(constant[:, 1:] ** 2)) > 3 * np.sqrt(np.mean(errors[:, 1:] ** 2))


def test_the_hull_variant_does_not_extrapolate(rows: list[dict]) -> None:
    units = np.array([row["unit"] for row in rows])
    inside = replay.project_to_hull(units, units)
    assert np.allclose(inside, units)
    corner = replay.project_to_hull(np.array([[1.0, 0.0]]), units)[0]
    assert np.all(corner < 1.0) and np.all(corner > 0.0)


def test_replayed_searches_spend_the_real_budget(fitted: tuple) -> None:
    surrogate, space, first, max_t, grace, rf = fitted
    fifo = replay.replay(surrogate, space, first, "random", "fifo", 0, 30, max_t, grace, rf)
    asha = replay.replay(surrogate, space, first, "random", "asha", 0, 30, max_t, grace, rf)
    assert set(np.diff([0, *fifo["epochs"]])) == {max_t}
    per_trial = np.diff([0, *asha["epochs"]])
    # ASHA's rungs at epochs 2 and 4 (grace 2, reduction factor 2): every trial ends at a
    # rung or at the last epoch, some at the first rung, some run to the end.
    assert (grace, max_t) == (2, 6)
    assert set(per_trial) <= {2, 4, 6}
    assert np.sum(per_trial == 2) >= 5 and np.sum(per_trial == 6) >= 3
    assert asha["epochs"][-1] < 30 * max_t
    assert np.all(np.diff(fifo["best"]) >= 0)
