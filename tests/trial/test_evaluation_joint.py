"""train-fullsup's one-pass evaluation gives the numbers of the search then `score_split`,
min-max's beside them, and a trial records them with the evaluation's share of its time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import ray
from test_evaluation_exact import _Targets, raw_batches, straightforward_score

from wsol.common import protocol
from wsol.common.tracking_schema import TRIAL_METRICS
from wsol.scoring.threads import available_cpus
from wsol.trial.config import TrialConfig
from wsol.trial.evaluation import (
    MINMAX,
    candidates,
    minmax_key,
    score_split,
    select_and_score,
)
from wsol.trial.runner import Evaluation, run_trial

MINMAX_NAMES = [minmax_key(m) for m in (protocol.MAX_BOX_ACC, protocol.MAX_BOX_ACC_V2,
                                        protocol.PXAP)]


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize(("metric", "masks"), [("MaxBoxAccV2", False), ("MaxBoxAccV2", True),
                                               ("PxAP", True)])
def test_select_and_score_equals_search_then_score_split(interval, metric, masks):
    rng = np.random.default_rng(21)
    batches = raw_batches(22)
    targets = _Targets(rng, sum(len(b.indices) for b in batches), masks)
    config = TrialConfig(curve_interval=interval, ivr_percentiles=[5.0, 50.0, 90.0])
    # each candidate on its own, as the definitions read (no shared work at all)
    expected = {}
    for candidate in candidates(config):
        metrics, _ = straightforward_score(batches, targets, candidate, interval)
        expected[candidate] = metrics[metric]
    chosen = max(candidates(config),
                 key=lambda c: (expected[c], -candidates(config).index(c)))
    selection = select_and_score(iter(batches), targets, metric, config)  # streams once
    got = selection.scored
    assert got.normalisation == chosen
    assert got.candidates == {c.label: s for c, s in expected.items()}
    alone = score_split(batches, targets, chosen, interval)
    assert got.metrics == alone.metrics
    assert got.threshold == alone.threshold
    assert got.box_curves is not None and alone.box_curves is not None
    for iou in alone.box_curves.accuracy:
        np.testing.assert_array_equal(got.box_curves.accuracy[iou],
                                      alone.box_curves.accuracy[iou])
    if masks:
        assert got.precision_recall is not None and alone.precision_recall is not None
        np.testing.assert_array_equal(got.precision_recall.precision,
                                      alone.precision_recall.precision)
    minmax = score_split(batches, targets, MINMAX, interval).metrics
    wanted = [protocol.MAX_BOX_ACC, protocol.threshold_key(protocol.MAX_BOX_ACC),
              protocol.MAX_BOX_ACC_V2]
    if masks:
        wanted += [protocol.PXAP, protocol.threshold_key(protocol.PXAP)]
    assert selection.minmax == {minmax_key(k): minmax[k] for k in wanted}


def test_minmax_is_scored_when_not_a_candidate():
    rng = np.random.default_rng(23)
    batches = raw_batches(24, count=30)
    targets = _Targets(rng, 30, masks=False)
    config = TrialConfig(normalisations=["ivr"], ivr_percentiles=[20.0, 60.0])
    selection = select_and_score(batches, targets, "MaxBoxAccV2", config)
    assert set(selection.scored.candidates) == {"ivr@20", "ivr@60"}
    minmax = score_split(batches, targets, MINMAX, config.curve_interval).metrics
    assert selection.minmax[minmax_key(protocol.MAX_BOX_ACC_V2)] == minmax["MaxBoxAccV2"]
    assert selection.minmax[minmax_key(protocol.MAX_BOX_ACC)] == minmax["MaxBoxAcc"]


def test_a_trial_records_min_max_and_the_evaluations_share(tiny_synth: Path, tmp_path: Path):
    for name in (*MINMAX_NAMES, "evaluation_seconds", "evaluation_share"):
        assert name in TRIAL_METRICS  # so they reach MLflow, per epoch and selected
    reports: list[Evaluation] = []
    config = TrialConfig(data_root=str(tiny_synth), epochs=1, resize=36, crop=32,
                         eval_size=32, batch_size=8, ivr_percentiles=[30.0, 60.0])
    summary = run_trial(config, tmp_path, reports.append, lambda _: None)
    record = reports[0].metrics
    for name in MINMAX_NAMES:  # the synthetic split has boxes and masks
        assert 0.0 <= record[name] <= 100.0
    assert record[minmax_key(protocol.threshold_key(protocol.MAX_BOX_ACC))] in \
        np.arange(0, 1, config.curve_interval)
    assert record["evaluation_seconds"] > 0
    share = record["evaluation_seconds"] / (record["epoch_seconds"] + record["evaluation_seconds"])
    assert record["evaluation_share"] == share and 0 < share < 1
    if record["normalisation"] == "minmax" and record["percentile"] is None:
        assert record[minmax_key(protocol.MAX_BOX_ACC_V2)] == record["MaxBoxAccV2"]
    assert summary["metrics"]["evaluation_share"] == share  # also at the selected epoch


def test_threads_outside_ray_are_the_affinity_mask():
    assert available_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.e2e
def test_threads_inside_ray_are_the_assigned_cpus():
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert available_cpus() == len(os.sched_getaffinity(0))  # the driver: not a worker

        @ray.remote
        def threads() -> int:
            return available_cpus()

        assert ray.get(threads.options(num_cpus=2).remote()) == 2
        assert ray.get(threads.options(num_cpus=1).remote()) == 1
        assert ray.get(threads.options(num_cpus=0.5).remote()) == 1
        assert ray.get(threads.options(num_cpus=0).remote()) == 1  # a trial with no CPUs
    finally:
        ray.shutdown()
