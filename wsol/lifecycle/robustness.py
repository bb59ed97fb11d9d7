"""The protocol's robustness view: how a method scores across its whole search, not only at
its best trial, and which hyperparameters that score depends on.

Box plots of the train-fullsup score of every finished trial per method and backbone (as the
reference protocol plots scores under random search), and per pair the hyperparameter
importances of Optuna's fANOVA over the study rebuilt from the MLflow trial runs (PED-ANOVA,
which needs no scikit-learn, when scikit-learn is missing).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from wsol.lifecycle import figures

Scores = dict[tuple[str, str], dict[str, list[float]]]  # (dataset, backbone) -> method -> scores


def plot_score_distributions(scores: Scores, out: Path) -> list[Path]:
    """One figure per dataset and backbone: a box (and the points) per method."""
    written = []
    for (dataset, backbone), per_method in scores.items():
        methods = [m for m, values in per_method.items() if values]
        if not methods:
            continue
        fig, ax = figures.plt.subplots(figsize=(max(5.0, 1.4 * len(methods)), 4))
        values = [per_method[m] for m in methods]
        ax.boxplot(values, showfliers=False)
        for position, points in enumerate(values, start=1):
            offsets = [position + 0.12 * ((i % 5) - 2) / 2 for i in range(len(points))]
            ax.scatter(offsets, points, s=12, alpha=0.6, color="black", zorder=3)
        ax.set_xticks(range(1, len(methods) + 1),
                      [f"{m}\n(n={len(v)})" for m, v in zip(methods, values, strict=True)])
        ax.set_ylabel("train-fullsup selection score")
        ax.set_title(f"{dataset} / {backbone}: all finished trials")
        path = out / f"scores-{dataset}-{backbone}.png"
        written.append(figures.save(fig, path))
    return written


def evaluator() -> tuple[optuna.importance.BaseImportanceEvaluator, str]:
    """fANOVA (its random forest is scikit-learn's) when installed, else PED-ANOVA."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return (optuna.importance.PedAnovaImportanceEvaluator(),
                f"PED-ANOVA (optuna {optuna.__version__}; scikit-learn is not installed)")
    return (optuna.importance.FanovaImportanceEvaluator(seed=0),
            f"fANOVA (optuna {optuna.__version__} FanovaImportanceEvaluator, seed 0)")


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Importance per searched parameter, or None and why not."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return None, f"{len(complete)} complete trial(s)"
    if not any(t.params for t in complete):
        return None, "no parameter varies"
    chosen, _ = evaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return optuna.importance.get_param_importances(study, evaluator=chosen), ""
        except (RuntimeError, ValueError) as error:  # e.g. every trial scored the same
            return None, " ".join(str(error).split())[:120]


def importance_table(studies: list[tuple[str, optuna.Study]]) -> tuple[list[str], list[list[str]]]:
    """Rows (pair, complete trials, parameter, importance), most important first."""
    header = ["pair", "complete trials", "parameter", "importance"]
    rows = []
    for name, study in studies:
        complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        found, why = importances(study)
        if found is None:
            rows.append([name, str(complete), "", f"n/a: {why}"])
            continue
        for param, value in sorted(found.items(), key=lambda kv: -kv[1]):
            rows.append([name, str(complete), param, f"{value:.3f}"])
    return header, rows
