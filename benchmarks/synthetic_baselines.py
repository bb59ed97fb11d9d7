"""Trivial predictors on the synthetic benchmark: the floor any method must clear.

Whole-image map and a centred Gaussian, scored with the project's evaluator on val
(train-fullsup) and test. These predictors have no parameters, so reading test selects
nothing. Run: .venv/bin/python benchmarks/synthetic_baselines.py --data-root data/synthetic-demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.data.datasets import EvalDataset
from wsol.data.metadata import load_split
from wsol.data.transforms import eval_transform
from wsol.scoring.boxes import BoxAccumulator
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.report import box_metrics, mask_metrics


def predictors(size: int) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    sigma = size / 4
    return {
        "whole_image": np.ones((size, size), np.float32),
        "centred_gaussian": np.exp(-(xx**2 + yy**2) / (2 * sigma**2)).astype(np.float32),
    }


def score(data: EvalDataset, scoremap: np.ndarray) -> dict[str, float]:
    size = scoremap.shape[::-1]
    v1, v2, pxap = BoxAccumulator(multi_contour=False), BoxAccumulator(), PxAPAccumulator()
    for index in range(len(data)):
        boxes = data.gt_boxes(index, size)
        v1.add(scoremap, boxes)
        v2.add(scoremap, boxes)
        pxap.add(scoremap, data.gt_mask(index, size))
    return {**box_metrics(v1.result(), v2.result()), **mask_metrics(pxap.result())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--size", type=int, default=64, help="score-map resolution")
    parser.add_argument("--json")
    args = parser.parse_args()
    root = Path(args.data_root)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for split_name in ("val", "test"):
        split = load_split(root / "metadata", split_name)
        data = EvalDataset(split, root, eval_transform(args.size), allow_test=True)
        for name, scoremap in predictors(args.size).items():
            results.setdefault(name, {})[split_name] = score(data, scoremap)
    write_result(args.json, "synthetic_baselines", {"data_root": str(root), "size": args.size,
                                                    "results": results})


if __name__ == "__main__":
    main()
