"""Box metrics against the straightforward OpenCV evaluator and hand-made answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsol.scoring import contours, reference
from wsol.scoring.boxes import (
    BoxAccumulator,
    BoxMetricsAccumulator,
    best_iou_curve,
    best_iou_curves,
)
from wsol.scoring.grid import quantize, threshold_grid, threshold_levels


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


def outer_pass(u8: np.ndarray, needed: np.ndarray, gt: np.ndarray | None = None):
    """The outer pass with the largest-contour bookkeeping, and its work arrays after it."""
    gt = np.array([[0, 0, 1, 1]]) if gt is None else gt
    order, parent, stats, roots = contours._workspace(*u8.shape)
    starts = contours._padded_order(u8, order)
    result = contours._outer_pass(
        u8.shape, gt, needed, True, True, order, starts, parent, stats, roots
    )
    return result, (order, starts, parent, stats, roots)


def pixel(padded: int, width: int) -> tuple[int, int]:
    """(y, x) of a padded index of a map `width` wide."""
    y, x = divmod(int(padded), width + 2)
    return y - 1, x - 1


def test_components_and_euler_number_count_opencv_contours():
    """The outer pass's component count and Euler number give OpenCV's contour count
    (components plus holes) at every level; the hole pass is skipped on that count."""
    rng = np.random.default_rng(11)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        if trial % 3 == 0:
            u8 = (rng.integers(0, 3, (h, w)) * 100).astype(np.uint8)
        else:
            u8 = (rng.random((h, w)) ** rng.uniform(0.3, 3) * 255).astype(np.uint8)
        (_, components, euler, *_), _ = outer_pass(u8, np.ones(256, dtype=bool))
        for t in range(256):
            binary = ((u8 > t) * 255).astype(np.uint8)
            found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            assert len(found) == 2 * components[t] - euler[t], (trial, t)


def random_binary(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(1, 28, 2))
    return (rng.random((h, w)) < rng.uniform(0.1, 0.9)).astype(np.uint8) * 255


def depth(hierarchy: np.ndarray, i: int) -> int:
    d = 0
    while hierarchy[i, 3] != -1:
        i, d = hierarchy[i, 3], d + 1
    return d


def test_component_areas_are_opencv_contour_areas():
    """Per component: 2 x material plus 2 x its holes' border areas is 2 x cv2.contourArea of
    its outer border (the material alone when it has no hole), its own Euler number is one
    less its holes (so 1 says it has none); the first
    pixel is where OpenCV starts the border; a hole with nothing inside (4-connected Euler
    number 1) has its border's area as its share of the plane, and the pixel above its first
    one lies in the component whose hole it is."""
    rng = np.random.default_rng(12)
    needed = np.zeros(256, dtype=bool)
    needed[0] = True
    checked = {"plain": 0, "with holes": 0, "holes": 0, "nested": 0}
    for _ in range(1500):
        binary = random_binary(rng)
        found, hierarchy = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        (_, components, *_), work = outer_pass(binary, needed)
        order, starts, parent, stats, roots = work
        width = binary.shape[1]
        live = [int(r) for r in roots[: components[0]]]
        by_first = {pixel(stats[r, contours.FIRST], width): r for r in live}
        outer_of = {}
        for i, contour in enumerate(found):
            if depth(hierarchy[0], i) % 2 == 0:
                x, y = contour[0, 0]
                outer_of[i] = by_first[(int(y), int(x))]  # KeyError: not a first pixel
        assert len(outer_of) == len(live)
        areas = {r: int(contours._area2(stats[r, contours.SHAPE])) for r in live}
        holes_of: dict[int, list[int]] = {i: [] for i in outer_of}
        for i in range(len(found)):
            if i not in outer_of:
                holes_of[hierarchy[0, i, 3]].append(i)
        # the hole pass, recording level 0, on the same work arrays
        record = needed.copy()
        _, hole_total, hole_starts, hole_area, hole_above = contours._hole_pass(
            binary.shape, np.array([[0, 0, 1, 1]]), needed, record, order, starts, parent,
            stats, roots,
        )
        hole_areas = sorted(int(a) for a in hole_area[hole_starts[0] : hole_starts[1]])
        for i, r in outer_of.items():
            exact = 2 * cv2.contourArea(found[i])
            inside = [2 * cv2.contourArea(found[k]) for k in holes_of[i]]
            assert areas[r] + sum(inside) == exact
            euler4 = contours._euler4(stats[r, contours.SHAPE])
            assert euler4 == 4 * (1 - len(inside))  # its own Euler number
            checked["with holes" if inside else "plain"] += 1
        expected_holes = []
        for i in range(len(found)):
            if i in outer_of:
                continue
            nested = hierarchy[0, i, 2] != -1
            expected_holes.append(-1 if nested else int(2 * cv2.contourArea(found[i])))
            checked["nested" if nested else "holes"] += 1
        assert hole_areas == sorted(expected_holes)
        assert hole_total[0] == (-1 if -1 in expected_holes else sum(expected_holes))
        # the pixel above each hole's first pixel: a foreground pixel of the hole's component
        for above in hole_above[hole_starts[0] : hole_starts[1]]:
            assert binary[pixel(above, width)] == 255
    assert min(checked.values()) > 5, checked


def test_component_of_hole_is_the_one_above_its_first_pixel():
    """The hole's component, as OpenCV's hierarchy gives it, holds the pixel above the
    hole's first pixel in raster order."""
    from scipy import ndimage

    rng = np.random.default_rng(13)
    checked = 0
    for _ in range(800):
        binary = random_binary(rng)
        found, hierarchy = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        labels, _ = ndimage.label(binary > 0, structure=np.ones((3, 3)))
        holes, _ = ndimage.label(binary == 0)  # 4-connected
        for i, contour in enumerate(found):
            if depth(hierarchy[0], i) % 2 == 0:
                continue
            parent = found[hierarchy[0, i, 3]]
            x, y, bw, bh = cv2.boundingRect(contour)
            # the hole: background inside the border's box, not on the box's edge
            inside = holes[y + 1 : y + bh - 1, x + 1 : x + bw - 1]
            ids = set(np.unique(inside[inside > 0]).tolist())
            candidates = [k for k in ids if _box_of(holes == k) == (x + 1, y + 1, bw - 2, bh - 2)]
            for k in candidates:
                ys, xs = np.nonzero(holes == k)
                first = np.argmin(ys * binary.shape[1] + xs)
                above = labels[ys[first] - 1, xs[first]]
                px, py = parent[0, 0]
                if labels[py, px] == above:
                    checked += 1
                    break
            else:
                raise AssertionError("no hole of this border has its component above it")
    assert checked > 500


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_opencv_lists_outer_borders_last_first_pixel_first_without_holes():
    """On a binary image without holes, findContours(RETR_TREE) lists the outer borders by
    their start, the component's first pixel in raster order, from the last to the first:
    the tie order the fast path relies on."""
    rng = np.random.default_rng(14)
    checked = 0
    for _ in range(3000):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        binary = (rng.random((h, w)) < rng.uniform(0.02, 0.5)).astype(np.uint8) * 255
        found, hierarchy = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        if not found or (hierarchy[0, :, 3] != -1).any():
            continue
        starts = [int(c[0, 0, 1]) * w + int(c[0, 0, 0]) for c in found]
        assert starts == sorted(starts, reverse=True)
        checked += len(found) > 1
    assert checked > 1000


