"""Replay benchmark: every sampler x scheduler at the project's real budget, many seeds, in
seconds, on learning curves recorded once (benchmarks/record_curves.py).

The practice of surrogate HPO benchmarks (YAHPO Gym, HPOBench's surrogates, LCBench): the
recorded curves of CAM on the tiny body (synthetic demo preset, the demo's 6 epochs and
learning-rate range) are fitted, epoch by epoch, by a Gaussian process over the search
space's unit cube (Matern 5/2 with a white-noise term). A replayed trial's curve is the fitted
mean at its configuration plus noise of the fitted size, correlated across its epochs as the
recorded repeats at a second training seed are. Each replayed search runs the project's own
pieces: the sampler from wsol.search.studies with the search space's define-by-run function
(and the papers' default as its first trial, as a real search does), Ray's ASHA bracket with
the demo's rungs (grace 2, reduction 2, 6 epochs: rungs at epochs 2 and 4), Optuna told the
last reported score as OptunaSearch does. Trials run one after the other (a real search
runs 2 at a time; ASHA's decisions then see slightly fewer finished rungs).

Regret is against the fitted optimum (the best mean curve's best epoch over a dense grid);
the incumbent is the trial with the best observed score, valued at its mean curve at the epoch
of that observed score (the epoch a search reports and checkpoints). Run:
.venv/bin/python benchmarks/replay.py --seeds 50 --json benchmarks/results/replay.json

Sensitivity variants (their own per-seed file and results): --hull, the surrogate without
extrapolation (a configuration outside the convex hull of the recorded ones takes the fitted
mean at the nearest point of the hull, so the optimum lies within the recordings);
--repeat-noise, the noise per epoch measured from the repeats at a second training seed
instead of the fitted white-noise term.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial import ConvexHull
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.search.experiment import SAMPLERS, load_experiment
from wsol.search.pair_spaces import first_point, load_spaces, pair_defaults
from wsol.search.space import SearchSpace
from wsol.search.studies import make_sampler

REPO = Path(__file__).resolve().parents[1]
CURVES = REPO / "benchmarks" / "results" / "replay_curves.jsonl"
SCHEDULERS = ("asha", "fifo")
GRID = 65  # points per dimension of the surrogate's lookup table


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_fingerprint(result: dict, curves: Path) -> None:
    """Refuses results (or stored per-seed runs) that were not made from these curves."""
    if result.get("curves_sha256") != fingerprint(curves):
        raise ValueError(f"made from other curves than {curves} (sha256 "
                         f"{result.get('curves_sha256')}, the file has {fingerprint(curves)})")


def stored_runs(path: Path, curves: Path, seeds: int, variant: str) -> dict:
    """The per-seed runs kept from an earlier call, or a fresh store where they were made from
    other curves, another number of seeds or another variant."""
    fresh = {"curves_sha256": fingerprint(curves), "seeds": seeds, "variant": variant,
             "runs": {}, "seconds": {}}
    if not path.exists():
        return fresh
    stored = json.loads(gzip.decompress(path.read_bytes()))
    try:
        check_fingerprint(stored, curves)
    except ValueError:
        return fresh
    if stored.get("seeds") != seeds or stored.get("variant", "fitted") != variant:
        return fresh
    return stored


@dataclass
class Surrogate:
    """Mean score per epoch over the unit cube (a lookup table of the fitted GPs), the noise
    size per epoch and the correlation of a trial's noise across its epochs."""

    tables: list[RegularGridInterpolator]
    noise_sd: np.ndarray
    correlation: float
    optimum: float
    optimum_at: list[float]

    def mean(self, unit: np.ndarray) -> np.ndarray:
        return np.array([float(table(unit[None])[0]) for table in self.tables])

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        shared = rng.standard_normal()
        own = rng.standard_normal(len(self.noise_sd))
        return self.noise_sd * (math.sqrt(self.correlation) * shared
                                + math.sqrt(1 - self.correlation) * own)


