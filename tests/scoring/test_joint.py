"""Every normalisation candidate from one pass per raw map gives each candidate's own numbers.

The one-pass scoring (`CandidateCurves`) against each candidate normalised on its own
(`Normaliser`) and scored by the per-map accumulators, on maps made to break it: ties
(rounded maps, IVR's clipping to zero at high percentiles, plateaus), float32 rounding that
merges distinct raw values, 0.0 and -0.0, constant, NaN, all-negative maps; every kind of
percentile; both curve intervals; boxes and masks; one thread and two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.scoring.boxes import BoxMetricsAccumulator
from wsol.scoring.grid import threshold_grid
from wsol.scoring.joint import CandidateCurves, _value
from wsol.scoring.normalize import Normaliser, resize
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.selection import Normalisation

CANDIDATES = [
    Normalisation("minmax"), Normalisation("max"),
    *(Normalisation("pas", p) for p in (0.0, 50.0, 90.0, 100.0)),
    *(Normalisation("ivr", p) for p in (0.0, 0.5, *range(5, 100, 5), 99.5, 100.0)),
]


def awkward_raw(seed: int, count: int = 24, size: int = 10) -> torch.Tensor:
    """Raw maps (float32) of both signs with the cases that could break one pass."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 1, 4, 4)).astype(np.float32))
    maps = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[:, 0]
    maps = maps * 30 - 8
    maps[1] = torch.round(maps[1])  # many ties
    maps[2] = torch.where(maps[2] > 4, maps[2], maps[2] * 0.0)  # 0.0 and -0.0
    maps[3] = -maps[3].abs() - 1  # all negative: max normalises to zeros
    maps[4] = 3.0  # constant
    maps[5, 2, 3] = float("nan")
    maps[6] = torch.where(maps[6] > 5, maps[6], torch.zeros_like(maps[6]))  # mostly zero
    maps[7, :, :6] = maps[7, :, :6].max()  # a plateau at the maximum
    maps[8] = 1e7 + torch.round(maps[8] * 8)  # float32 spacing 1: few distinct values
    maps[9] = torch.where(maps[9] > 0, maps[9] * 1e-38, maps[9])  # subnormals beside 1e1
    maps[9, 0, 0] = 1e30  # ... which normalise to the same float as zero
    maps[10] = torch.where(maps[10] > maps[10].median(), 5.0, -5.0)  # two values only
    maps[11] = 0.0  # all zero
    maps[12, 0, :] = -1e30  # one extreme low row: everything else normalises near 1
    return maps


