"""The per-epoch train-fullsup evaluation's shortcuts give the straightforward numbers.

`Normaliser` (one resize, one sort, in-place steps, shared across candidates) against each
normalisation computed on its own as the definitions read; `score_split`'s one pass
(MaxBoxAcc and MaxBoxAccV2 together, Loc read off the kept hits at the selected threshold)
against separate accumulators and a second Loc pass over the maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.common import protocol
from wsol.scoring.boxes import BoxAccumulator, BoxMetricsAccumulator, best_iou_curve
from wsol.scoring.grid import threshold_grid
from wsol.scoring.localization import LocalizationAccuracy
from wsol.scoring.normalize import Normaliser, normalize, resize
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.report import box_metrics, mask_metrics
from wsol.scoring.selection import Normalisation, NormalisationSearch, default_candidates
from wsol.trial.config import TrialConfig
from wsol.trial.evaluation import RawBatch, candidates, score_split, select_normalisation


def straightforward(maps: torch.Tensor, method: str, p: float | None) -> torch.Tensor:
    """Each normalisation on its own: NaN / constant maps zeroed, a torch sort per
    percentile of the (shifted) maps, no step in place."""

    def pct(x: torch.Tensor, q: float) -> torch.Tensor:
        flat = x.flatten(-2).sort(dim=-1).values
        position = q / 100.0 * (flat.shape[-1] - 1)
        low = int(position // 1)
        high = min(low + 1, flat.shape[-1] - 1)
        t = position - low
        a, b = flat[..., low], flat[..., high]
        return (a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))[..., None, None]

    def divide(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        ok = d > 0
        return torch.where(ok, n / torch.where(ok, d, torch.ones_like(d)), torch.zeros_like(n))

    nan = torch.isnan(maps).flatten(-2).any(dim=-1)[..., None, None]
    x = torch.where(nan, torch.zeros_like(maps), maps)
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    if method == "minmax":
        out = divide(x - low, high - low)
    elif method == "max":
        out = divide(x.clamp(min=0), high)
    elif method == "pas":
        out = divide(x - low, pct(x - low, p)).clamp(0, 1)
    else:
        shifted = x - pct(x, p)
        out = divide(shifted.clamp(min=0), shifted.amax(dim=(-2, -1), keepdim=True))
    return torch.where(nan | (high == low), torch.zeros_like(out), out)


def awkward_maps(dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Smooth raw maps of both signs, plus ties, zeros, -0.0, all-negative, constant and NaN
    maps."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((24, 1, 5, 5))).to(dtype)
    maps = torch.nn.functional.interpolate(coarse, size=(17, 19), mode="bicubic")[:, 0] * 30 - 8
    maps[1] = torch.round(maps[1])  # many ties
    maps[2] = torch.where(maps[2] > 4, maps[2], maps[2] * 0.0)  # 0.0 and -0.0
    maps[3] = -maps[3].abs() - 1  # all negative
    maps[4] = 3.0  # constant
    maps[5, 2, 3] = float("nan")
    maps[6] = torch.where(maps[6] > 5, maps[6], torch.zeros_like(maps[6]))  # mostly zero
    maps[7, :, :9] = maps[7, :, :9].max()  # a plateau at the maximum
    return maps


NAMED = [("minmax", None), ("max", None), ("pas", 90.0), ("pas", 0.0), ("pas", 100.0),
         *(("ivr", p) for p in (0.0, *protocol.DEFAULT_IVR_PERCENTILES, 99.5, 100.0))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normaliser_equals_each_normalisation_on_its_own(dtype):
    for seed in range(3):
        maps = awkward_maps(dtype, seed)
        shared = Normaliser(maps)
        for method, p in NAMED:  # one Normaliser, every candidate in turn
            expected = straightforward(maps, method, p)
            for got in (shared(method, p), normalize(maps, method, p)):
                assert got.dtype == dtype
                np.testing.assert_array_equal(got.numpy(), expected.numpy())
                np.testing.assert_array_equal((got.numpy() * 255).astype(np.uint8),
                                              (expected.numpy() * 255).astype(np.uint8))


def test_normaliser_leaves_the_raw_maps_alone():
    maps = awkward_maps(torch.float32, 4)
    before = maps.clone()
    shared = Normaliser(maps)
    for method, p in NAMED:
        shared(method, p)
    assert torch.equal(torch.nan_to_num(maps, 7.0), torch.nan_to_num(before, 7.0))


class _Targets:
    """Boxes (and masks) at the map size, as `wsol.trial.evaluation.Targets` gives them."""

    size = (40, 40)

    def __init__(self, rng: np.random.Generator, count: int, masks: bool):
        self.has_boxes, self.has_masks = True, masks
        self._boxes, self._masks = [], []
        for _ in range(count):
            x0, y0 = (int(v) for v in rng.integers(0, 28, 2))
            self._boxes.append(np.array([[x0, y0, x0 + int(rng.integers(3, 12)),
                                          y0 + int(rng.integers(3, 12))]]))
            mask = (rng.random(self.size) < 0.3).astype(np.uint8)
            mask[rng.random(self.size) < 0.05] = 255
            self._masks.append(mask)

    def boxes(self, index: int) -> np.ndarray:
        return self._boxes[index]

    def mask(self, index: int) -> np.ndarray:
        return self._masks[index]


def raw_batches(seed: int, count: int = 70, batch: int = 16) -> list[RawBatch]:
    """Raw 10 x 10 maps (upsampled to 40 x 40 when scored) with ties and a NaN, logits of
    six classes, and one batch without a classifier answer."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 1, 4, 4)).astype(np.float32))
    raw = torch.nn.functional.interpolate(coarse, size=(10, 10), mode="bicubic")[:, 0] * 20 - 5
    raw[::5] = torch.round(raw[::5])
    raw[3] = 1.0
    raw[8, 1, 1] = float("nan")
    logits = torch.from_numpy(rng.normal(size=(count, 6)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 6, count))
    return [RawBatch(raw[i:i + batch], None if i == batch else logits[i:i + batch],
                     labels[i:i + batch], torch.arange(i, min(i + batch, count)))
            for i in range(0, count, batch)]