def test_opencv_on_the_foreground_box_is_opencv_on_the_map():
    """The fallback traces only the foreground's bounding box: same largest contour's box
    at every level as the reference's full-map call, borders touching the edge included."""
    rng = np.random.default_rng(15)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if trial % 2:
            u8 = (rng.random((h, w)) * 255).astype(np.uint8)
        else:
            u8 = quantize(smooth_map(rng, max(h, w), 5)[:h, :w])
        for t in np.unique(u8)[:-1]:
            x, y, bw, bh = contours._largest_contour_rect(u8 > t)
            assert reference.boxes_at_threshold(u8, int(t), False).tolist() == [
                [x, y, min(x + bw, w - 1), min(y + bh, h - 1)]
            ]


def blobs(*rects: tuple[int, int, int, int], size: tuple[int, int] = (40, 40), value=1.0):
    m = np.zeros(size)
    for x0, y0, x1, y1 in rects:
        m[y0 : y1 + 1, x0 : x1 + 1] = value
    return m


def square_ring(x0: int, y0: int, x1: int, y1: int, m: np.ndarray, value=1.0, width=1):
    m[y0 : y1 + 1, x0 : x1 + 1] = np.maximum(m[y0 : y1 + 1, x0 : x1 + 1], value)
    m[y0 + width : y1 + 1 - width, x0 + width : x1 + 1 - width] = 0
    return m


