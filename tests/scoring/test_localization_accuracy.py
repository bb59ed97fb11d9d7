"""Top-1 / Top-5 / GT-known Loc on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from wsol.scoring.localization import LocalizationAccuracy


def blob(x0: int, y0: int, x1: int, y1: int, size: int = 20) -> np.ndarray:
    m = np.zeros((size, size))
    m[y0:y1 + 1, x0:x1 + 1] = 1.0
    return m


def test_top_k_and_gt_known():
    acc = LocalizationAccuracy(threshold=0.5)
    gt = np.array([[4, 4, 11, 11]])
    acc.add(blob(4, 4, 11, 11), gt, label=3, ranked_classes=[3, 1, 2, 0, 4])  # all three
    acc.add(blob(4, 4, 11, 11), gt, label=3, ranked_classes=[1, 3, 2, 0, 4])  # top-5, gt-known
    acc.add(blob(4, 4, 11, 11), gt, label=3, ranked_classes=[1, 2, 0, 4, 5, 3])  # gt-known only
    acc.add(blob(15, 15, 19, 19), gt, label=3, ranked_classes=[3, 1, 2, 0, 4])  # box is wrong
    assert acc.result() == {"top1_loc": 25.0, "top5_loc": 50.0, "gt_known_loc": 75.0}


def test_threshold_is_fixed_not_searched():
    m = blob(4, 4, 11, 11) * 0.3 + blob(0, 0, 19, 19) * 0.2  # object at 0.5, background 0.2
    gt = np.array([[4, 4, 11, 11]])
    low, high = LocalizationAccuracy(threshold=0.1), LocalizationAccuracy(threshold=0.6)
    low.add(m, gt, 0, [0, 1, 2, 3, 4])
    high.add(m, gt, 0, [0, 1, 2, 3, 4])
    assert low.result()["gt_known_loc"] == 0.0 and high.result()["gt_known_loc"] == 100.0


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        LocalizationAccuracy(threshold=1.0)


@pytest.mark.parametrize("multi_contour", [False, True])
def test_fixed_threshold_box_matches_reference(multi_contour):
    """One threshold: the largest contour comes straight from OpenCV (cheaper than a pass
    for so few levels); both boxes as the reference's at that threshold."""
    from wsol.scoring import reference
    from wsol.scoring.boxes import best_iou_curve

    rng = np.random.default_rng(4)
    for trial in range(40):
        size = int(rng.integers(3, 40))
        m = rng.random((size, size)) ** float(rng.uniform(0.3, 3))
        if trial % 2:
            m = blob(2, 3, min(12, size - 1), min(9, size - 1), size) * 0.6 + m * 0.4
        gt = np.array([[int(v) for v in sorted(rng.integers(0, size, 2))] * 2])[:, [0, 2, 1, 3]]
        threshold = float(rng.choice([0.0, 0.2, 0.5, 0.9]))
        got = best_iou_curve(m, gt, np.array([threshold]), multi_contour)[0]
        u8 = (m * 255).astype(np.uint8)
        boxes = reference.boxes_at_threshold(u8, int(threshold * u8.max()), multi_contour)
        assert got == reference.pairwise_iou(boxes, gt).max()
