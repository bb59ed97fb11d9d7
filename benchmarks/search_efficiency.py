"""Search efficiency: how many trials TPE with ASHA early stopping needs to reach the best
train-fullsup score that random search reaches in 30 trials (the protocol's budget), per seed.

Both searches run through `run_search` (Ray Tune + MLflow on SQLite) on the synthetic
benchmark with CAM on the tiny backbone; trials are counted in start order, early-stopped
trials included (they cost less, which is the point of ASHA). Three seeds of real searches
cannot rank samplers: benchmarks/replay.py does, over 50 seeds per sampler x scheduler on
recorded curves (docs/search/efficiency.md); this one stays as a real end-to-end figure. Run:
.venv/bin/python benchmarks/search_efficiency.py --json benchmarks/results/search_efficiency.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.common import tracking_schema as schema
from wsol.data.synthetic import PRESETS, generate
from wsol.search.experiment import load_experiment
from wsol.search.runner import run_search

REPO = Path(__file__).resolve().parents[1]


def scores_in_order(uri: str, name: str) -> tuple[list[float], float]:
    """Selected train-fullsup score of each trial in start order, and epochs spent in all."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = [r for r in client.search_runs([experiment], max_results=1000)
            if r.data.tags.get(schema.KIND) == schema.TRIAL]
    runs.sort(key=lambda r: r.info.start_time)
    epochs = sum(len(client.get_metric_history(r.info.run_id, schema.per_epoch("score")))
                 for r in runs)
    return [r.data.metrics.get(schema.SCORE, float("-inf")) for r in runs], epochs


def search(kind: str, seed: int, trials: int, epochs: int, data_root: str, work: Path) -> dict:
    name = f"{kind}-{seed}"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    scheduler = {"type": "asha", "grace_period": 1, "reduction_factor": 2} if kind == "tpe" \
        else {"type": "fifo"}
    experiment = load_experiment(REPO / "experiments" / "synthetic-demo.yaml", {
        "name": name, "methods": ["cam"], "method_params": {}, "trials_per_pair": trials,
        "max_concurrent": 2,
        "sampler": kind, "scheduler": scheduler, "seed": seed, "data_root": data_root,
        "storage_path": str(work / "ray"), "tracking_uri": uri,
    })
    experiment.trial = {**experiment.trial, "epochs": epochs}
    started = time.perf_counter()
    run_search(experiment)
    seconds = time.perf_counter() - started
    scores, spent = scores_in_order(uri, name)
    return {"scores": scores, "seconds": seconds, "epochs_trained": spent}


def trials_to_reach(scores: list[float], target: float) -> int | None:
    best = float("-inf")
    for index, score in enumerate(scores, start=1):
        best = max(best, score)
        if best >= target:
            return index
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=str(REPO / "data" / "synthetic-demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not Path(args.data_root).exists():
        generate(Path(args.data_root), PRESETS["demo"], seed=0)
    ray.init(num_cpus=2, include_dashboard=False)
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            random = search("random", seed, args.trials, args.epochs, args.data_root, Path(tmp))
            tpe = search("tpe", seed, args.trials, args.epochs, args.data_root, Path(tmp))
            target = max(random["scores"])
            per_seed.append({
                "seed": seed, "random_best": target, "tpe_best": max(tpe["scores"]),
                "tpe_trials_to_reach_random_best": trials_to_reach(tpe["scores"], target),
                "random_trials_to_reach_own_best": trials_to_reach(random["scores"], target),
                "random_seconds": random["seconds"], "tpe_seconds": tpe["seconds"],
                "random_epochs_trained": random["epochs_trained"],
                "tpe_epochs_trained": tpe["epochs_trained"],
            })
    ray.shutdown()
    write_result(args.json, "search_efficiency", {
        "pair": "cam/tiny", "trials_per_search": args.trials, "max_epochs": args.epochs,
        "tpe_scheduler": "ASHA grace 1, reduction 2", "random_scheduler": "none (FIFO)",
        "seeds": per_seed,
    })


if __name__ == "__main__":
    main()