def diamond(size: int = 9) -> np.ndarray:
    """Four pixels round one background pixel: a hole border as large as the outer one."""
    m = np.zeros((size, size))
    c = size // 2
    m[c - 1, c] = m[c + 1, c] = m[c, c - 1] = m[c, c + 1] = 1.0
    return m


def ties_and_nesting_maps() -> dict[str, np.ndarray]:
    """Maps where the largest contour is decided by ties, holes, nesting or zero areas."""
    rng = np.random.default_rng(16)
    maps = {
        "two_equal_squares": blobs((2, 3, 8, 9), (20, 25, 26, 31)),
        "equal_squares_at_levels": blobs((2, 3, 8, 9), (20, 25, 26, 31))
        + blobs((30, 2, 36, 8), value=0.5) * 0.9,
        "single_pixels": (rng.random((30, 30)) > 0.97).astype(np.float64),
        "lines_and_points": blobs((1, 1, 12, 1), (1, 5, 1, 15), (20, 20, 20, 20), (30, 3, 30, 3)),
        "equal_rings": square_ring(2, 2, 12, 12, square_ring(20, 20, 30, 30, np.zeros((40, 40)))),
        "ring_with_blob_inside": blobs((15, 15, 18, 18)) * 0.5 + square_ring(
            5, 5, 30, 30, np.zeros((40, 40)), width=2
        ),
        "rings_in_rings": square_ring(
            14, 14, 24, 24, square_ring(8, 8, 30, 30, square_ring(2, 2, 36, 36, np.zeros((40, 40))))
        ),
        "diamond_ring": diamond(),
        "thin_ring_beats_heavier_blob": square_ring(2, 2, 26, 26, np.zeros((40, 40)))
        + blobs((29, 29, 39, 39)) * 0.8,
        "heavier_blob_beats_small_ring": square_ring(2, 2, 9, 9, np.zeros((40, 40)))
        + blobs((15, 15, 39, 39)) * 0.8,
        # outer border areas tie (10 x 10) on levels with holes: OpenCV's order decides
        "ring_ties_blob": square_ring(0, 0, 10, 10, np.zeros((40, 40)))
        + blobs((20, 20, 30, 30)),
        "ring_beats_blob_by_its_hole": square_ring(0, 0, 10, 10, np.zeros((40, 40)))
        + blobs((20, 20, 30, 29)),
    }
    # a ramp inside rings: holes open and close level by level
    ramp = np.zeros((40, 40))
    for k in range(8):
        square_ring(2 + 2 * k, 2 + 2 * k, 37 - 2 * k, 37 - 2 * k, ramp, value=1.0 - 0.1 * k)
    maps["nested_ramp"] = ramp
    return maps


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("name", sorted(ties_and_nesting_maps()))
def test_ties_holes_and_nesting_match_reference(name, interval):
    scoremap = ties_and_nesting_maps()[name]
    h, w = scoremap.shape
    rng = np.random.default_rng(17)
    grid = threshold_grid(interval)
    for gt in ([[0, 0, w - 1, h - 1]], [[2, 3, 9, 10]], [[20, 25, 27, 32]], [[29, 29, 39, 39]]):
        gt = np.array(gt)
        largest, every = best_iou_curves(scoremap, gt, grid)
        np.testing.assert_array_equal(
            largest, reference.best_iou_curve(scoremap, gt, interval, False)
        )
        np.testing.assert_array_equal(every, reference.best_iou_curve(scoremap, gt, interval, True))
    gt = random_boxes(rng, w, h)
    np.testing.assert_array_equal(
        best_iou_curve(scoremap, gt, grid, False),
        reference.best_iou_curve(scoremap, gt, interval, False),
    )