def load_curves(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seed_correlation(rows: list[dict]) -> tuple[float, int]:
    """How alike a configuration's noise is across its epochs: the mean correlation between
    epochs of the differences between its two training seeds (0.5 when too few repeats)."""
    by_config: dict[int, dict[int, list[float]]] = {}
    for row in rows:
        by_config.setdefault(row["index"], {})[row["seed"]] = row["scores"]
    diffs = np.array([np.subtract(*list(seeds.values())[:2]) for seeds in by_config.values()
                      if len(seeds) >= 2])
    if len(diffs) < 3:
        return 0.5, len(diffs)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(diffs.T)
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    return float(np.clip(np.nanmean(off), 0.0, 1.0)), len(diffs)


def repeat_noise(rows: list[dict]) -> np.ndarray:
    """The noise size per epoch that the repeats at a second training seed show: the root
    mean square of the two seeds' difference over sqrt(2)."""
    by_config: dict[int, dict[int, list[float]]] = {}
    for row in rows:
        by_config.setdefault(row["index"], {})[row["seed"]] = row["scores"]
    diffs = np.array([np.subtract(*list(seeds.values())[:2]) for seeds in by_config.values()
                      if len(seeds) >= 2])
    return np.sqrt((diffs ** 2).mean(axis=0) / 2)


def rank_correlation(rows: list[dict]) -> list[float]:
    """Spearman's correlation, across the recorded configurations (first training seed), of
    each epoch's score with the last epoch's: how well a rung at that epoch ranks trials."""
    scores = np.array([row["scores"] for row in rows if row["seed"] == min(r["seed"]
                                                                          for r in rows)])
    return [round(float(spearmanr(scores[:, epoch], scores[:, -1])[0]), 3)
            for epoch in range(scores.shape[1])]


def project_to_hull(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Each point, or where it lies outside the convex hull of `vertices` (2-d), the nearest
    point of the hull's boundary."""
    if vertices.shape[1] != 2:
        raise ValueError("the hull variant is written for two-dimensional spaces")
    hull = ConvexHull(vertices)
    inside = np.all(points @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-12, axis=1)
    out = points.copy()
    starts, ends = vertices[hull.simplices[:, 0]], vertices[hull.simplices[:, 1]]
    edge = ends - starts
    for i in np.flatnonzero(~inside):
        t = np.clip(np.einsum("ij,ij->i", points[i] - starts, edge) /
                    np.einsum("ij,ij->i", edge, edge), 0.0, 1.0)
        nearest = starts + t[:, None] * edge
        out[i] = nearest[np.argmin(((nearest - points[i]) ** 2).sum(axis=1))]
    return out


def fit(rows: list[dict], hull: bool = False, noise_sd: np.ndarray | None = None
        ) -> Surrogate:
    """The surrogate of `rows`; `hull`: no extrapolation beyond the recorded configurations'
    convex hull; `noise_sd`: this noise per epoch instead of the fitted one."""
    units = np.array([row["unit"] for row in rows])
    scores = np.array([row["scores"] for row in rows])
    dims = units.shape[1]
    axes = [np.linspace(0, 1, GRID)] * dims
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dims)
    where = project_to_hull(mesh, units) if hull else mesh
    tables, noise = [], []
    for epoch in range(scores.shape[1]):
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern([0.3] * dims, (0.05, 10.0), nu=2.5) \
            + WhiteKernel(0.3, (1e-3, 10.0))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=4,
                                      random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(units, scores[:, epoch])
        noise.append(math.sqrt(gp.kernel_.k2.noise_level) * float(np.std(scores[:, epoch])))
        table = gp.predict(where).reshape([GRID] * dims)
        tables.append(RegularGridInterpolator(axes, table))
    best_curve = np.maximum.accumulate(np.stack([t.values.reshape(-1) for t in tables]), axis=0)
    final = best_curve[-1]
    correlation, _ = seed_correlation(rows)
    return Surrogate(tables, np.array(noise) if noise_sd is None else np.asarray(noise_sd),
                     correlation, float(final.max()),
                     [float(v) for v in where[int(final.argmax())]])


def to_unit(space: SearchSpace, params: dict[str, float]) -> np.ndarray:
    unit = []
    for p in space.params:
        value = params[p.name]
        if p.log:
            unit.append((math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low)))
        else:
            unit.append((value - p.low) / (p.high - p.low))
    return np.clip(np.array(unit), 0.0, 1.0)


@dataclass(frozen=True)
class _Trial:
    trial_id: str


