"""`wsol report`: the paper-style table and plots, from what MLflow holds.

Rows are method x backbone, columns each dataset's metric on train-fullsup (the best trial's
selected epoch) and on test (the latest `wsol evaluate` of that pair), each with the
difference to the baseline method (wsol.methods.baseline_method) on the same backbone, the same
two numbers of min-max normalised maps (what the papers report), and how many trials stand
behind the row. A section sets the min-max test numbers beside the papers' published ones
(wsol.lifecycle.published). Written as
Markdown, CSV and LaTeX, with the threshold curves, search histories and parallel
coordinates, and logged as a report run. Where the runs hold a compare (`wsol compare`), the
report adds its verdict per method (wsol.lifecycle.report_compare), and for every report the
robustness view: score distributions and hyperparameter importances (wsol.lifecycle.robustness).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.common.tracking_store import ensure_experiment
from wsol.lifecycle import figures, published, report_compare, robustness, runs
from wsol.methods import baseline_method, method_rank
from wsol.trial.evaluation import minmax_key

METRICS = protocol.SELECTION_METRICS
SPLITS = (protocol.SELECTION_SPLIT, protocol.TEST_SPLIT)


@dataclass
class PairResult:
    pair: runs.Pair
    trials: list[Run] = field(default_factory=list)
    evaluations: list[Run] = field(default_factory=list)

    @cached_property
    def finished(self) -> list[Run]:
        return [r for r in self.trials if r.info.status == "FINISHED"
                and schema.SCORE in r.data.metrics]

    @cached_property
    def best(self) -> Run | None:
        return max(self.finished, key=lambda r: r.data.metrics[schema.SCORE], default=None)

    @cached_property
    def latest_evaluation(self) -> Run | None:
        """The latest finished one: a reading that crashed is counted but has no numbers."""
        return max((r for r in self.evaluations if r.info.status == "FINISHED"),
                   key=lambda r: r.info.start_time, default=None)

    def value(self, split: str, metric: str) -> float | None:
        if split == protocol.SELECTION_SPLIT:
            run, key = self.best, schema.selected_metric(metric)
        else:
            run, key = self.latest_evaluation, schema.test_metric(metric)
        return None if run is None else run.data.metrics.get(key)


def collect(client: MlflowClient, experiments: list[str] | None,
            searches: list[str] | None = None) -> list[PairResult]:
    """Trials per pair (of the given searches only, if any) and the evaluations of models
    promoted from those trials."""
    ids = runs.experiment_ids(client, experiments)
    if searches:
        runs.check_searches(client, searches)
    results: dict[runs.Pair, PairResult] = {}
    trial_ids = set()
    for run in runs.search(client, ids, schema.TRIAL, searches):
        pair = runs.pair_of(run)
        results.setdefault(pair, PairResult(pair)).trials.append(run)
        trial_ids.add(run.info.run_id)
    for run in runs.search(client, ids, schema.EVALUATION):
        if searches and run.data.tags.get(schema.TRIAL_RUN_ID) not in trial_ids:
            continue
        if runs.pair_of(run) in results:
            results[runs.pair_of(run)].evaluations.append(run)
    return sorted(results.values(), key=lambda r: (r.pair.dataset, r.pair.backbone,
                                                   *method_rank(r.pair.method)))


def _present(results: list[PairResult], dataset: str, metric: str) -> bool:
    return any(r.value(split, metric) is not None for r in results
               if r.pair.dataset == dataset for split in SPLITS)


def table(results: list[PairResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows; every numeric column names its split, and min-max ones say so."""
    datasets = sorted({r.pair.dataset for r in results})
    metrics = {d: [m for m in METRICS if any(r.value(protocol.SELECTION_SPLIT, m) is not None
                                             for r in results if r.pair.dataset == d)]
               for d in datasets}
    minmax = {d: [m for m in metrics[d] if _present(results, d, minmax_key(m))]
              for d in datasets}
    baseline_name = baseline_method()
    header = ["method", "backbone"]
    for d in datasets:
        header.append(f"{d} trials (finished/all)")
        for metric in metrics[d]:
            for split in SPLITS:
                header += [f"{d} {metric} ({split})",
                           f"{d} {metric} ({split}) vs {baseline_name}"]
            if metric in minmax[d]:
                header += [f"{d} {metric} min-max ({split})" for split in SPLITS]
    by_pair = {r.pair: r for r in results}
    rows = []
    for method, backbone in dict.fromkeys((r.pair.method, r.pair.backbone) for r in results):
        row = [method, backbone]
        for d in datasets:
            result = by_pair.get(runs.Pair(d, method, backbone))
            row.append("" if result is None
                       else f"{len(result.finished)}/{len(result.trials)}")
            baseline = by_pair.get(runs.Pair(d, baseline_name, backbone))
            for metric in metrics[d]:
                for split in SPLITS:
                    value = None if result is None else result.value(split, metric)
                    base = None if baseline is None else baseline.value(split, metric)
                    row.append(_number(value))
                    row.append("" if value is None or base is None or method == baseline_name
                               else f"{value - base:+.2f}")
                if metric in minmax[d]:
                    row += [_number(None if result is None
                                    else result.value(split, minmax_key(metric)))
                            for split in SPLITS]
        rows.append(row)
    return header, rows


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


