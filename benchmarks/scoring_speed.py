"""The evaluator against the straightforward (reference) one: whole `wsol score`, each box
metric and PxAP.

- `wsol score` end to end (every metric it prints: MaxBoxAcc, MaxBoxAccV2, BoxAccV2@30/50/70)
  on a box split of 224 x 224 CAM-like maps saved as .npy: the command runs as a process on
  two split sizes, and the difference of the times over the difference of the sizes is the
  marginal cost per map (process start, imports and JIT-cache loading cancel out). The
  reference computes the same numbers in process (a loop over maps with no start-up cost):
  np.load, then one OpenCV pass per threshold for the largest contour (MaxBoxAcc) and one for
  all contours (MaxBoxAccV2). The command's JSON is checked equal to the reference's numbers
  on the reference's maps.
- MaxBoxAcc and MaxBoxAccV2 separately, in process, ours on one thread and on two.
- PxAP.

A trial's per-epoch train-fullsup evaluation (normalisation search and scoring) is measured
by benchmarks/evaluation_cost.py.

Reference and ours alternate within each repetition and the best of the repetitions is kept
(the machine is shared: other load only ever adds time); the load average is recorded. Every
time is given as wall-clock and as CPU time (`cpu_` keys: user + system of all threads, so
two threads cost the sum of both); on a busy machine CPU time compares the work done.
Run: .venv/bin/python benchmarks/scoring_speed.py --json benchmarks/results/scoring_speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best, cam_like_maps, load_average, random_boxes, timed, write_result
from wsol.common.protocol import IOU_THRESHOLDS
from wsol.data.metadata import load_split
from wsol.scoring import reference
from wsol.scoring.boxes import BoxAccumulator, BoxMetricsAccumulator
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.saved_maps import score_saved_maps

SIZE = 224


# --- wsol score, end to end ------------------------------------------------------------


def write_split(root: Path, count: int, boxes: list[np.ndarray]) -> Path:
    """A box split `val` of `count` 224 x 224 images (ids img/00000.png ...), metadata only."""
    boxes = boxes[:count]
    folder = root / f"meta{count}" / "val"
    folder.mkdir(parents=True)
    ids = [f"img/{i:05d}.png" for i in range(count)]
    (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (folder / "class_labels.txt").write_text("".join(f"{i},0\n" for i in ids))
    (folder / "image_sizes.txt").write_text("".join(f"{i},{SIZE},{SIZE}\n" for i in ids))
    lines = [f"{i},{','.join(str(v) for v in b[0])}\n" for i, b in zip(ids, boxes, strict=True)]
    (folder / "localization.txt").write_text("".join(lines))
    return folder.parent


def wsol_score(maps: Path, metadata: Path, interval: float, out: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, all threads) of one `wsol score` process."""
    command = [
        str(Path(sys.executable).with_name("wsol")), "score", "--scoremaps", str(maps),
        "--metadata-root", str(metadata), "--split", "val", "--curve-interval", str(interval),
        "--json", str(out),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def reference_score(paths: list[Path], boxes: list[np.ndarray], interval: float) -> dict:
    """The reference computing what `wsol score` prints: per map, load it, then MaxBoxAcc's
    and MaxBoxAccV2's curves by one OpenCV call per threshold each."""
    count = len(paths)
    v1 = {d: 0 for d in IOU_THRESHOLDS}
    v2 = {d: 0 for d in IOU_THRESHOLDS}
    for path, gt in zip(paths, boxes, strict=True):
        scoremap = np.load(path)
        c1 = reference.best_iou_curve(scoremap, gt, interval, False)
        c2 = reference.best_iou_curve(scoremap, gt, interval, True)
        for d in IOU_THRESHOLDS:
            v1[d] = v1[d] + (c1 >= d / 100)
            v2[d] = v2[d] + (c2 >= d / 100)
    acc1 = {d: float((v1[d] * 100.0 / count).max()) for d in IOU_THRESHOLDS}
    acc2 = {d: float((v2[d] * 100.0 / count).max()) for d in IOU_THRESHOLDS}
    return {"MaxBoxAcc": acc1[50], "MaxBoxAccV2": float(np.mean(list(acc2.values()))),
            **{f"BoxAccV2@{d}": acc2[d] for d in IOU_THRESHOLDS}}


def command_speed(interval: float, sizes: tuple[int, int], ref_maps: int, repeats: int) -> dict:
    small, large = sizes
    boxes = random_boxes(large, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        maps = cam_like_maps(large)
        paths = []
        for i, scoremap in enumerate(maps):
            path = root / "maps" / "img" / f"{i:05d}.png.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, scoremap)
            paths.append(path)
        meta = {n: write_split(root, n, boxes) for n in (small, large, ref_maps)}
        out = root / "out.json"
        wsol_score(root / "maps", meta[ref_maps], interval, out)  # JIT caches, disk cache
        ours = json.loads(out.read_text())
        split = load_split(meta[small], "val")
        score_saved_maps(root / "maps", split, interval=interval)  # this process's JIT
        times: dict[str, list[tuple[float, float]]] = {
            "small": [], "large": [], "reference": [], "one_worker": [], "two_workers": []}
        expected: dict = {}
        for _ in range(repeats):
            times["small"].append(wsol_score(root / "maps", meta[small], interval, out))
            times["reference"].append(timed(lambda: expected.update(
                reference_score(paths[:ref_maps], boxes[:ref_maps], interval))))
            times["large"].append(wsol_score(root / "maps", meta[large], interval, out))
            for workers, key in ((1, "one_worker"), (2, "two_workers")):
                times[key].append(timed(lambda w=workers: score_saved_maps(
                    root / "maps", split, interval=interval, workers=w)))
    result: dict = {"interval": interval, "sizes": list(sizes), "reference_maps": ref_maps}
    keys = ("MaxBoxAcc", "MaxBoxAccV2", *(f"BoxAccV2@{d}" for d in IOU_THRESHOLDS))
    for i, clock in enumerate(("", "cpu_")):
        small_s, large_s = best(times["small"])[i], best(times["large"])[i]
        # the start-up's wall time varies by more than the maps cost on a busy machine: the
        # median of each repetition's difference; CPU time is steady, the best of each size
        differences = [b[i] - a[i] for a, b in zip(times["small"], times["large"], strict=True)]
        marginal = float(np.median(differences)) if clock == "" else large_s - small_s
        ours_ms = marginal / (large - small) * 1e3
        ref_ms = best(times["reference"])[i] / ref_maps * 1e3
        one_ms = best(times["one_worker"])[i] / small * 1e3
        two_ms = best(times["two_workers"])[i] / small * 1e3
        result.update({
            f"{clock}seconds_small": small_s, f"{clock}seconds_large": large_s,
            f"{clock}ms_per_map": ours_ms, f"{clock}ms_per_map_reference": ref_ms,
            f"{clock}speedup": ref_ms / ours_ms,
            # the command's work in this process (score_saved_maps on the small split): no
            # start-up to subtract, and the worker count chosen
            f"{clock}ms_per_map_in_process_one_worker": one_ms,
            f"{clock}ms_per_map_in_process_two_workers": two_ms,
            f"{clock}speedup_in_process_one_worker": ref_ms / one_ms,
            f"{clock}speedup_in_process_two_workers": ref_ms / two_ms,
        })
    result["same_result"] = all(ours[k] == expected[k] for k in keys)
    result["load_average"] = load_average()
    return result


# --- each box metric, in process -------------------------------------------------------


def metric_speed(maps: np.ndarray, boxes: list[np.ndarray], interval: float, ref_maps: int,
                 repeats: int) -> dict:
    pairs = list(zip(maps, boxes, strict=True))
    ref_pairs = pairs[:ref_maps]
    BoxMetricsAccumulator(interval).add_many(pairs[:2])  # compile once, outside the timing
    # per metric, ours on one thread and on two, then the reference (MaxBoxAcc, MaxBoxAccV2)
    accumulators: dict[str, Callable[[int], BoxAccumulator | BoxMetricsAccumulator]] = {
        "maxboxacc": lambda workers: BoxAccumulator(interval, False, workers=workers),
        "maxboxaccv2": lambda workers: BoxAccumulator(interval, True, workers=workers),
        "both": lambda workers: BoxMetricsAccumulator(interval, workers=workers),
    }
    runs: dict[str, tuple[Callable[[], object], int]] = {}
    for metric, accumulator in accumulators.items():
        for workers, threads in ((1, "one_thread"), (2, "two_threads")):
            runs[f"{metric}_{threads}"] = (
                lambda make=accumulator, w=workers: make(w).add_many(pairs), len(pairs))
        if metric != "both":
            runs[f"{metric}_reference"] = (
                lambda v2=metric == "maxboxaccv2": [
                    reference.best_iou_curve(m, b, interval, v2) for m, b in ref_pairs],
                ref_maps)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, _count) in runs.items():
            times[name].append(timed(run))
    result: dict = {"interval": interval, "maps": len(pairs), "reference_maps": ref_maps}
    for i, clock in enumerate(("", "cpu_")):
        per_map = {name: best(times[name])[i] / count for name, (_, count) in runs.items()}
        result.update({f"{clock}ms_per_map_{name}": v * 1e3 for name, v in per_map.items()})
        for metric in ("maxboxacc", "maxboxaccv2"):
            for threads in ("one_thread", "two_threads"):
                result[f"{clock}speedup_{metric}_{threads}"] = (
                    per_map[f"{metric}_reference"] / per_map[f"{metric}_{threads}"])
        for threads in ("one_thread", "two_threads"):
            reference_both = per_map["maxboxacc_reference"] + per_map["maxboxaccv2_reference"]
            result[f"{clock}speedup_both_{threads}"] = (
                reference_both / per_map[f"both_{threads}"])
    both = BoxMetricsAccumulator(interval)
    both.add_many(ref_pairs)
    for metric, curves in zip(("maxboxacc", "maxboxaccv2"), both.result(), strict=True):
        expected = reference.max_box_acc(
            maps[:ref_maps], boxes[:ref_maps], interval, metric == "maxboxaccv2")
        check = BoxAccumulator(interval, metric == "maxboxaccv2")
        check.add_many(ref_pairs)
        result[f"same_result_{metric}"] = (
            {d: check.result().max_accuracy(d) for d in IOU_THRESHOLDS} == expected
            == {d: curves.max_accuracy(d) for d in IOU_THRESHOLDS})
    result["load_average"] = load_average()
    return result


# --- PxAP ------------------------------------------------------------------------------


def pxap_speed(count: int, interval: float, repeats: int = 3) -> dict:
    maps = cam_like_maps(count, seed=1)
    rng = np.random.default_rng(2)
    gt = (maps > 0.5).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.05] = 255
    warm = PxAPAccumulator(interval)
    warm.add(maps[:2], gt[:2])
    ref_count = min(count, 500)
    accumulators: list[PxAPAccumulator] = []
    expected: list[float] = []

    def fast_run() -> None:
        accumulators.append(PxAPAccumulator(interval))
        for i in range(0, count, 500):
            accumulators[-1].add(maps[i:i + 500], gt[i:i + 500])

    fast_times, slow_times = [], []
    for _ in range(repeats):
        fast_times.append(timed(fast_run))
        slow_times.append(timed(lambda: expected.append(
            reference.pxap(list(maps[:ref_count]), list(gt[:ref_count]), interval))))
    fast = best(fast_times)[0]
    slow = best(slow_times)[0] * count / ref_count
    check = PxAPAccumulator(interval)
    check.add(maps[:ref_count], gt[:ref_count])
    acc = accumulators[-1]
    result = {"interval": interval, "maps": count, "seconds_fast": fast,
              "seconds_reference_extrapolated": slow, "speedup": slow / fast,
              "same_result": check.result().pxap == expected[-1], "load_average": load_average()}
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
    parser.add_argument("--maps", type=int, default=200, help="maps for the per-metric runs")
    parser.add_argument("--sizes", type=int, nargs=2, default=(200, 1000),
                        help="split sizes of the two `wsol score` runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pxap-maps", type=int, default=5000)
    parser.add_argument("--json")
    args = parser.parse_args()
    maps = cam_like_maps(args.maps)
    boxes = random_boxes(args.maps, seed=3)
    sizes = tuple(args.sizes)
    write_result(args.json, "scoring_speed", {
        "load_average_start": load_average(),
        "wsol_score": [
            command_speed(0.01, sizes, 40, args.repeats),  # type: ignore[arg-type]
            command_speed(0.001, sizes, 8, args.repeats),  # type: ignore[arg-type]
        ],
        "box_metrics": [
            metric_speed(maps, boxes, 0.01, 40, args.repeats),
            metric_speed(maps, boxes, 0.001, 8, args.repeats),
        ],
        "pxap": [pxap_speed(args.pxap_maps, 0.01, args.repeats),
                 pxap_speed(args.pxap_maps, 0.001, args.repeats)],
    })


if __name__ == "__main__":
    main()
