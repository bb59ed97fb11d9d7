"""What a trial's per-epoch train-fullsup evaluation costs, against training (issues 14, 28).

- CUB-sized: 1,000 raw 28 x 28 maps resized to 224 x 224 with boxes and 200-class logits,
  the default normalisation candidates of wsol/common/protocol.py (minmax, max, pas@90,
  eleven ivr percentiles), interval 0.01, on two kinds of maps: `random` (bicubic
  upsampling of 7 x 7 uniform noise: many components and holes) and `cam` (one to three
  smooth Gaussian blobs on a weak smooth background, with mild noise: what CAMs look like).
  Timed: the normalisation search, then the scoring of the chosen one (MaxBoxAcc,
  MaxBoxAccV2, Loc with the selected threshold), as the trial runner calls them:
  `select_and_score` where the tree has it (every candidate from one pass per map, min-max's
  numbers too), else `select_normalisation` then `score_split`. Inference excluded.
- ILSVRC-sized (`--ilsvrc-maps 10000`: `cam` maps, 1000-class logits): the same, once (the
  baseline at 2 threads only: it takes minutes).
- The demo (`configs/synthetic-tiny.yaml`, cam, data/synthetic-demo): seconds of each
  training epoch against its evaluation (inference, then selection and scoring).
- `profile` (trees with `wsol.scoring.joint`): CPU milliseconds per map of each step of the
  one-pass scoring on 128 maps of each kind, one thread: what bounds it.

Every measurement runs at 1 and at 2 threads (`threads_1`, `threads_2`): the process is
pinned to that many CPUs (`os.sched_setaffinity`, which the scoring reads as the trial's
CPUs) and torch gets as many threads. `--baseline DIR` runs the same measurements on another
source tree (e.g. the commit before a change, `git archive <commit> wsol | tar -x -C DIR`)
in a subprocess, records them under `before` and checks that both give the same numbers.
Times are best of `--repeats`, as wall-clock and as CPU time (`cpu_`: user + system of all
threads).
Run: nice .venv/bin/python benchmarks/evaluation_cost.py --baseline /tmp/wsol-before \\
    --ilsvrc-maps 10000 --json benchmarks/results/evaluation_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the benchmark helpers import no wsol code: with --tree, wsol still comes from that tree
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best, load_average, random_boxes, timed, write_result

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
KINDS = ("random", "cam")


class _BoxTargets:
    """What the evaluation reads of `wsol.trial.evaluation.Targets`."""

    has_boxes, has_masks = True, False

    def __init__(self, boxes: list[np.ndarray]):
        self.size = (SIZE, SIZE)
        self._boxes = boxes

    def boxes(self, index: int) -> np.ndarray:
        return self._boxes[index]


def raw_maps(kind: str, count: int, raw_size: int, seed: int) -> torch.Tensor:
    """Raw (not normalised) maps at feature-map resolution, as a sum of activations."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        coarse = torch.from_numpy(rng.random((count, 1, 7, 7)).astype(np.float32))
        raw = torch.nn.functional.interpolate(coarse, size=(raw_size, raw_size),
                                              mode="bicubic")
        return (raw[:, 0] * 40.0 - 10.0).contiguous()
    yy, xx = np.mgrid[0:raw_size, 0:raw_size].astype(np.float32)
    coarse = torch.from_numpy(rng.random((count, 1, 4, 4)).astype(np.float32))
    background = torch.nn.functional.interpolate(coarse, size=(raw_size, raw_size),
                                                 mode="bicubic")[:, 0].numpy() * 3.0 - 1.0
    maps = background + rng.normal(0.0, 0.3, (count, raw_size, raw_size))
    for m in maps:
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, raw_size, 2)
            sy, sx = rng.uniform(raw_size / 14, raw_size / 4, 2)
            m += rng.uniform(5, 30) * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2)
                                               + (xx - cx) ** 2 / (2 * sx ** 2)))
    return torch.from_numpy(maps.astype(np.float32))


def _evaluate(batches: list, targets: Any, metric: str, config: Any) -> Any:
    """The train-fullsup evaluation as this tree's trial runner runs it: the chosen
    normalisation's SplitScore, its `candidates` holding every candidate's score."""
    from wsol.trial import evaluation

    if hasattr(evaluation, "select_and_score"):
        return evaluation.select_and_score(batches, targets, metric, config).scored
    chosen, per_candidate = evaluation.select_normalisation(batches, targets, metric, config)
    scored = evaluation.score_split(batches, targets, chosen, config.curve_interval)
    scored.candidates = per_candidate
    return scored