Section = tuple[str, list[str]]  # (title, Markdown lines)


def write_markdown(header: list[str], rows: list[list[str]], path: Path,
                   sections: list[Section] | None = None) -> None:
    lines = markdown_table(header, rows)
    baseline = baseline_method()
    lines += ["", "train-fullsup: the best trial's selected epoch (what selection saw). "
              "test: the latest `wsol evaluate` of the pair's promoted model (read once per "
              "evaluation, never used to choose). Both use the normalisation train-fullsup "
              f"selected. vs {baseline}: difference to {baseline} (the baseline method) on "
              "the same backbone and split. min-max: the same maps normalised with min-max "
              "alone, the normalisation the papers report with (no choice of normalisation)."]
    for title, body in sections or []:
        lines += ["", f"## {title}", "", *body]
    path.write_text("\n".join(lines) + "\n")


def write_csv(header: list[str], rows: list[list[str]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# A cell LaTeX right-aligns: empty, a number, or "mean ± std".
_NUMERIC = re.compile(r"([+-]?\d+(\.\d+)?(e[+-]?\d+)?( ± \d+(\.\d+)?)?)?")

# Every character TeX gives a meaning to, each replaced in one pass (a replacement is never
# escaped again): with `\`, `{`, `}` and `^` (TeX reads `^^5c` as a backslash) neutralised,
# no cell of a run's tags or params can start a control sequence.
_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}",
          "~": r"\textasciitilde{}", "$": r"\$", "&": r"\&", "%": r"\%", "_": r"\_",
          "#": r"\#", "±": r"$\pm$", "\n": " ", "\r": " "}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)


def write_latex(header: list[str], rows: list[list[str]], path: Path) -> None:
    columns = "".join("r" if all(_NUMERIC.fullmatch(row[i]) for row in rows) else "l"
                      for i in range(len(header)))
    lines = [r"\begin{tabular}{" + columns + "}", r"\toprule",
             " & ".join(map(latex_escape, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(latex_escape, row)) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    path.write_text("\n".join(lines) + "\n")


def plot_threshold_curves(client: MlflowClient, results: list[PairResult], out: Path) -> list[Path]:
    """BoxAccV2 at IoU 50 against tau (or precision-recall) of each method's best trial."""
    groups: dict[tuple[str, str], list[PairResult]] = defaultdict(list)
    for result in results:
        if result.best is not None:
            groups[(result.pair.dataset, result.pair.backbone)].append(result)
    written = []
    for (dataset, backbone), members in groups.items():
        fig, ax = figures.plt.subplots(figsize=(6, 4))
        for result in members:
            assert result.best is not None  # grouped above
            run_id = result.best.info.run_id
            if schema.CURVES_JSON not in {a.path for a in client.list_artifacts(run_id)}:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                curves = json.loads(Path(client.download_artifacts(run_id, schema.CURVES_JSON,
                                                                   tmp)).read_text())
            if "box_accuracy" in curves:
                ax.plot(curves["thresholds"], curves["box_accuracy"]["50"],
                        label=result.pair.method)
                ax.set(xlabel="threshold tau", ylabel="BoxAcc IoU 0.5 (%)")
            elif "precision" in curves:
                ax.plot(curves["recall"], curves["precision"], label=result.pair.method)
                ax.set(xlabel="recall", ylabel="precision")
        ax.set_title(f"{dataset} / {backbone}: best trial per method (train-fullsup)")
        ax.legend()
        path = out / f"curves-{dataset}-{backbone}.png"
        written.append(figures.save(fig, path))
    return written


def study_of(result: PairResult) -> optuna.Study | None:
    """The pair's search as an Optuna study rebuilt from its runs (in start order)."""
    trials = sorted(result.trials, key=lambda r: r.info.start_time)
    values: dict[str, list[Any]] = defaultdict(list)
    for run in trials:
        for key, text in run.data.params.items():
            if key != "pair":
                values[key].append(_parse(text))
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, seen in values.items():
        distinct = set(seen)
        if len(distinct) < 2:
            continue
        if all(isinstance(v, float) for v in distinct):
            distributions[key] = optuna.distributions.FloatDistribution(min(distinct),
                                                                        max(distinct))
        else:
            distributions[key] = optuna.distributions.CategoricalDistribution(
                sorted(distinct, key=str))
    study = optuna.create_study(direction="maximize", study_name=str(result.pair))
    for run in trials:
        params = {k: _parse(v) for k, v in run.data.params.items() if k in distributions}
        score = run.data.metrics.get(schema.SCORE)
        done = run.info.status == "FINISHED" and score is not None
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params},
            value=score if done else None,
            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL))
    return study if any(t.state.is_finished() and t.value is not None for t in study.trials) \
        else None