def cam_like(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """As the benchmark's maps: bicubic upsampling of a random coarse map, min-max."""
    return smooth_map(rng, size, knots)


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_both_curves_from_one_pass_match_reference(interval):
    """MaxBoxAcc and MaxBoxAccV2 from the shared pass, on random, CAM-like (several sizes
    and knot counts, so holes and competing components), dimmed and degenerate maps."""
    rng = np.random.default_rng(18)
    grid = threshold_grid(interval)
    maps = [DEGENERATE[name] for name in sorted(DEGENERATE)]
    for trial in range(40 if interval == 0.01 else 12):
        kind = trial % 4
        if kind == 0:
            h, w = (int(v) for v in rng.integers(2, 40, 2))
            maps.append(rng.random((h, w)).astype(np.float32))
        elif kind == 1:
            maps.append(cam_like(rng, int(rng.integers(32, 80)), int(rng.integers(5, 15))))
        elif kind == 2:
            maps.append(cam_like(rng, 48, 8) * np.float32(rng.uniform(0.05, 1)))
        else:
            maps.append((cam_like(rng, 40, 6) > 0.5).astype(np.float32) * np.float32(0.7))
    for scoremap in maps:
        h, w = scoremap.shape
        gt = random_boxes(rng, w, h)
        largest, every = best_iou_curves(scoremap, gt, grid)
        np.testing.assert_array_equal(
            largest, reference.best_iou_curve(scoremap, gt, interval, False)
        )
        np.testing.assert_array_equal(every, reference.best_iou_curve(scoremap, gt, interval, True))


def test_cam_like_maps_rarely_need_opencv():
    """On 224 x 224 CAM-like maps the passes decide the largest contour at (nearly) every
    level, including levels where holes change the answer, and agree with OpenCV there."""
    rng = np.random.default_rng(19)
    grid = threshold_grid(0.01)
    left = levels = exact = 0
    for _ in range(12):
        u8 = quantize(cam_like(rng, 224, 14))
        wanted = np.unique(threshold_levels(u8, grid))
        gt = random_boxes(rng, 224, 224)
        order, parent, stats, roots = contours._workspace(224, 224)
        work = (order, contours._padded_order(u8, order), parent, stats, roots)
        _, first_pass = contours._contour_levels(u8.shape, gt, wanted, False, True, work)
        needed = np.zeros(256, dtype=bool)
        needed[wanted] = True
        (_, _, _, bounds_only, _, _), _ = outer_pass(u8, needed, gt)
        exact += int(np.isnan(bounds_only[wanted]).sum() - np.isnan(first_pass).sum())
        left += int(np.isnan(first_pass).sum())
        levels += wanted.size
        for t, iou in zip(wanted, first_pass, strict=True):
            if not np.isnan(iou):
                boxes = reference.boxes_at_threshold(u8, int(t), False)
                assert iou == reference.pairwise_iou(boxes, gt).max()
    assert exact > 0  # the hole-aware pass did decide levels the bounds could not
    assert left <= levels // 100


def test_metrics_accumulator_equals_separate_accumulators_and_reference():
    rng = np.random.default_rng(20)
    maps = [smooth_map(rng, 32, 5) for _ in range(20)] + [rng.random((20, 24)) for _ in range(5)]
    boxes = [random_boxes(rng, m.shape[1], m.shape[0]) for m in maps]
    for interval in (0.01, 0.001):
        both = BoxMetricsAccumulator(interval)
        both.add_many(zip(maps, boxes, strict=True))
        streamed = BoxMetricsAccumulator(interval, workers=2)
        named = [(m, b, f"map {i}") for i, (m, b) in enumerate(zip(maps, boxes, strict=True))]
        streamed.add_stream(iter(named))
        v1, v2 = both.result()
        for multi, curves in ((False, v1), (True, v2)):
            expected = reference.max_box_acc(maps, boxes, interval, multi)
            assert {d: curves.max_accuracy(d) for d in (30, 50, 70)} == expected
            single = BoxAccumulator(interval, multi_contour=multi, workers=1)
            for m, b in zip(maps, boxes, strict=True):
                single.add(m, b)
            for d in (30, 50, 70):
                assert single.result().accuracy[d].tolist() == curves.accuracy[d].tolist()
        assert [c.accuracy[50].tolist() for c in streamed.result()] == [
            v1.accuracy[50].tolist(), v2.accuracy[50].tolist()
        ]
        assert both.images == streamed.images == len(maps)


def test_stream_reports_the_first_failing_map_in_order():
    good = np.zeros((6, 6))
    box = np.array([[0, 0, 1, 1]])

    def items(fail_at: int, bad_at: int):
        for i in range(12):
            if i == fail_at:
                raise FileNotFoundError(f"no map {i}")
            yield (np.full((6, 6), np.nan) if i == bad_at else good), box, f"map {i}"

    for workers in (1, 2):
        with pytest.raises(ValueError, match="map 3: contains NaN"):
            BoxMetricsAccumulator(workers=workers).add_stream(items(fail_at=5, bad_at=3))
        with pytest.raises(FileNotFoundError, match="no map 5"):
            BoxMetricsAccumulator(workers=workers).add_stream(items(fail_at=5, bad_at=7))


def test_one_pass_check_and_quantize_equal_numpy():
    """`checked_levels` (one compiled pass for float32/float64 maps) gives quantize's uint8
    map and threshold_levels' cut-offs bit for bit, on values at the uint8 steps too, and
    raises check_scoremap's errors."""
    from wsol.scoring.grid import checked_levels

    rng = np.random.default_rng(21)
    steps = np.arange(256) / 255
    for interval in (0.01, 0.001):
        grid = threshold_grid(interval)
        for trial in range(200):
            dtype = (np.float32, np.float64, np.float16, ">f4")[trial % 4]
            h, w = (int(v) for v in rng.integers(1, 30, 2))
            m = rng.random((h, w)) ** rng.uniform(0.2, 4)
            if trial % 3 == 0:
                m = rng.choice(np.concatenate([steps, np.nextafter(steps, 0)]), (h, w))
            m = m.astype(dtype) * np.asarray(rng.random() if trial % 5 == 0 else 1, dtype)
            if trial % 7 == 0:
                m = np.asfortranarray(m)
            if trial % 11 == 0:
                m = m[::2, ::-1]
            u8, levels = checked_levels(m, grid)
            assert np.array_equal(u8, quantize(m))
            assert np.array_equal(levels, threshold_levels(quantize(m), grid))
    for bad, message in ((np.full((3, 3), np.nan, np.float32), "NaN"),
                         (np.full((3, 3), -0.5), r"\[0, 1\]"),
                         (np.zeros((3, 3), np.uint8), "floating")):
        with pytest.raises(ValueError, match=message):
            checked_levels(bad, threshold_grid(0.01), "m")
