"""Each method at its paper's default hyperparameters on the synthetic benchmark, tiny backbone.

Schedule-bound values are scaled to the short CPU schedule (BGC's warm-up keeps its 20/70
share, MinMaxCAM uses N=4 classes per batch because the demo has 8; the weight map's
generator takes the random-init row of search_spaces/weightmap.yaml, 1e-2). MinMaxCAM's
stage II runs at the authors' rate since its losses are channel means. Every choice is made on
train-fullsup by the trial runner; test is then read once per method with those choices, as
`wsol evaluate` does. Trivial predictors come from synthetic_baselines.py.
Run: .venv/bin/python benchmarks/methods_synthetic.py --data-root data/synthetic-demo \
    --seeds 0 1 2 --json benchmarks/results/methods_synthetic.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.common import protocol
from wsol.lifecycle.final_evaluation import evaluate_checkpoint
from wsol.trial.config import load_config
from wsol.trial.runner import run_trial

SCHEDULE = {
    "cam": ({}, 8),
    "minmaxcam": ({"classes_per_batch": 4, "set_size": 5}, 8),
    "bgc": ({"warm": 2}, 8),
    "weightmap": ({"generator_encoder": "tiny", "classifier_epochs": 8, "generator_lr": 1e-2},
                  16),
}
KEYS = (protocol.MAX_BOX_ACC, *protocol.SELECTION_METRICS, "top1_loc", "gt_known_loc")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--config", default="configs/synthetic-tiny.yaml")
    parser.add_argument("--methods", nargs="+", default=list(SCHEDULE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            runs = {seed: run_method(name, args, Path(tmp) / f"{name}-{seed}", seed)
                    for seed in args.seeds}
            results[name] = {"runs": runs, "mean": mean_of(list(runs.values()))}
    write_result(args.json, "methods_synthetic", {"data_root": args.data_root,
                                                  "seeds": args.seeds, "results": results})


def run_method(name: str, args: argparse.Namespace, out: Path, seed: int) -> dict:
    """Train with train-fullsup selection, then read test once with the selected choices."""
    params, epochs = SCHEDULE[name]
    config = load_config(args.config, {"method": name, "params": params, "epochs": epochs,
                                       "data_root": args.data_root, "seed": seed})
    started = time.perf_counter()
    summary = run_trial(config, out)
    seconds = time.perf_counter() - started
    test, _ = evaluate_checkpoint(out / "best.pt")
    val = summary["metrics"]
    epoch_seconds = [h["epoch_seconds"] for h in summary["history"]]
    return {
        "params": params,
        "epochs": epochs,
        "selected_epoch": summary["selected_epoch"],
        "normalisation": val["normalisation"],
        "percentile": val["percentile"],
        "threshold": val["threshold"],
        "train_fullsup": {k: val[k] for k in KEYS if k in val},
        "test": {k: test.metrics[k] for k in KEYS if k in test.metrics},
        "cpu_seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "trial_seconds": seconds,
    }


def mean_of(runs: list[dict]) -> dict:
    return {
        split: {k: sum(r[split][k] for r in runs) / len(runs) for k in runs[0][split]}
        for split in ("train_fullsup", "test")
    } | {"cpu_seconds_per_epoch": sum(r["cpu_seconds_per_epoch"] for r in runs) / len(runs)}


if __name__ == "__main__":
    main()