def _parse(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def plot_studies(results: list[PairResult], out: Path) -> list[Path]:
    written = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for result in results:
        study = study_of(result)
        if study is None:
            continue
        name = f"{result.pair.dataset}-{result.pair.method}-{result.pair.backbone}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plots: dict[str, Callable[[optuna.Study], Any]] = {
                "history": optuna.visualization.matplotlib.plot_optimization_history}
            if study.best_trial.params:
                plots["parallel"] = optuna.visualization.matplotlib.plot_parallel_coordinate
            for kind, plot in plots.items():
                axes = plot(study)
                if kind == "parallel":
                    axes.figure.set_size_inches(max(6.0, 1.3 * len(study.best_trial.params)), 4.5)
                axes.set_title(f"{result.pair} ({kind}, train-fullsup score)")
                path = out / f"{kind}-{name}.png"
                written.append(figures.save(axes.figure, path))
    return written


def write_table(header: list[str], rows: list[list[str]], out: Path, stem: str) -> None:
    """A table of its own as CSV and LaTeX (the Markdown goes into report.md)."""
    write_csv(header, rows, out / f"{stem}.csv")
    write_latex(header, rows, out / f"{stem}.tex")


def robustness_sections(results: list[PairResult], out: Path) -> tuple[list[Section], int]:
    """Score distributions of every finished trial, and hyperparameter importances."""
    scores: robustness.Scores = defaultdict(dict)
    for result in results:
        scores[(result.pair.dataset, result.pair.backbone)][result.pair.method] = [
            r.data.metrics[schema.SCORE] for r in result.finished]
    plots = robustness.plot_score_distributions(scores, out)
    studies = [(str(r.pair), study) for r in results if (study := study_of(r)) is not None]
    header, rows = robustness.importance_table(studies)
    write_table(header, rows, out, "importance")
    _, name = robustness.evaluator()
    sections = [
        ("Robustness: train-fullsup scores of every trial",
         [f"![{p.stem}]({p.name})" for p in plots]
         + ["", "Every finished trial of the search(es), early-stopped ones at the best score "
            "they reached: how a method does across its search, not only at its best trial."]),
        ("Hyperparameter importance (train-fullsup score)",
         [*markdown_table(header, rows), "",
          f"Evaluator: {name}, over the Optuna study rebuilt from the pair's MLflow trial runs "
          "(every search in scope pooled); parameters that not every complete trial has "
          "(conditional ones) are left out by fANOVA."]),
    ]
    return sections, len(plots)


def published_section(results: list[PairResult], out: Path) -> Section:
    """Each row's min-max test number beside every number a paper publishes for the same
    dataset, method, backbone and metric, with its source (published.csv/.tex too)."""
    entries = list(published.load_published())
    header = ["dataset", "method", "backbone", "metric", "published min-max (test)",
              "test (min-max)", "test (min-max) - published", "train-fullsup (min-max)",
              "test (selected normalisation)", "source"]
    rows = []
    for result in results:
        pair = result.pair
        for metric in METRICS:
            ours = result.value(protocol.TEST_SPLIT, minmax_key(metric))
            for entry in published.matching(entries, pair.dataset, pair.method, pair.backbone,
                                            metric):
                rows.append([pair.dataset, pair.method, pair.backbone, metric,
                             entry.printed, _number(ours),
                             "" if ours is None else f"{ours - entry.value:+.2f}",
                             _number(result.value(protocol.SELECTION_SPLIT,
                                                  minmax_key(metric))),
                             _number(result.value(protocol.TEST_SPLIT, metric)),
                             entry.citation])
    title = "Published numbers (test, min-max normalisation)"
    if not rows:
        covered = sorted({f"{e.dataset}/{e.backbone}" for e in entries})
        return title, [f"No row of this report has a published number (the table covers "
                       f"{', '.join(covered)})."]
    write_table(header, rows, out, "published")
    return title, [*markdown_table(header, rows), "",
                   "published: the paper's test number as printed (min-max normalised maps, "
                   "its own hyperparameters and budget); a method the paper prints as a "
                   "difference to CAM is CAM's number plus that difference. test (min-max): "
                   "this pair's latest `wsol evaluate`, the same maps normalised with min-max "
                   "alone. Sources: wsol/lifecycle/published.yaml."]