def sized(kind: str, count: int, classes: int, repeats: int) -> dict[str, Any]:
    """A CUB- or ILSVRC-sized train-fullsup evaluation of `count` maps of one kind."""
    from wsol.trial.config import TrialConfig
    from wsol.trial.evaluation import RawBatch, candidates

    config, batch = TrialConfig(), 64
    rng = np.random.default_rng(5)
    raw = raw_maps(kind, count, 28, seed=4)
    logits = torch.from_numpy(rng.normal(size=(count, classes)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, classes, count))
    batches = [
        RawBatch(raw[i:i + batch], logits[i:i + batch], labels[i:i + batch],
                 torch.arange(i, min(i + batch, count)))
        for i in range(0, count, batch)
    ]
    targets = _BoxTargets(random_boxes(count, seed=6))
    _evaluate(batches[:1], targets, "MaxBoxAccV2", config)  # warm up (JIT)
    scored: list = []
    runs = [timed(lambda: scored.append(_evaluate(batches, targets, "MaxBoxAccV2", config)))
            for _ in range(repeats)]
    wall, cpu = best(runs)
    last = scored[-1]
    return {
        "maps": count, "map_size": SIZE, "raw_map_size": 28, "batch_size": batch,
        "curve_interval": config.curve_interval,
        "candidates": [c.label for c in candidates(config)],
        "seconds_total": wall, "cpu_seconds_total": cpu,
        "cpu_milliseconds_per_map": cpu * 1000.0 / count,
        "result": {"chosen": last.normalisation.label, "candidate_scores": last.candidates,
                   "metrics": last.metrics, "threshold": last.threshold},
    }


def profile(kind: str, count: int = 128) -> dict[str, float] | None:
    """CPU milliseconds per map of each step of the one-pass scoring (one thread), or None
    in a tree without it."""
    try:
        from wsol.scoring import contours, joint
    except ImportError:
        return None
    from wsol.scoring.grid import threshold_grid
    from wsol.scoring.normalize import Normaliser, resize
    from wsol.trial.config import TrialConfig
    from wsol.trial.evaluation import candidates

    chosen = candidates(TrialConfig())
    raw = raw_maps(kind, count, 28, seed=4)
    gt = random_boxes(count, seed=6)
    joint.CandidateCurves(chosen, workers=1).add(raw[:2], (SIZE, SIZE), gt[:2])  # JIT
    steps = dict.fromkeys(("resize", "sort", "constants", "cuts", "classes", "order",
                           "contour_passes"), 0.0)
    clock = time.process_time()

    def step(name: str) -> None:
        nonlocal clock
        now = time.process_time()
        steps[name] += now - clock
        clock = now

    maps = resize(raw, (SIZE, SIZE))
    step("resize")
    values = torch.from_numpy(np.sort(maps.flatten(-2).numpy(), axis=-1))
    step("sort")
    normaliser = Normaliser.presorted(maps, values)
    params = joint._Params.of(normaliser, chosen)
    step("constants")
    grid = threshold_grid(0.01)
    n, levels = values.shape[1], 0
    for i in range(count):
        cuts = np.empty((len(chosen), grid.size), np.int64)
        joint._cuts(values[i].numpy(), params.shift[i], params.divisor[i], params.clip[i],
                    params.zero[i], grid, np.zeros(0), cuts,
                    np.empty((len(chosen), 0), np.int64))
        union = joint._union(cuts, cuts[:, :0], n)
        levels += union.size
        step("cuts")
        classes = np.zeros((SIZE, SIZE), np.int32)
        joint._rank_classes(normaliser.maps[i].numpy(), values[i].numpy()[union], classes)
        step("classes")
        order, parent, stats, roots = contours._workspace(SIZE, SIZE)
        work = (order, contours._padded_order(classes, order, union.size + 1), parent, stats,
                roots)
        step("order")
        contours._contour_levels((SIZE, SIZE), np.asarray(gt[i], dtype=np.int64),
                                 np.searchsorted(union, cuts[cuts < n]), True, True, work)
        step("contour_passes")
    out = {f"cpu_ms_per_map_{k}": v * 1000.0 / count for k, v in steps.items()}
    out["levels_per_map"] = levels / count
    return out


def _timed_evaluation(trial: Any) -> dict[str, Any]:
    """Trial._evaluate's steps, each timed: inference, then selection and scoring."""
    from torch.utils.data import DataLoader

    from wsol.trial.evaluation import infer

    config = trial.config
    loader = DataLoader(trial.val_data, batch_size=config.batch_size,
                        num_workers=config.num_workers)
    batches: list = []
    scored: list = []
    record: dict[str, Any] = {
        "inference": timed(lambda: batches.extend(infer(trial.method, loader, trial.device))),
        "selection_and_scoring": timed(lambda: scored.append(
            _evaluate(batches, trial.targets, trial.metric, config))),
    }
    record["metrics"] = scored[-1].metrics
    return record


