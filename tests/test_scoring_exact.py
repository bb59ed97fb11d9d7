"""Box metrics against the straightforward OpenCV evaluator and hand-made answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsol.scoring import reference
from wsol.scoring.boxes import BoxAccumulator, best_iou_curve
from wsol.scoring.grid import threshold_grid


def smooth_map(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    coarse = torch.from_numpy(rng.random((1, 1, knots, knots)).astype(np.float32))
    m = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[0, 0].numpy()
    return ((m - m.min()) / (m.max() - m.min())).astype(np.float32)


def random_boxes(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        boxes.append([x0, y0, int(rng.integers(x0, w)), int(rng.integers(y0, h))])
    return np.array(boxes)


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("multi_contour", [True, False])
def test_same_curve_as_reference_on_random_maps(interval, multi_contour):
    rng = np.random.default_rng(7)
    for trial in range(60 if interval == 0.01 else 15):
        size = int(rng.integers(4, 48))
        kind = trial % 3
        if kind == 0:
            scoremap = rng.random((size, size)).astype(np.float32)  # many components, holes
        elif kind == 1:
            scoremap = smooth_map(rng, size, int(rng.integers(2, 9)))
        else:
            scoremap = smooth_map(rng, size, 4) * np.float32(rng.random())  # max below 1
        gt = random_boxes(rng, size, size)
        expected = reference.best_iou_curve(scoremap, gt, interval, multi_contour)
        got = best_iou_curve(scoremap, gt, threshold_grid(interval), multi_contour)
        np.testing.assert_array_equal(got, expected)


def ring(size=40, outer=15, inner=7) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    return ((r <= outer) & (r > inner)).astype(np.float64)


DEGENERATE = {
    "all_zero": np.zeros((30, 30)),
    "constant_one": np.ones((30, 30)),
    "single_hot_pixel": np.pad(np.ones((1, 1)), ((5, 24), (9, 20))),
    "ring_with_hole": ring(),
    "touching_border": np.pad(np.ones((10, 30)), ((0, 20), (0, 0))),
    "many_small_components": np.kron(np.indices((10, 10)).sum(0) % 2, np.ones((3, 3))),
    "checkerboard_diagonal": (np.indices((12, 12)).sum(0) % 2).astype(np.float64),
    "non_square": np.pad(np.ones((5, 20)) * 0.7, ((3, 8), (2, 9))),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("multi_contour", [True, False])
def test_degenerate_maps_match_reference(name, multi_contour):
    scoremap = DEGENERATE[name]
    h, w = scoremap.shape
    for gt in (
        [[0, 0, w - 1, h - 1]],
        [[0, 0, 0, 0]],
        [[w - 5, h - 5, w - 1, h - 1]],
        [[2, 2, 8, 9], [w // 2, h // 2, w - 1, h - 1]],
    ):
        gt = np.array(gt)
        expected = reference.best_iou_curve(scoremap, gt, 0.01, multi_contour)
        got = best_iou_curve(scoremap, gt, threshold_grid(0.01), multi_contour)
        np.testing.assert_array_equal(got, expected)


def test_hand_made_box_answer():
    scoremap = np.zeros((20, 20))
    scoremap[5:10, 4:12] = 1.0  # rows 5..9, columns 4..11
    # the reference's box is [x, y, x + w, y + h] = [4, 5, 12, 10]; IoU against itself-ish
    gt = np.array([[4, 5, 12, 10]])
    curve = best_iou_curve(scoremap, gt, threshold_grid(0.01), True)
    assert curve[0] == 1.0 and np.all(curve == 1.0)
    gt_inclusive = np.array([[4, 5, 11, 9]])  # 8x5 inside a 9x6 prediction
    assert best_iou_curve(scoremap, gt_inclusive, threshold_grid(0.5), True)[0] == 40 / 54


def test_all_zero_map_predicts_the_empty_box():
    curve = best_iou_curve(np.zeros((10, 10)), np.array([[0, 0, 0, 0]]), threshold_grid(0.1), True)
    assert np.all(curve == 1.0)  # [0,0,0,0] against a GT of [0,0,0,0]


def test_hole_contours_come_from_opencv_tree():
    """A ring yields an outer and a hole contour; the hole box counts for MaxBoxAccV2."""
    m = ring().astype(np.uint8) * 255
    contours, hierarchy = cv2.findContours(m, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    assert len(contours) == 2
    hole = cv2.boundingRect(contours[int(np.argmax(hierarchy[0, :, 3]))])
    x, y, w, h = hole
    gt = np.array([[x, y, x + w, y + h]])
    assert best_iou_curve(ring(), gt, threshold_grid(0.5), True)[0] == 1.0
    assert best_iou_curve(ring(), gt, threshold_grid(0.5), False)[0] < 1.0


def test_accumulator_matches_reference_max_box_acc():
    rng = np.random.default_rng(3)
    maps = [smooth_map(rng, 32, 5) for _ in range(25)]
    boxes = [random_boxes(rng, 32, 32) for _ in range(25)]
    for multi in (True, False):
        acc = BoxAccumulator(0.01, multi_contour=multi)
        acc.add_many(zip(maps, boxes, strict=True))
        expected = reference.max_box_acc(maps, boxes, 0.01, multi)
        assert {d: acc.result().max_accuracy(d) for d in (30, 50, 70)} == expected
    single = BoxAccumulator(0.01, workers=1)
    for m, b in zip(maps, boxes, strict=True):
        single.add(m, b)
    assert single.result().accuracy[50].tolist() == acc_v2(maps, boxes).accuracy[50].tolist()


def acc_v2(maps, boxes):
    acc = BoxAccumulator(0.01)
    acc.add_many(zip(maps, boxes, strict=True))
    return acc.result()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((4, 4), np.nan), "NaN"),
        (np.full((4, 4), 1.5), r"\[0, 1\]"),
        (np.zeros((4, 4), dtype=np.uint8), "floating"),
        (np.zeros(4), "2-D"),
    ],
)
def test_invalid_maps_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        BoxAccumulator().add(bad, np.array([[0, 0, 1, 1]]))


def test_a_bad_map_in_a_batch_is_named_and_nothing_is_counted():
    good = np.zeros((4, 4))
    acc = BoxAccumulator(workers=2)
    batch = [(good, np.array([[0, 0, 1, 1]]))] * 3
    batch[2] = (np.full((4, 4), np.nan), batch[2][1])
    with pytest.raises(ValueError, match="score map 2: contains NaN"):
        acc.add_many(batch)
    assert acc.images == 0


def test_components_and_euler_number_count_opencv_contours():
    """The outer pass's component count and Euler number give OpenCV's contour count
    (components plus holes) at every level; the hole pass is skipped on that count."""
    from wsol.scoring import contours

    rng = np.random.default_rng(11)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        if trial % 3 == 0:
            u8 = (rng.integers(0, 3, (h, w)) * 100).astype(np.uint8)
        else:
            u8 = (rng.random((h, w)) ** rng.uniform(0.3, 3) * 255).astype(np.uint8)
        order, *work = contours._workspace(h, w)
        starts = contours._padded_order(u8, order)
        _, components, euler = contours._component_best(
            (h, w), np.array([[0, 0, 1, 1]]), np.ones(256, dtype=bool), False, order, starts,
            *work, contours.OUTER_RUNS, contours.EULER_DELTA4,
        )
        for t in range(256):
            binary = ((u8 > t) * 255).astype(np.uint8)
            found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            assert len(found) == 2 * components[t] - euler[t], (trial, t)
