"""Records the learning curves that the replay benchmark (benchmarks/replay.py) is built from.

One pair (CAM on the tiny body, the synthetic demo preset, the demo experiment's trial
settings and learning-rate range) trained for the demo's full 6 epochs at configurations
spread over its search space by a scrambled Sobol sequence; after every epoch the
train-fullsup score that a search's scheduler and sampler see. Some configurations are
trained again at a second seed: the replay's noise between training seeds. Runs in-process
(no Ray, no MLflow: only the curves are wanted) on one thread, appending one JSON line per
configuration so that an interrupted recording keeps what it has and continues. Run:
nice .venv/bin/python benchmarks/record_curves.py --out benchmarks/results/replay_curves.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import qmc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsol.search.experiment import load_experiment
from wsol.search.pair_spaces import load_spaces, pair_defaults
from wsol.search.pairs import pair_name
from wsol.search.trainable import trial_config_values
from wsol.trial.config import config_from_dict
from wsol.trial.runner import run_trial

REPO = Path(__file__).resolve().parents[1]


def unit_to_values(space_params: list, unit: list[float]) -> dict[str, float]:
    """A point of the unit cube as the space's values (log-scaled where the space is)."""
    values = {}
    for param, u in zip(space_params, unit, strict=True):
        if param.log:
            values[param.name] = math.exp(math.log(param.low)
                                          + u * (math.log(param.high) - math.log(param.low)))
        else:
            values[param.name] = param.low + u * (param.high - param.low)
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default=str(REPO / "experiments" / "synthetic-demo.yaml"))
    parser.add_argument("--method", default="cam")
    parser.add_argument("--configs", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=35.0,
                        help="stop starting new configurations after this long")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    experiment = load_experiment(args.experiment)
    space = load_spaces(experiment)[args.method]
    if any(p.kind != "float" or p.when for p in space.params):
        raise SystemExit(f"{args.method}: only unconditional float spaces are recorded")
    pair = pair_name(args.method, experiment.backbones[0])
    defaults = pair_defaults(experiment, load_spaces(experiment))
    points = qmc.Sobol(d=len(space.params), scramble=True, seed=0).random(args.configs)
    out = Path(args.out)
    done = len(out.read_text().splitlines()) if out.exists() else 0
    started = time.monotonic()
    # Every fifth configuration is followed by a repeat at the second seed, so that a
    # recording cut short by --minutes still measures the noise.
    jobs = []
    for i in range(args.configs):
        jobs.append((i, experiment.seed))
        if i % 5 == 4 and i // 5 < args.repeats:
            jobs.append((i // 5, experiment.seed + 1))
    for index, seed in jobs[done:]:
        if time.monotonic() - started > args.minutes * 60:
            break
        unit = [float(u) for u in points[index]]
        sampled = {**unit_to_values(space.params, unit), "pair": pair}
        config = config_from_dict(trial_config_values(sampled, {**experiment.trial_base(),
                                                                "seed": seed},
                                                      experiment.method_params, defaults),
                                  f"config {index}")
        scores: list[float] = []
        begin = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            run_trial(config, tmp, lambda e, into=scores: into.append(float(e.metrics["score"])),
                      log=lambda line: None)
        row = {"index": index, "seed": seed, "unit": unit,
               "values": {p.name: sampled[p.name] for p in space.params},
               "scores": scores, "seconds": time.monotonic() - begin}
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{index}: {row['values']} {scores} ({row['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