def replay(surrogate: Surrogate, space: SearchSpace, first: dict | None, sampler: str,
           scheduler: str, seed: int, trials: int, max_t: int, grace: int, rf: float
           ) -> dict[str, list[float]]:
    """One search: per trial (in start order) the best observed score so far, the regret of
    the incumbent so far (the trial with the best observed score, valued at its mean curve at
    the epoch of that score: what the search reports and checkpoints), and the epochs spent
    so far."""
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed))
    if first:
        study.enqueue_trial(first)
    bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=rf, s=0) \
        if scheduler == "asha" else None
    rng = np.random.default_rng([seed, 20])  # the same noise draws for every combination
    best, incumbent_true, spent = -math.inf, -math.inf, 0
    out: dict[str, list[float]] = {"best": [], "regret": [], "epochs": []}
    for number in range(trials):
        trial = study.ask()
        space.sample(trial)
        unit = to_unit(space, trial.params)
        mean = surrogate.mean(unit)
        observed = mean + surrogate.noise(rng)
        ran = max_t
        for epoch in range(1, max_t + 1):
            if bracket is not None and epoch < max_t and bracket.on_result(
                    _Trial(str(number)), epoch, float(observed[epoch - 1])) == \
                    TrialScheduler.STOP:
                ran = epoch
                break
        study.tell(trial, float(observed[ran - 1]))
        spent += ran
        reported = int(np.argmax(observed[:ran]))
        if observed[reported] > best:
            best, incumbent_true = float(observed[reported]), float(mean[reported])
        out["best"].append(best)
        out["regret"].append(surrogate.optimum - incumbent_true)
        out["epochs"].append(spent)
    return out


def epochs_to_reach(run: dict[str, list[float]], target: float) -> float:
    for best, epochs in zip(run["best"], run["epochs"], strict=True):
        if best >= target:
            return float(epochs)
    return math.inf


def regret_at_epochs(run: dict[str, list[float]], grid: np.ndarray) -> np.ndarray:
    """The incumbent's regret once `grid` epochs are spent (before the first trial ends: its
    regret, the search has nothing better to show)."""
    index = np.searchsorted(np.array(run["epochs"]), grid, side="right") - 1
    regret = np.array(run["regret"])
    return regret[np.clip(index, 0, None)]