def compare_sections(client: MlflowClient, ids: list[str], compare_id: str,
                     out: Path) -> list[Section]:
    """The verdict table and the selected hyperparameters of the compare's promoted models."""
    models = report_compare.seed_models(client, ids, compare_id)
    if not models:
        return [(f"Compare {compare_id}", ["No test evaluation of this compare was found."])]
    metrics = tuple(m for m in METRICS if any(x.test(m) is not None for x in models))
    header, rows = report_compare.verdict_table(models, metrics)
    write_table(header, rows, out, "compare")
    selected_header, selected_rows = report_compare.selected_table(models)
    write_table(selected_header, selected_rows, out, "selected")
    return [
        (f"Compare {compare_id}: test over search seeds",
         [*markdown_table(header, rows), "", report_compare.interval_note(models)]),
        (f"Compare {compare_id}: selected hyperparameters of the promoted models",
         [*markdown_table(selected_header, selected_rows), "",
          "Values the experiment fixes for all trials (`trial:`, `method_params:`, the papers' "
          "default rows) are not repeated here: they are the search parent run's params."]),
    ]


def build_report(client: MlflowClient, out: Path, experiments: list[str] | None = None,
                 log: bool = True, searches: list[str] | None = None,
                 compare: str | None = None) -> dict[str, Any]:
    """compare: a compare id or 'latest' (only that compare's searches); without it, the
    latest compare among the runs in scope, if any, gets its section too."""
    ids = runs.experiment_ids(client, experiments)
    compare_id = None
    if compare:
        if searches:
            raise ValueError("--compare and --search exclude each other (a compare is its "
                             "searches)")
        compare_id, searches = report_compare.resolve_compare(client, ids, compare)
    results = collect(client, experiments, searches)
    if not results:
        raise ValueError("no trial runs found in MLflow"
                         + (f" (experiments {experiments})" if experiments else "")
                         + (f" (searches {searches})" if searches else ""))
    if compare_id is None:
        compare_id = report_compare.latest_compare_of(
            client, {t.data.tags.get(schema.PARENT, "") for r in results for t in r.trials})
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Written apart, then copied into `out` and logged from here: the report run holds
        # the files this report wrote, never the rest of `out` (a `--out .` holds .env).
        staged = Path(tmp)
        header, rows = table(results)
        sections = ([] if compare_id is None
                    else compare_sections(client, ids, compare_id, staged))
        extra, distributions = robustness_sections(results, staged)
        sections.append(published_section(results, staged))
        write_markdown(header, rows, staged / "report.md", sections + extra)
        write_csv(header, rows, staged / "report.csv")
        write_latex(header, rows, staged / "report.tex")
        plots = plot_threshold_curves(client, results, staged) + plot_studies(results, staged)
        written = sorted(staged.iterdir())
        for path in written:
            shutil.copyfile(path, out / path.name)
        summary: dict[str, Any] = {"files": [p.name for p in written],
                                   "pairs": [str(r.pair) for r in results],
                                   "report_run_id": None, "compare_id": compare_id}
        if log:
            experiment_id = ensure_experiment(client, schema.REPORT_EXPERIMENT,
                                              client.tracking_uri)
            tags = {schema.KIND: schema.REPORT}
            if compare_id:
                tags[schema.COMPARE_ID] = compare_id
            run = client.create_run(experiment_id, run_name="report", tags=tags)
            client.log_artifacts(run.info.run_id, str(staged))
            client.set_terminated(run.info.run_id, "FINISHED")
            summary["report_run_id"] = run.info.run_id
    summary["plots"] = len(plots) + distributions
    return summary
