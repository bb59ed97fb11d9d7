"""Orchestration overhead: the demo's CAM trial run directly N times, and as a search of N
trials (one at a time, same values, same two threads) through Ray Tune + MLflow (SQLite).

Reports the whole search call, the search without Ray's start-up (paid once per cluster), and
the time Tune measured inside the trials (time_total_s) against the direct runs in this
process (imports already paid), and the whole call against running `wsol train` N times from
the shell (each run pays Python's start-up and the torch imports, as a user's would). Run:
.venv/bin/python benchmarks/search_overhead.py --json benchmarks/results/search_overhead.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.common import protocol
from wsol.data.synthetic import PRESETS, generate
from wsol.search.experiment import load_experiment
from wsol.search.runner import run_search
from wsol.trial.config import config_from_dict
from wsol.trial.runner import run_trial

REPO = Path(__file__).resolve().parents[1]
FIXED = {"lr": 0.02, "weight_decay": 1e-4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=str(REPO / "data" / "synthetic-demo"))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not Path(args.data_root).exists():
        generate(Path(args.data_root), PRESETS["demo"], seed=0)
    demo = load_experiment(REPO / "experiments" / "synthetic-demo.yaml", {})
    threads = 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spaces = work / "spaces"
        spaces.mkdir()
        (spaces / "cam.yaml").write_text(yaml.safe_dump({
            "method": "cam", "fixed": {**FIXED, "normalisations": list(protocol.NORMALISATIONS),
                                       "pas_percentile": protocol.DEFAULT_PAS_PERCENTILE}}))
        base = {**demo.trial, "data_root": str(Path(args.data_root).resolve()), "seed": 0,
                "method": "cam", "backbone": "tiny", **FIXED}
        torch.set_num_threads(threads)
        started = time.perf_counter()
        for index in range(args.trials):
            run_trial(config_from_dict(base, "overhead"), work / f"direct-{index}",
                      log=lambda _: None)
        direct = time.perf_counter() - started
        config_file = work / "trial.yaml"
        config_file.write_text(yaml.safe_dump(base))
        started = time.perf_counter()
        for index in range(args.trials):
            subprocess.run([sys.executable, "-m", "wsol.cli", "train", "--config",
                            str(config_file), "--out", str(work / f"cli-{index}")],
                           check=True, capture_output=True)
        direct_cli = time.perf_counter() - started

        experiment = load_experiment(REPO / "experiments" / "synthetic-demo.yaml", {
            "name": "overhead", "methods": ["cam"], "trials_per_pair": args.trials,
            "max_concurrent": 1,
            "scheduler": {"type": "fifo"}, "resources_per_trial": {"cpu": threads},
            "search_spaces": str(spaces), "data_root": args.data_root,
            "storage_path": str(work / "ray"), "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        })
        started = time.perf_counter()
        ray.init(num_cpus=threads, include_dashboard=False)
        ray_start = time.perf_counter() - started
        summary = run_search(experiment)
        search = time.perf_counter() - started
        ray.shutdown()
        in_trials = sum(summary["trial_seconds"])
    write_result(args.json, "search_overhead", {
        "trial": "demo cam/tiny, 6 epochs, 64 px, fixed lr and weight decay",
        "trials": args.trials, "threads": threads, "seconds_direct": direct,
        "seconds_direct_cli": direct_cli,
        "overhead_percent_against_cli": 100 * (search - direct_cli) / direct_cli,
        "seconds_search": search, "seconds_ray_start": ray_start,
        "seconds_inside_trials": in_trials,
        "overhead_percent": 100 * (search - direct) / direct,
        "overhead_percent_without_ray_start": 100 * (search - ray_start - direct) / direct,
        "overhead_percent_inside_trials": 100 * (in_trials - direct) / direct,
    })


if __name__ == "__main__":
    main()
