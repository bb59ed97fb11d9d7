"""What a trial's per-epoch train-fullsup evaluation costs, against training (issue 14).

- CUB-sized: 1,000 raw 28 x 28 CAM-like maps resized to 224 x 224 with boxes and 200-class
  logits, the default normalisation candidates of wsol/common/protocol.py (minmax, max,
  pas@90, eleven ivr percentiles), interval 0.01: `select_normalisation` (every candidate's
  MaxBoxAccV2) then `score_split` of the chosen one (MaxBoxAcc, MaxBoxAccV2, Loc with the
  selected threshold), as the trial runner calls them; inference excluded. Also where the
  search's time goes, per candidate, on a quarter of the maps.
- The demo (`configs/synthetic-tiny.yaml`, cam, data/synthetic-demo): seconds of each
  training epoch against its evaluation (inference, normalisation search, scoring).

`--baseline DIR` runs the same measurements on another source tree (e.g. the commit before
a change, `git archive <commit> wsol | tar -x -C DIR`) in a subprocess, records them under
`before` and checks that both give the same numbers. Times are best of `--repeats`, as
wall-clock and as CPU time (`cpu_`: user + system of all threads).
Run: nice .venv/bin/python benchmarks/evaluation_cost.py --baseline /tmp/wsol-before \
    --json benchmarks/results/evaluation_cost.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the benchmark helpers import no wsol code: with --tree, wsol still comes from that tree
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best, load_average, random_boxes, timed, write_result

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224


class _BoxTargets:
    """What `select_normalisation` and `score_split` read of `wsol.trial.evaluation.Targets`."""

    has_boxes, has_masks = True, False

    def __init__(self, boxes: list[np.ndarray]):
        self.size = (SIZE, SIZE)
        self._boxes = boxes

    def boxes(self, index: int) -> np.ndarray:
        return self._boxes[index]


def cub_sized(count: int, raw_size: int, batch: int, repeats: int) -> dict[str, Any]:
    from wsol.trial.config import TrialConfig
    from wsol.trial.evaluation import RawBatch, candidates, score_split, select_normalisation

    config = TrialConfig()
    rng = np.random.default_rng(5)
    # raw CAM-like maps at feature-map resolution, not normalised (a sum of activations)
    coarse = torch.from_numpy(rng.random((count, 1, 7, 7)).astype(np.float32))
    raw = torch.nn.functional.interpolate(coarse, size=(raw_size, raw_size), mode="bicubic")
    raw = (raw[:, 0] * 40.0 - 10.0).contiguous()
    logits = torch.from_numpy(rng.normal(size=(count, 200)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 200, count))
    batches = [
        RawBatch(raw[i:i + batch], logits[i:i + batch], labels[i:i + batch],
                 torch.arange(i, min(i + batch, count)))
        for i in range(0, count, batch)
    ]
    targets = _BoxTargets(random_boxes(count, seed=6))
    select_normalisation(batches[:1], targets, "MaxBoxAccV2", config)  # warm up (JIT)
    found: list = []
    scored: list = []
    search_runs, score_runs = [], []
    for _ in range(repeats):
        search_runs.append(timed(lambda: found.append(
            select_normalisation(batches, targets, "MaxBoxAccV2", config))))
        score_runs.append(timed(lambda: scored.append(
            score_split(batches, targets, found[-1][0], config.curve_interval))))
    search, score = best(search_runs), best(score_runs)
    names = [c.label for c in candidates(config)]
    chosen, per_candidate = found[-1]
    return {
        "maps": count, "map_size": SIZE, "raw_map_size": raw_size, "batch_size": batch,
        "curve_interval": config.curve_interval, "candidates": names,
        "seconds_normalisation_search": search[0], "cpu_seconds_normalisation_search": search[1],
        "seconds_per_candidate": search[0] / len(names),
        "cpu_seconds_per_candidate": search[1] / len(names),
        "seconds_score_chosen": score[0], "cpu_seconds_score_chosen": score[1],
        "seconds_total": search[0] + score[0], "cpu_seconds_total": search[1] + score[1],
        "search_breakdown": search_breakdown(batches[: max(1, len(batches) // 4)], targets,
                                             config),
        "result": {"chosen": chosen.label, "candidate_scores": per_candidate,
                   "metrics": scored[-1].metrics, "threshold": scored[-1].threshold},
    }


def search_breakdown(batches: list, targets: _BoxTargets, config: Any) -> dict[str, Any]:
    """CPU seconds of the search's steps on `batches`: what all candidates share (the resize,
    and in a tree with `Normaliser` its preparation), then per candidate its normalisation
    (the first percentile candidate also pays the one sort) and its MaxBoxAccV2."""
    from wsol.scoring import normalize
    from wsol.scoring.boxes import BoxAccumulator
    from wsol.trial.evaluation import candidates

    shared_prep = hasattr(normalize, "Normaliser")
    chosen = candidates(config)
    accumulators = {c: BoxAccumulator(config.curve_interval) for c in chosen}
    shared = 0.0
    steps = {c.label: {"normalise": 0.0, "boxes": 0.0} for c in chosen}
    for b in batches:
        truth = [targets.boxes(i) for i in b.indices.tolist()]
        start = time.process_time()
        prepared = normalize.Normaliser(normalize.resize(b.maps, targets.size)) \
            if shared_prep else None
        shared += time.process_time() - start
        for c in chosen:
            start = time.process_time()
            if prepared is not None:
                maps = prepared(c.method, c.percentile).numpy()
            else:
                maps = c.apply(b.maps, targets.size).numpy()
            middle = time.process_time()
            accumulators[c].add_many(zip(maps, truth, strict=True))
            steps[c.label]["normalise"] += middle - start
            steps[c.label]["boxes"] += time.process_time() - middle
    return {"maps": sum(len(b.indices) for b in batches), "cpu_seconds_shared": shared,
            "cpu_seconds_per_candidate": steps,
            "cpu_seconds_normalise": sum(s["normalise"] for s in steps.values()),
            "cpu_seconds_boxes": sum(s["boxes"] for s in steps.values())}


def _timed_evaluation(trial: Any) -> dict[str, Any]:
    """Trial._evaluate's steps, each timed: inference, normalisation search, scoring."""
    from torch.utils.data import DataLoader

    from wsol.trial.evaluation import infer, score_split, select_normalisation

    config = trial.config
    loader = DataLoader(trial.val_data, batch_size=config.batch_size,
                        num_workers=config.num_workers)
    batches: list = []
    found: list = []
    scored: list = []
    record: dict[str, Any] = {
        "inference": timed(lambda: batches.extend(infer(trial.method, loader, trial.device))),
        "search": timed(lambda: found.append(
            select_normalisation(batches, trial.targets, trial.metric, config))),
        "score": timed(lambda: scored.append(score_split(
            batches, trial.targets, found[-1][0], config.curve_interval))),
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
            train = timed(lambda e=epoch: trial._train_epoch(e))
            records.append({"epoch": epoch, "train": train, **_timed_evaluation(trial)})
    rows = records[1:] or records
    result: dict[str, Any] = {"config": str(config_path.relative_to(ROOT)), "method": "cam",
                              "epochs": epochs, "train_images": len(trial.train_data),
                              "train_fullsup_images": len(trial.val_data),
                              "eval_size": config.eval_size, "epochs_timed": records}
    for i, clock in enumerate(("", "cpu_")):
        train_s = float(np.median([r["train"][i] for r in rows]))
        evaluation = float(np.median(
            [r["inference"][i] + r["search"][i] + r["score"][i] for r in rows]))
        result.update({f"{clock}seconds_train_epoch": train_s,
                       f"{clock}seconds_evaluation": evaluation,
                       f"{clock}evaluation_share_of_epoch": evaluation / (train_s + evaluation),
                       f"{clock}evaluation_over_training": evaluation / train_s})
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "source": str(Path(args.tree).resolve()) if args.tree else str(ROOT),
        "load_average": load_average(),
        "torch_threads": torch.get_num_threads(),
        "cub_sized": cub_sized(args.maps, 28, 64, args.repeats),
        "demo": demo_epochs(Path(args.config).resolve(), Path(args.data_root).resolve(),
                            args.epochs),
    }


def _same(before: dict[str, Any], after: dict[str, Any]) -> dict[str, bool]:
    return {
        "cub_sized": before["cub_sized"]["result"] == after["cub_sized"]["result"],
        "demo": [r["metrics"] for r in before["demo"]["epochs_timed"]]
        == [r["metrics"] for r in after["demo"]["epochs_timed"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
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
                   "--config", args.config, "--data-root", args.data_root]
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=args.baseline)
        payload["before"] = json.loads(done.stdout.splitlines()[-1])
    payload["after"] = measure(args)
    if args.baseline:
        before, after = payload["before"]["cub_sized"], payload["after"]["cub_sized"]
        payload["same_result"] = _same(payload["before"], payload["after"])
        payload["speedup_cub_sized"] = {
            clock: before[f"{clock}seconds_total"] / after[f"{clock}seconds_total"]
            for clock in ("", "cpu_")}
    write_result(args.json, "evaluation_cost", payload)


if __name__ == "__main__":
    main()