def median_ci(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    """The median and a 95% bootstrap interval of it; order statistics, not interpolation,
    so that "never" (infinite) stays a value."""
    def median(a: np.ndarray, axis: int | None = None) -> np.ndarray:
        return np.quantile(a, 0.5, axis=axis, method="inverted_cdf")

    boot = median(rng.choice(values, size=(2000, len(values))), axis=1)
    return [float(median(values)), float(np.quantile(boot, 0.025, method="inverted_cdf")),
            float(np.quantile(boot, 0.975, method="inverted_cdf"))]


def band(matrix: np.ndarray) -> dict[str, list[float]]:
    quartiles = np.quantile(matrix, [0.25, 0.5, 0.75], axis=0)
    return {"q25": quartiles[0].round(3).tolist(), "median": quartiles[1].round(3).tolist(),
            "q75": quartiles[2].round(3).tolist()}


def summarise(runs: dict[str, list[dict]], trials: int, max_t: int) -> dict:
    """Per combination: regret against trials and epochs (median and quartiles over seeds),
    final regret, and the epochs it needs to reach random search's final best per seed. The
    random search a seed is held against is another seed's (the next one): at its own seed,
    random search with ASHA would replay the very same trials and noise (common random
    numbers) and reach the target by construction."""
    rng = np.random.default_rng(0)
    baseline = runs["random+fifo"]
    baseline = baseline[1:] + baseline[:1]
    random_total = trials * max_t
    random_own = np.array([epochs_to_reach(r, r["best"][-1]) for r in runs["random+fifo"]])
    grid = np.arange(0, random_total + 1, 6)
    table = {}
    for combo, seeds in runs.items():
        reach = np.array([epochs_to_reach(run, base["best"][-1])
                          for run, base in zip(seeds, baseline, strict=True)])
        regret = np.array([run["regret"] for run in seeds])
        to_best = median_ci(reach, rng)
        table[combo] = {
            "seeds": len(seeds),
            "final_regret_median_ci": median_ci(regret[:, -1], rng),
            "epochs_spent_median": float(np.median([run["epochs"][-1] for run in seeds])),
            "reaches_random_best": float(np.mean(np.isfinite(reach))),
            "epochs_to_random_best_median_ci": to_best,
            "epochs_to_random_best_over_random_epochs": to_best[0] / random_total,
            "regret_by_trial": band(regret),
            "regret_by_epochs": band(np.array([regret_at_epochs(run, grid) for run in seeds])),
        }
    return {"epochs_grid": grid.tolist(), "random_epochs": random_total,
            "random_epochs_to_own_best_median": float(np.median(random_own)), "table": table}


def check(surrogate: Surrogate, space: SearchSpace, first: dict | None, files: list[Path],
          max_t: int, grace: int, rf: float, seeds: int = 200) -> dict | None:
    """Whether the real searches' bests (benchmarks/replay_check.py, one file per search)
    fall inside the replay's spread: the 5th to 95th percentile of the same search's final
    best over `seeds` replays."""
    if not files:
        return None
    results = [json.loads(path.read_text()) for path in files]
    real = {**results[0], "searches": [r["search"] for r in results]}
    finals = np.array([replay(surrogate, space, first, real["sampler"], real["scheduler"], seed,
                              real["trials_per_search"], max_t, grace, rf)["best"][-1]
                       for seed in range(1000, 1000 + seeds)])
    low, high = np.quantile(finals, [0.05, 0.95])
    searches = [{"seed": s["seed"], "real_best": s["best"],
                 "replay_percentile": float(np.mean(finals <= s["best"]) * 100),
                 "inside": bool(low <= s["best"] <= high)} for s in real["searches"]]
    return {"replay_seeds": seeds, "replay_p05": float(low), "replay_median":
            float(np.median(finals)), "replay_p95": float(high), "searches": searches,
            "all_inside": all(s["inside"] for s in searches)}


def plot(summary: dict, trials: int, path: Path) -> None:
    """Median regret (quartile bands) against trials and against epochs, per combination."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_trial, by_epochs) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colours = dict(zip(SAMPLERS, plt.rcParams["axes.prop_cycle"].by_key()["color"],
                       strict=False))
    for combo, row in sorted(summary["table"].items()):
        sampler, scheduler = combo.split("+")
        style = "-" if scheduler == "asha" else "--"
        for axes, x, key in ((by_trial, np.arange(1, trials + 1), "regret_by_trial"),
                             (by_epochs, summary["epochs_grid"], "regret_by_epochs")):
            axes.plot(x, row[key]["median"], style, label=combo, linewidth=1.2,
                      color=colours[sampler])
            axes.fill_between(x, row[key]["q25"], row[key]["q75"], alpha=0.06,
                              color=colours[sampler])
    by_trial.set_xlabel("trials")
    by_epochs.set_xlabel("epochs spent")
    by_trial.set_ylabel("regret (train-fullsup MaxBoxAccV2 points)")
    by_epochs.legend(fontsize=7, ncol=2)
    figure.suptitle("Replay: median regret over seeds, quartile bands")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def pick_default(table: dict) -> str:
    """Fewest median epochs to random search's final best; then the lower final regret."""
    return min(table, key=lambda c: (table[c]["epochs_to_random_best_median_ci"][0],
                                     table[c]["final_regret_median_ci"][0]))


def markdown(summary: dict, default: str) -> str:
    half = summary["epochs_grid"].index(summary["random_epochs"] // 2 // 6 * 6)
    lines = ["| sampler + scheduler | regret after 10 trials | regret after "
             f"{summary['epochs_grid'][half]} epochs | final regret, median [95% CI] | "
             "epochs spent | reaches random's best | epochs to random's best, median [95% CI] | "
             "/ random's epochs |", "|---|---|---|---|---|---|---|---|"]

    def fmt(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.1f}"

    for combo, row in sorted(summary["table"].items(),
                             key=lambda kv: kv[1]["epochs_to_random_best_median_ci"][0]):
        r, e = row["final_regret_median_ci"], row["epochs_to_random_best_median_ci"]
        name = f"**{combo}**" if combo == default else combo
        lines.append(f"| {name} | {row['regret_by_trial']['median'][9]:.2f} | "
                     f"{row['regret_by_epochs']['median'][half]:.2f} | "
                     f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] | "
                     f"{row['epochs_spent_median']:.0f} | {row['reaches_random_best']:.0%} | "
                     f"{fmt(e[0])} [{fmt(e[1])}, {fmt(e[2])}] | "
                     f"{row['epochs_to_random_best_over_random_epochs']:.2f} |")
    return "\n".join(lines)


def setting(experiment_file: Path) -> tuple[SearchSpace, dict | None, int, int, float]:
    """CAM's space, first point and ASHA rungs as the experiment's real search has them."""
    experiment = load_experiment(experiment_file)
    spaces = load_spaces(experiment)
    first = first_point(spaces["cam"], pair_defaults(experiment, spaces).get("cam/tiny", {}))
    spec = experiment.scheduler
    return (spaces["cam"], first, int(experiment.trial["epochs"]), int(spec["grace_period"]),
            float(spec["reduction_factor"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--curves", default=str(CURVES))
    parser.add_argument("--experiment", default=str(REPO / "experiments" / "synthetic-demo.yaml"))
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--samplers", nargs="*", default=list(SAMPLERS))
    parser.add_argument("--runs", help="per-seed results, kept between calls: a call with "
                        "--samplers adds or replaces those samplers' combinations (default "
                        "benchmarks/results/replay_runs[_variant].json.gz)")
    parser.add_argument("--hull", action="store_true",
                        help="sensitivity: no extrapolation beyond the recorded configurations")
    parser.add_argument("--repeat-noise", action="store_true",
                        help="sensitivity: the noise measured from the repeats")
    parser.add_argument("--check", nargs="*", default=sorted(
        str(p) for p in (REPO / "benchmarks" / "results").glob("replay_check_*.json")),
        help="the real searches (benchmarks/replay_check.py) to check against")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = Path(args.curves)
    rows = load_curves(curves)
    variant = "+".join([name for name, on in (("hull", args.hull),
                                              ("repeat-noise", args.repeat_noise)) if on]) \
        or "fitted"
    surrogate = fit(rows, hull=args.hull,
                    noise_sd=repeat_noise(rows) if args.repeat_noise else None)
    space, first, max_t, grace, rf = setting(Path(args.experiment))
    runs_path = Path(args.runs) if args.runs else REPO / "benchmarks" / "results" / (
        "replay_runs.json.gz" if variant == "fitted"
        else f"replay_runs_{variant.replace('+', '_').replace('-', '_')}.json.gz")
    stored = stored_runs(runs_path, curves, args.seeds, variant)
    for sampler in args.samplers:
        for scheduler in SCHEDULERS:
            combo = f"{sampler}+{scheduler}"
            started = time.perf_counter()
            stored["runs"][combo] = [
                replay(surrogate, space, first, sampler, scheduler, seed, args.trials, max_t,
                       grace, rf) for seed in range(args.seeds)]
            stored["seconds"][combo] = round(time.perf_counter() - started, 1)
            print(f"{combo}: {args.seeds} seeds in {stored['seconds'][combo]} s", flush=True)
    runs_path.write_bytes(gzip.compress(json.dumps(stored).encode(), mtime=0))
    summary = summarise(stored["runs"], args.trials, max_t)
    default = pick_default(summary["table"])
    correlation, repeats = seed_correlation(rows)
    write_result(args.json, "replay", {
        "curves": str(curves.relative_to(REPO)) if curves.is_relative_to(REPO) else str(curves),
        "curves_sha256": fingerprint(curves), "configurations": len({r["index"] for r in rows}),
        "repeated_at_second_seed": repeats, "pair": "cam/tiny", "variant": variant,
        "rank_correlation_with_last_epoch": rank_correlation(rows),
        "trials": args.trials, "max_epochs": max_t, "asha": {"grace_period": grace,
                                                             "reduction_factor": rf},
        "surrogate": {"optimum": surrogate.optimum, "optimum_at_unit": surrogate.optimum_at,
                      "noise_sd_by_epoch": surrogate.noise_sd.round(3).tolist(),
                      "noise_correlation_across_epochs": correlation,
                      "repeat_noise_sd_by_epoch": repeat_noise(rows).round(3).tolist()},
        "seconds_per_combination": stored["seconds"], "default": default,
        "check": check(surrogate, space, first, [Path(p) for p in args.check], max_t, grace,
                       rf) if variant == "fitted" else None,
        **summary,
    })
    if args.markdown:
        Path(args.markdown).write_text(markdown(summary, default) + "\n")
    if args.plot:
        plot(summary, args.trials, Path(args.plot))


if __name__ == "__main__":
    main()