def straightforward_score(batches: list[RawBatch], targets: _Targets,
                          normalisation: Normalisation, interval: float) -> tuple[dict, float]:
    """MaxBoxAcc and MaxBoxAccV2 by separate accumulators, the threshold they select, then
    Loc by a second pass over the maps at that threshold."""
    v1, v2 = BoxAccumulator(interval, multi_contour=False), BoxAccumulator(interval)
    pxap = PxAPAccumulator(interval) if targets.has_masks else None
    maps_of = []
    for b in batches:
        maps = straightforward(resize(b.maps, targets.size), normalisation.method,
                               normalisation.percentile).numpy()
        maps_of.append(maps)
        gt = [targets.boxes(i) for i in b.indices.tolist()]
        v1.add_many(zip(maps, gt, strict=True))
        v2.add_many(zip(maps, gt, strict=True))
        if pxap is not None:
            pxap.add(maps, np.stack([targets.mask(i) for i in b.indices.tolist()]))
    metrics = box_metrics(v1.result(), v2.result())
    if pxap is not None:
        metrics.update(mask_metrics(pxap.result()))
    threshold = metrics[protocol.threshold_key(protocol.MAX_BOX_ACC)]
    loc = LocalizationAccuracy(threshold)
    for b, maps in zip(batches, maps_of, strict=True):
        if b.logits is None:
            continue
        ranked = b.logits.argsort(dim=1, descending=True)[:, :5].tolist()
        for m, i, label, order in zip(maps, b.indices.tolist(), b.labels.tolist(), ranked,
                                      strict=True):
            loc.add(m, targets.boxes(i), label, order)
    metrics.update(loc.result())
    return metrics, threshold


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("masks", [False, True])
def test_score_split_equals_the_straightforward_evaluation(interval, masks):
    rng = np.random.default_rng(7)
    batches = raw_batches(8)
    targets = _Targets(rng, sum(len(b.indices) for b in batches), masks)
    for normalisation in default_candidates((5.0, 50.0)):
        expected, threshold = straightforward_score(batches, targets, normalisation, interval)
        got = score_split(iter(batches), targets, normalisation, interval)  # streams once
        assert got.threshold == threshold
        assert got.metrics == expected
        # on test, the threshold given: the Loc pass over the maps, same numbers
        fixed = score_split(iter(batches), targets, normalisation, interval, threshold)
        assert fixed.metrics == expected


@pytest.mark.parametrize("metric", ["MaxBoxAccV2", "PxAP"])
def test_normalisation_search_equals_each_candidate_on_its_own(metric):
    rng = np.random.default_rng(9)
    batches = raw_batches(10)
    targets = _Targets(rng, sum(len(b.indices) for b in batches), masks=True)
    config = TrialConfig()
    chosen, scores = select_normalisation(batches, targets, metric, config)
    expected = {}
    for candidate in candidates(config):
        box, mask = BoxAccumulator(config.curve_interval), PxAPAccumulator(config.curve_interval)
        for b in batches:
            maps = straightforward(resize(b.maps, targets.size), candidate.method,
                                   candidate.percentile).numpy()
            if metric == "PxAP":
                mask.add(maps, np.stack([targets.mask(i) for i in b.indices.tolist()]))
            else:
                box.add_many(zip(maps, [targets.boxes(i) for i in b.indices.tolist()],
                                 strict=True))
        expected[candidate.label] = (mask.result().pxap if metric == "PxAP"
                                     else box.result().mean_max_accuracy)
    assert scores == expected
    search = NormalisationSearch(candidates(config), metric, config.curve_interval)
    for b in batches:
        truth = [targets.mask(i) if metric == "PxAP" else targets.boxes(i)
                 for i in b.indices.tolist()]
        search.add(b.maps, truth, targets.size)
    assert search.best()[0] == chosen


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_kept_hits_are_the_one_threshold_answer(interval):
    """Each map's kept hit at every threshold of the grid is what LocalizationAccuracy's
    single-threshold box gives there."""
    rng = np.random.default_rng(11)
    grid = threshold_grid(interval)
    batches = raw_batches(12, count=12, batch=12)
    maps = normalize(resize(batches[0].maps, (40, 40)), "minmax").numpy()
    boxes = _Targets(rng, len(maps), masks=False)
    accumulator = BoxMetricsAccumulator(interval, keep_hits_at=0.5)
    accumulator.add_many((m, boxes.boxes(i)) for i, m in enumerate(maps))
    columns = range(0, len(grid), 1 if interval == 0.01 else 7)
    for i, m in enumerate(maps):
        single = [best_iou_curve(m, boxes.boxes(i), grid[k:k + 1], False)[0] >= 0.5
                  for k in columns]
        assert accumulator.hits[i][list(columns)].tolist() == single
