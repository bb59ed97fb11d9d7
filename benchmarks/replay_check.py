"""Real searches to check the replay benchmark against: CAM on the tiny body in the demo's
setting (synthetic demo preset, 6 epochs, its learning-rate range), random search without
early stopping, a few trials, one search per seed, through `run_search` (Ray Tune, the
persisted Optuna study, MLflow on SQLite). The searches train at their own seed (1, 2, 3),
the recorded curves at seeds 0 and 1: the replay's noise must cover that too. The first
trial of each search is the fixed papers' default, as in every real search, and with 3
trials the sampled learning rates stayed at or below 0.0126: the check tests the replay's
level and spread there, not the high-learning-rate region where the optimum is.
benchmarks/replay.py --check reads the results (one file per seed, so that the searches
can run side by side). Run, for seed in 1 2 3:
nice .venv/bin/python benchmarks/replay_check.py --seed $seed \
    --json benchmarks/results/replay_check_$seed.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.search.experiment import load_experiment
from wsol.search.runner import run_search
from wsol.search.studies import open_storage

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False)
    seed = args.seed
    with tempfile.TemporaryDirectory() as tmp:
        experiment = load_experiment(REPO / "experiments" / "synthetic-demo.yaml", {
            "name": f"replay-check-{seed}", "methods": ["cam"], "method_params": {},
            "trials_per_pair": args.trials, "sampler": "random",
            "scheduler": {"type": "fifo"}, "seed": seed,
            "storage_path": str(Path(tmp) / "ray"),
            "tracking_uri": f"sqlite:///{Path(tmp) / 'mlflow.db'}",
        })
        started = time.perf_counter()
        summary = run_search(experiment)
        study = optuna.load_study(study_name=summary["optuna"]["studies"]["cam/tiny"],
                                  storage=open_storage(summary["optuna"]["storage"]))
        search = {"seed": seed, "best": summary["best"]["cam/tiny"]["score"],
                  "seconds": time.perf_counter() - started,
                  "trials": [{"params": t.params, "last_score": t.value}
                             for t in study.trials]}
    ray.shutdown()
    write_result(args.json, "replay_check", {
        "pair": "cam/tiny", "sampler": "random", "scheduler": "fifo",
        "trials_per_search": args.trials, "search": search})


if __name__ == "__main__":
    main()