def boxes_and_masks(seed: int, count: int, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        rows = []
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = (int(v) for v in rng.integers(0, size - 2, 2))
            rows.append([x0, y0, int(rng.integers(x0, size)), int(rng.integers(y0, size))])
        boxes.append(np.array(rows))
    masks = (rng.random((count, size, size)) < 0.3).astype(np.uint8)
    masks[rng.random(masks.shape) < 0.05] = 255
    masks[0, :2] = 2  # any label but 1 and 255 counts as background
    return boxes, masks


def alone(raw: torch.Tensor, size: tuple[int, int], candidate: Normalisation,
          boxes: list[np.ndarray], masks: np.ndarray, interval: float
          ) -> tuple[BoxMetricsAccumulator, PxAPAccumulator]:
    """One candidate normalised and scored on its own, as before the one-pass scoring."""
    maps = Normaliser(resize(raw, size))(candidate.method, candidate.percentile).numpy()
    box = BoxMetricsAccumulator(interval, workers=1, keep_hits_at=0.5)
    box.add_many(zip(maps, boxes, strict=True))
    pxap = PxAPAccumulator(interval)
    pxap.add(maps, masks)
    return box, pxap


def assert_same(curves: CandidateCurves, candidate: Normalisation,
                box: BoxMetricsAccumulator, pxap: PxAPAccumulator) -> None:
    got_v1, got_v2 = curves.box_curves(candidate)
    want_v1, want_v2 = box.result()
    for got, want in ((got_v1, want_v1), (got_v2, want_v2)):
        assert got.images == want.images
        for iou in want.accuracy:
            np.testing.assert_array_equal(got.accuracy[iou], want.accuracy[iou],
                                          err_msg=f"{candidate.label} IoU {iou}")
    for threshold_index, threshold in enumerate(curves.thresholds):
        expected = [hits[threshold_index] for hits in box.hits]
        assert curves.located(candidate, threshold).tolist() == expected, candidate.label
    got_pr, want_pr = curves.precision_recall(candidate), pxap.result()
    np.testing.assert_array_equal(curves._foreground[curves.candidates.index(candidate)],
                                  pxap.foreground)
    np.testing.assert_array_equal(curves._background[curves.candidates.index(candidate)],
                                  pxap.background)
    assert got_pr.pxap == want_pr.pxap
    assert got_pr.best_threshold == want_pr.best_threshold


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("workers", [1, 2])
def test_every_candidate_equals_its_own_scoring(interval, workers):
    size = (40, 40)
    raw = torch.cat([awkward_raw(1), awkward_raw(2)])
    boxes, masks = boxes_and_masks(3, len(raw), size[0])
    curves = CandidateCurves(CANDIDATES, interval, boxes=True, masks=True, workers=workers)
    for start in range(0, len(raw), 20):  # batches
        curves.add(raw[start:start + 20], size, boxes[start:start + 20], masks[start:start + 20])
    assert curves.images == len(raw)
    for candidate in CANDIDATES:
        box, pxap = alone(raw, size, candidate, boxes, masks, interval)
        assert_same(curves, candidate, box, pxap)


def test_cam_sized_maps_equal_their_own_scoring():
    """28 x 28 raw maps to 224 x 224, as a CUB trial scores them: hundreds of distinct
    levels per map, holes, and levels where OpenCV decides."""
    rng = np.random.default_rng(4)
    coarse = torch.from_numpy(rng.random((6, 1, 7, 7)).astype(np.float32))
    raw = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bicubic")[:, 0] * 40 - 10
    raw[1] = torch.round(raw[1])
    size = (224, 224)
    boxes, masks = boxes_and_masks(5, len(raw), size[0])
    chosen = [CANDIDATES[i] for i in (0, 1, 4, 6, 10, 20, 26)]
    curves = CandidateCurves(chosen, 0.01, boxes=True, masks=True, workers=2)
    curves.add(raw, size, boxes, masks)
    for candidate in chosen:
        assert_same(curves, candidate, *alone(raw, size, candidate, boxes, masks, 0.01))


def test_boxes_only_and_masks_only():
    size = (40, 40)
    raw = awkward_raw(6)
    boxes, masks = boxes_and_masks(7, len(raw), size[0])
    only_boxes = CandidateCurves(CANDIDATES[:8], 0.01, boxes=True, masks=False, workers=1)
    only_boxes.add(raw, size, gt_boxes=boxes)
    only_masks = CandidateCurves(CANDIDATES[:8], 0.01, boxes=False, masks=True, workers=1)
    only_masks.add(raw, size, gt_masks=masks)
    for candidate in CANDIDATES[:8]:
        box, pxap = alone(raw, size, candidate, boxes, masks, 0.01)
        assert only_boxes.box_curves(candidate)[1].accuracy[50].tolist() == \
            box.result()[1].accuracy[50].tolist()
        assert only_masks.precision_recall(candidate).pxap == pxap.result().pxap
    with pytest.raises(ValueError, match="no masks"):
        only_boxes.precision_recall(CANDIDATES[0])
    with pytest.raises(ValueError, match="no boxes"):
        only_masks.box_curves(CANDIDATES[0])


def test_float64_maps_are_scored_candidate_by_candidate_with_the_same_numbers():
    size = (40, 40)
    raw = awkward_raw(8, count=14).double()
    boxes, masks = boxes_and_masks(9, len(raw), size[0])
    curves = CandidateCurves(CANDIDATES[:6], 0.01, boxes=True, masks=True, workers=2)
    curves.add(raw, size, boxes, masks)
    for candidate in CANDIDATES[:6]:
        assert_same(curves, candidate, *alone(raw, size, candidate, boxes, masks, 0.01))


def test_an_infinite_map_fails_as_alone_and_nothing_is_counted():
    size = (10, 10)  # no resize, which would turn the infinity into NaN (a zero map)
    raw = awkward_raw(10, count=14)
    raw[2, 0, 0] = float("inf")
    boxes, masks = boxes_and_masks(11, len(raw), size[0])
    curves = CandidateCurves(CANDIDATES[:3], 0.01, workers=2)
    with pytest.raises(ValueError, match="score map 2: contains NaN"):
        curves.add(raw, size, boxes)
    assert curves.images == 0
    with pytest.raises(ValueError, match="score map 2: contains NaN"):
        alone(raw, size, CANDIDATES[0], boxes, masks, 0.01)


def test_a_map_whose_range_overflows_float32_fails_as_alone():
    """Finite values near +-3e38, whose max - min overflows float32: min-max then divides
    inf by inf. Scoring the candidate alone refuses the NaN map; the one pass must too, not
    score NaN as 0."""
    size = (10, 10)
    raw = awkward_raw(13, count=14)
    raw[4] = (torch.rand(10, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 3.2e38
    boxes, masks = boxes_and_masks(14, len(raw), size[0])
    with pytest.raises(ValueError, match="score map 4: contains NaN"):
        alone(raw, size, CANDIDATES[0], boxes, masks, 0.01)
    curves = CandidateCurves(CANDIDATES[:3], 0.01, workers=2)
    with pytest.raises(ValueError, match="score map 4: contains NaN"):
        curves.add(raw, size, boxes)
    assert curves.images == 0


def test_targets_must_fit_the_maps():
    raw = awkward_raw(12, count=14)
    curves = CandidateCurves(CANDIDATES[:2], 0.01, boxes=True, masks=True, workers=1)
    boxes, masks = boxes_and_masks(13, 14, 40)
    with pytest.raises(ValueError, match="need as many GT box arrays"):
        curves.add(raw, (40, 40), boxes[:3], masks)
    with pytest.raises(ValueError, match="need masks of that shape"):
        curves.add(raw, (40, 40), boxes, masks[:, :20])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_form_is_the_normalisation_bit_for_bit(dtype):
    """`Normaliser.affine`'s constants in its formula give `Normaliser`'s maps, bit for bit,
    also from the presorted constructor (whose zeros may differ only in sign)."""
    maps = resize(awkward_raw(14).to(dtype), (30, 30))
    shared = Normaliser(maps)
    presorted = Normaliser.presorted(maps, torch.sort(maps.flatten(-2), dim=-1).values)
    assert torch.equal(presorted.maps, shared.maps)  # NaN maps zeroed
    assert torch.equal(presorted.degenerate, shared.degenerate)
    for candidate in CANDIDATES:
        want = shared(candidate.method, candidate.percentile)
        for normaliser in (shared, presorted):
            shift, divisor, clip, zero = normaliser.affine(candidate.method, candidate.percentile)
            ok = torch.where(zero, torch.ones_like(divisor), divisor)
            got = (shared.maps - shift).clamp(min=0) / ok
            if clip:
                got = got.clamp(max=1)
            got = torch.where(zero, torch.zeros_like(got), got)
            assert torch.equal(got, want), candidate.label  # -0.0 == 0.0 here
            np.testing.assert_array_equal((got.numpy() * 255).astype(np.uint8),
                                          (want.numpy() * 255).astype(np.uint8))


def test_compiled_normalisation_is_torchs_float32_arithmetic():
    """The kernel's float32 steps (`_value`) give torch's normalised values on every pixel."""
    maps = resize(awkward_raw(15, count=14), (16, 16))
    shared = Normaliser(maps)
    for candidate in CANDIDATES[::3]:
        want = shared(candidate.method, candidate.percentile).numpy()
        shift, divisor, clip, zero = shared.affine(candidate.method, candidate.percentile)
        for i in range(len(maps)):
            if bool(zero[i]):
                assert not want[i].any()
                continue
            s, d = np.float32(shift[i].item()), np.float32(divisor[i].item())
            got = np.array([_value(np.float32(x), s, d, clip)
                            for x in shared.maps[i].numpy().ravel()], dtype=np.float32)
            np.testing.assert_array_equal(got, want[i].ravel(), err_msg=candidate.label)


def test_grid_and_thresholds_are_the_protocols():
    curves = CandidateCurves(CANDIDATES[:1], 0.001, workers=1)
    np.testing.assert_array_equal(curves.thresholds, threshold_grid(0.001))