def demo_epochs(config_path: Path, data_root: Path, epochs: int) -> dict[str, Any]:
    """Each epoch of a demo cam trial: its training, then its train-fullsup evaluation as
    the trial runner runs it; medians over the epochs after the first (which also compiles
    and warms caches)."""
    from wsol.trial.config import load_config
    from wsol.trial.runner import Trial

    config = load_config(config_path, {"method": "cam", "data_root": str(data_root), "seed": 0,
                                       "epochs": epochs})
    records = []
    with tempfile.TemporaryDirectory() as out:
        trial = Trial(config, out, log=lambda _: None)
        for epoch in range(epochs):
            train = timed(partial(trial._train_epoch, epoch))
            records.append({"epoch": epoch, "train": train, **_timed_evaluation(trial)})
    rows = records[1:] or records
    result: dict[str, Any] = {"config": str(config_path.relative_to(ROOT)), "method": "cam",
                              "epochs": epochs, "train_images": len(trial.train_data),
                              "train_fullsup_images": len(trial.val_data),
                              "eval_size": config.eval_size, "epochs_timed": records}
    for i, clock in enumerate(("", "cpu_")):
        train_s = float(np.median([r["train"][i] for r in rows]))
        evaluation = float(np.median(
            [r["inference"][i] + r["selection_and_scoring"][i] for r in rows]))
        result.update({f"{clock}seconds_train_epoch": train_s,
                       f"{clock}seconds_evaluation": evaluation,
                       f"{clock}evaluation_share_of_epoch": evaluation / (train_s + evaluation),
                       f"{clock}evaluation_over_training": evaluation / train_s})
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement at 1 and at 2 threads (pinned CPUs, torch threads)."""
    everything = sorted(os.sched_getaffinity(0))
    out: dict[str, Any] = {
        "source": str(Path(args.tree).resolve()) if args.tree else str(ROOT),
        "load_average": load_average(),
    }
    for threads in (1, 2):
        os.sched_setaffinity(0, everything[:threads])
        torch.set_num_threads(threads)
        row: dict[str, Any] = {"cub_sized": {kind: sized(kind, args.maps, 200, args.repeats)
                                             for kind in KINDS}}
        if threads == 1:
            row["profile"] = {kind: profile(kind) for kind in KINDS}
        if args.ilsvrc_maps and threads in args.ilsvrc_threads:
            row["ilsvrc_sized"] = sized("cam", args.ilsvrc_maps, 1000, 1)
        if args.epochs:
            row["demo"] = demo_epochs(Path(args.config).resolve(),
                                      Path(args.data_root).resolve(), args.epochs)
        out[f"threads_{threads}"] = row
    os.sched_setaffinity(0, everything)
    out["load_average_after"] = load_average()
    return out


def _same(before: dict[str, Any], after: dict[str, Any]) -> dict[str, bool]:
    """Whether both trees chose the same and gave the same numbers, per measurement."""
    same: dict[str, bool] = {}
    for threads in ("threads_1", "threads_2"):
        b, a = before[threads], after[threads]
        for kind in KINDS:
            same[f"{threads}/cub_sized/{kind}"] = (b["cub_sized"][kind]["result"]
                                                   == a["cub_sized"][kind]["result"])
        if "ilsvrc_sized" in b and "ilsvrc_sized" in a:
            same[f"{threads}/ilsvrc_sized"] = (b["ilsvrc_sized"]["result"]
                                               == a["ilsvrc_sized"]["result"])
        if "demo" in b and "demo" in a:
            same[f"{threads}/demo"] = ([r["metrics"] for r in b["demo"]["epochs_timed"]]
                                       == [r["metrics"] for r in a["demo"]["epochs_timed"]])
    return same


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="demo epochs (0: no demo)")
    parser.add_argument("--ilsvrc-maps", type=int, default=0,
                        help="also an ILSVRC-sized run of this many maps (10000)")
    parser.add_argument("--ilsvrc-threads", type=int, nargs="+", default=[1, 2],
                        help="the thread counts of the ILSVRC-sized run (the baseline's: 2)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "synthetic-tiny.yaml"))
    parser.add_argument("--data-root", default=str(ROOT / "data" / "synthetic-demo"))
    parser.add_argument("--baseline", help="another source tree, measured first, as `before`")
    parser.add_argument("--tree", help=argparse.SUPPRESS)  # the subprocess's source tree
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.path.insert(0, args.tree or str(ROOT))
    if args.tree:
        print(json.dumps(measure(args)))
        return
    payload: dict[str, Any] = {}
    if args.baseline:
        command = [sys.executable, __file__, "--tree", args.baseline, "--maps", str(args.maps),
                   "--repeats", str(args.repeats), "--epochs", str(args.epochs),
                   "--ilsvrc-maps", str(args.ilsvrc_maps), "--ilsvrc-threads", "2",
                   "--config", args.config, "--data-root", args.data_root]
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=args.baseline)
        payload["before"] = json.loads(done.stdout.splitlines()[-1])
    payload["after"] = measure(args)
    if args.baseline:
        payload["same_result"] = _same(payload["before"], payload["after"])
        payload["cpu_speedup"] = {
            f"{threads}/cub_sized/{kind}": (
                payload["before"][threads]["cub_sized"][kind]["cpu_seconds_total"]
                / payload["after"][threads]["cub_sized"][kind]["cpu_seconds_total"])
            for threads in ("threads_1", "threads_2") for kind in KINDS}
    write_result(args.json, "evaluation_cost", payload)


if __name__ == "__main__":
    main()
