"""PxAP against np.histogram, normalisations from their definitions, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.scoring import reference
from wsol.scoring.normalize import normalize, percentile
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.selection import Normalisation, NormalisationSearch, default_candidates


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_pxap_equals_reference(interval):
    rng = np.random.default_rng(0)
    maps = rng.random((12, 24, 24)).astype(np.float32)
    maps[0, :3] = 1.0  # exactly 1.0 falls in the [1, 2) bin
    maps[1] = np.round(maps[1], 2)  # values sitting on bin edges
    gt = (rng.random((12, 24, 24)) < 0.3).astype(np.uint8)
    gt[rng.random((12, 24, 24)) < 0.1] = 255
    acc = PxAPAccumulator(interval)
    for m, g in zip(maps, gt, strict=True):
        acc.add(m, g)
    assert acc.result().pxap == reference.pxap(list(maps), list(gt), interval)
    batched = PxAPAccumulator(interval)
    batched.add(maps, gt)
    assert batched.result().pxap == acc.result().pxap
    on_torch = PxAPAccumulator(interval)
    on_torch.add(torch.from_numpy(maps), torch.from_numpy(gt))
    assert on_torch.result().pxap == acc.result().pxap


def test_pxap_perfect_and_inverted_maps():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 1
    perfect = PxAPAccumulator()
    perfect.add(gt.astype(np.float64), gt)
    assert perfect.result().pxap == pytest.approx(100.0)
    inverted = PxAPAccumulator()
    inverted.add(1.0 - gt.astype(np.float64), gt)
    assert inverted.result().pxap < 20


def test_pxap_ignores_ignored_pixels():
    gt = np.zeros((10, 10), np.uint8)
    gt[:5] = 1
    gt[5:, :5] = 255
    m = np.zeros((10, 10))
    m[:5] = 0.9
    m[5:, :5] = 0.95  # high scores, but ignored
    acc = PxAPAccumulator()
    acc.add(m, gt)
    assert acc.result().pxap == pytest.approx(100.0)


def test_pxap_without_foreground_is_an_error():
    acc = PxAPAccumulator()
    acc.add(np.zeros((4, 4)), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no foreground"):
        acc.result()


def test_normalisations_from_their_definitions():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(3, 9, 11))
    t = torch.from_numpy(raw)
    flat = raw.reshape(3, -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    np.testing.assert_allclose(normalize(t, "minmax").numpy(), (raw - lo) / (hi - lo))
    np.testing.assert_allclose(normalize(t, "max").numpy(), np.maximum(raw, 0) / hi)
    shifted = raw - lo
    pct = np.percentile(shifted.reshape(3, -1), 90, axis=1)[:, None, None]
    np.testing.assert_allclose(normalize(t, "pas", 90).numpy(), np.clip(shifted / pct, 0, 1))
    p30 = np.percentile(flat, 30, axis=1)[:, None, None]
    ivr = np.maximum(raw - p30, 0) / (raw - p30).reshape(3, -1).max(1)[:, None, None]
    np.testing.assert_allclose(normalize(t, "ivr", 30).numpy(), ivr)
    for method in ("minmax", "max", "pas", "ivr"):
        out = normalize(t, method, 50)
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("method", ["minmax", "max", "pas", "ivr"])
def test_constant_and_nan_maps_become_zero(method):
    maps = torch.stack(
        [torch.full((5, 5), 3.0), torch.full((5, 5), float("nan")), torch.rand(5, 5)]
    )
    maps[2, 0, 0] = float("nan")
    out = normalize(maps, method, 50)
    assert torch.equal(out, torch.zeros_like(out))


def test_percentile_matches_numpy():
    a = np.random.default_rng(2).random((4, 13, 7))
    for q in (0, 5, 45, 50, 60, 99.9, 100):
        got = percentile(torch.from_numpy(a), q)[..., 0, 0].numpy()
        np.testing.assert_array_equal(got, np.percentile(a.reshape(4, -1), q, axis=1))


def test_ivr_needs_a_percentile_and_unknown_names_fail():
    with pytest.raises(ValueError, match="percentile"):
        Normalisation("ivr")
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(torch.zeros(1, 2, 2), "softmax")


def test_selection_prefers_the_normalisation_that_localises_better():
    """All-negative maps: 'max' zeroes them (ReLU), min-max and IVR still find the object."""
    size = 32
    gt_box = np.array([[8, 8, 23, 23]])
    raws, targets = [], []
    rng = np.random.default_rng(4)
    for _ in range(6):
        raw = rng.normal(0.0, 0.05, (size, size)) - 2.0
        raw[8:24, 8:24] += 1.0
        raws.append(raw)
        targets.append(gt_box)
    search = NormalisationSearch(default_candidates((10.0, 50.0, 70.0)), "MaxBoxAccV2")
    search.add(torch.tensor(np.stack(raws)), targets, (size, size))
    best, score = search.best()
    scores = search.scores()
    assert score == max(scores.values()) == 100.0
    assert scores[Normalisation("max")] < 50
    assert scores[Normalisation("ivr", 50.0)] == 100.0
    assert best == Normalisation("minmax")  # ties go to the first candidate
