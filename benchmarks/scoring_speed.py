"""MaxBoxAccV2 and PxAP: this project's evaluator against the straightforward one.

Same maps, same boxes, results checked equal; prints and writes machine-readable JSON.
Run: .venv/bin/python benchmarks/scoring_speed.py --json benchmarks/results/scoring_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cam_like_maps, write_result
from wsol.scoring import reference
from wsol.scoring.boxes import BoxAccumulator
from wsol.scoring.pxap import PxAPAccumulator


def best_time(run, repeats: int = 3) -> float:
    """Shortest of a few runs: the machine's other load only ever adds time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def box_speed(maps: np.ndarray, boxes: list[np.ndarray], interval: float, ref_maps: int) -> dict:
    pairs = list(zip(maps, boxes, strict=True))
    BoxAccumulator(interval).add_many(pairs[:2])  # compile once, outside the timing
    fast = best_time(lambda: BoxAccumulator(interval, workers=2).add_many(pairs)) / len(maps)
    one_thread = best_time(lambda: BoxAccumulator(interval, workers=1).add_many(pairs))
    one_thread /= len(maps)
    slow = best_time(
        lambda: reference.max_box_acc(maps[:ref_maps], boxes[:ref_maps], interval, True)
    ) / ref_maps
    expected = reference.max_box_acc(maps[:ref_maps], boxes[:ref_maps], interval, True)
    check = BoxAccumulator(interval)
    check.add_many(pairs[:ref_maps])
    same = {d: check.result().max_accuracy(d) for d in (30, 50, 70)} == expected
    return {"interval": interval, "maps": len(maps), "reference_maps": ref_maps,
            "ms_per_map_fast": fast * 1e3, "ms_per_map_fast_one_thread": one_thread * 1e3,
            "ms_per_map_reference": slow * 1e3, "speedup": slow / fast,
            "speedup_one_thread": slow / one_thread, "same_result": same}


def pxap_speed(count: int, interval: float) -> dict:
    maps = cam_like_maps(count, seed=1)
    rng = np.random.default_rng(2)
    gt = (maps > 0.5).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.05] = 255
    warm = PxAPAccumulator(interval)
    warm.add(maps[:2], gt[:2])
    acc = PxAPAccumulator(interval)
    start = time.perf_counter()
    for i in range(0, count, 500):
        acc.add(maps[i:i + 500], gt[i:i + 500])
    fast = time.perf_counter() - start
    ref_count = min(count, 500)
    start = time.perf_counter()
    expected = reference.pxap(list(maps[:ref_count]), list(gt[:ref_count]), interval)
    slow = (time.perf_counter() - start) * count / ref_count
    check = PxAPAccumulator(interval)
    check.add(maps[:ref_count], gt[:ref_count])
    result = {"interval": interval, "maps": count, "seconds_fast": fast,
              "seconds_reference_extrapolated": slow, "speedup": slow / fast,
              "same_result": check.result().pxap == expected}
    if torch.cuda.is_available():
        device_maps = torch.from_numpy(maps).cuda()
        device_gt = torch.from_numpy(gt).cuda()
        gpu = PxAPAccumulator(interval)
        torch.cuda.synchronize()
        start = time.perf_counter()
        gpu.add(device_maps, device_gt)
        torch.cuda.synchronize()
        result["seconds_gpu"] = time.perf_counter() - start
        result["gpu_same_result"] = gpu.result().pxap == acc.result().pxap
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=200)
    parser.add_argument("--pxap-maps", type=int, default=5000)
    parser.add_argument("--json")
    args = parser.parse_args()
    maps = cam_like_maps(args.maps)
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(args.maps):
        x0, y0 = rng.integers(0, 150, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(20, 74), y0 + rng.integers(20, 74)]]))
    write_result(args.json, "scoring_speed", {
        "maxboxaccv2": [box_speed(maps, boxes, 0.01, 40), box_speed(maps, boxes, 0.001, 8)],
        "pxap": [pxap_speed(args.pxap_maps, 0.01), pxap_speed(args.pxap_maps, 0.001)],
    })


if __name__ == "__main__":
    main()
