"""Every name this project writes to MLflow, and what it means: the tracking store as an API.

Tags, params, metrics and artifact paths per kind of record (the runs of a search, its trials,
test evaluations, compares and reports; model versions; experiments). Writers and readers
import the names from here, so this is the one place a `wsol.` string is spelt
(tests/common/test_tracking_schema.py checks the package and every record a search, a promotion, an
evaluation, a compare and a report leave). docs/tracking-schema.md is the user's version, with
queries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wsol.common import protocol

# Tags ----------------------------------------------------------------------------------------

PARENT = "mlflow.parentRunId"  # MLflow's own: a trial run's search run
RUN_NAME = "mlflow.runName"  # MLflow's own: `cam/tiny #01`, `search <name>`, `test <model>`
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's own experiment tag
MODEL_TRAINING = "custom_model_development"  # its value for the runs-table ("Machine learning")

KIND = "wsol.kind"
SEARCH, TRIAL, EVALUATION, COMPARE, REPORT = "search", "trial", "evaluation", "compare", "report"
KINDS = (SEARCH, TRIAL, EVALUATION, COMPARE, REPORT)

DATASET = "wsol.dataset"
METHOD = "wsol.method"
BACKBONE = "wsol.backbone"
CODE_VERSION = "wsol.code_version"
DATASET_FINGERPRINT = "wsol.dataset_fingerprint"
SELECTION_SPLIT = "wsol.selection_split"
END_REASON = "wsol.end_reason"
RAY_TRIAL_ID = "wsol.ray_trial_id"
RAY_TRIAL_NAME = "wsol.ray_trial_name"
TUNE_RUN = "wsol.tune_run"
RAY_NODE_ID = "wsol.ray_node_id"
TRIAL_NUMBER = "wsol.trial_number"
FAILURE_REASON = "wsol.failure_reason"
# A trial's recipe card: the search-space row its recipe comes from (paper section / code
# file:line), beside its resolved recipe as `recipe.<field>` params.
RECIPE_SOURCE = "wsol.recipe_source"
RECIPE_PARAM_PREFIX = "recipe."
ORPHANED = "wsol.orphaned"
SELECTED_ON = "wsol.selected_on"
SELECTED_EPOCH = "wsol.selected_epoch"
# The post-hoc choices train-fullsup made for a trial's selected epoch; the final evaluation
# reuses them and chooses nothing.
CHOICES = ("normalisation", "percentile", "threshold", "selection_metric")
SPLIT = "wsol.split"
TRIAL_RUN_ID = "wsol.trial_run_id"
MODEL_URI = "wsol.model_uri"
MODEL_NAME = "wsol.model_name"
MODEL_VERSION = "wsol.model_version"
EVALUATION_NUMBER = "wsol.evaluation_number"
COMPARE_ID = "wsol.compare_id"
COMPARE_SEED = "wsol.compare_seed"
# On model versions (besides METHOD, BACKBONE, DATASET, COMPARE_ID, COMPARE_SEED).
SEARCH_RUN_ID = "wsol.search_run_id"
EXPERIMENT_ID = "wsol.experiment_id"
TRAIN_FULLSUP_SCORE = "wsol.train_fullsup_score"
TEST_EVALUATIONS = "wsol.test_evaluations"  # also on a trial run
CHECKPOINT_SHA256 = "wsol.checkpoint_sha256"
LAST_EVALUATION_RUN = "wsol.last_evaluation_run"
OPTUNA_STORAGE = "wsol.optuna_storage"
OPTUNA_STUDY = "wsol.optuna_study"
SAMPLER = "wsol.sampler"
VERSION_CHOICES = (*CHOICES, "epoch", "selected_on")


def selected(choice: str) -> str:
    """A trial run's tag for one of CHOICES: `wsol.selected_threshold`."""
    return f"wsol.selected_{choice}"


def version_tag(key: str) -> str:
    """A model version's tag for one of VERSION_CHOICES (`wsol.threshold`, `wsol.epoch`) or of
    its lineage (`wsol.trial_run_id`: TRIAL_RUN_ID, ...)."""
    return f"wsol.{key}"


# Metrics -------------------------------------------------------------------------------------

# What a trial reports after each evaluation: the protocol's metrics on train-fullsup and the
# trial's bookkeeping (selection score, best so far, threshold, percentile, ...).
TRIAL_METRICS = ("epoch", "score", "best_score", *protocol.METRICS, "threshold", "percentile",
                 "label_free_score", "epoch_seconds",
                 # the epoch's evaluation (inference on train-fullsup and every candidate's
                 # scoring): its seconds and share of training epoch + evaluation
                 "evaluation_seconds", "evaluation_share",
                 # min-max's numbers on train-fullsup beside the selected normalisation's:
                 # what the papers print, without looking at test (issue 24)
                 *(f"minmax_{m}" for m in (protocol.MAX_BOX_ACC, protocol.MAX_BOX_ACC_V2,
                                           protocol.PXAP)))
SCORE = "selected/score"  # the selection score of a trial's selected epoch: what promote ranks
TRIALS, TRIALS_FAILED = "trials", "trials_failed"


def mlflow_key(name: str) -> str:
    """MLflow metric names allow no '@': BoxAccV2@50 is logged as BoxAccV2_IoU50."""
    return name.replace("@", "_IoU")


def per_epoch(name: str) -> str:
    """A trial's metric at every evaluated epoch (step = epoch): `train_fullsup/MaxBoxAccV2`."""
    return f"train_fullsup/{mlflow_key(name)}"


def selected_metric(name: str) -> str:
    """A trial's metric at its selected epoch: `selected/MaxBoxAccV2`."""
    return f"selected/{mlflow_key(name)}"


def test_metric(name: str) -> str:
    """An evaluation run's test number: `test/MaxBoxAccV2`, `test/PxAP_threshold`."""
    return f"test/{mlflow_key(name)}"


def best_metric(pair: str) -> str:
    """A search run's best train-fullsup score of a (method, backbone) pair: `best/cam/tiny`."""
    return f"best/{pair}"


# Artifacts -----------------------------------------------------------------------------------

EXPERIMENT_JSON = "experiment.json"  # a search run's experiment config
SPACES_FOLDER = "search_spaces"  # a search run's <method>.yaml files
SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"  # a search run's summary
CHECKPOINT_FOLDER = "checkpoint"  # a trial run's best.pt, the registered model's source
CHECKPOINT = f"{CHECKPOINT_FOLDER}/best.pt"
METRICS_JSON = "metrics.json"  # a trial's selected epoch and history
PICTURES = ("curves.json", "curves.png", "overlays.png")  # trial (train-fullsup), evaluation (test)
CURVES_JSON = PICTURES[0]
TEST_METRICS_JSON = "test_metrics.json"  # an evaluation run's result
COMPARE_JSON = "compare.json"  # a compare run's summary
OPTUNA_FOLDER = "optuna"  # a search run's Optuna plots, <method>-<backbone>_<plot>.png

# Params --------------------------------------------------------------------------------------

# An evaluation run's params: the choices it reused (checked against the trial's tags), and
# the selected epoch (0-based).
REUSED_CHOICES = ("normalisation", "percentile", "threshold")
EVALUATION_PARAMS = (*REUSED_CHOICES, "epoch")
COMPARE_PARAMS = ("experiment", "search_seeds", "base_seed", "pairs", "trials_per_pair")

# Experiments, models, aliases ----------------------------------------------------------------

COMPARE_EXPERIMENT = "wsol-compares"
REPORT_EXPERIMENT = "wsol-reports"
CHAMPION, PREVIOUS = "champion", "previous"


def model_name(dataset: str, method: str, backbone: str) -> str:
    """The registered model of a pair: `wsol-synthetic-cam-tiny`."""
    return f"wsol-{dataset}-{method}-{backbone}"


def previous_alias(alias: str) -> str:
    """The alias the version an alias leaves keeps: `previous`, `<alias>-previous`."""
    return PREVIOUS if alias == CHAMPION else f"{alias}-previous"


def compare_alias(compare_id: str, seed: int) -> str:
    return f"compare-{compare_id}-seed{seed}"


# The declaration: every key per record, with its meaning ----------------------------------------

_PLACEHOLDERS = {
    "<choice>": "|".join(CHOICES),
    "<version choice>": "|".join(VERSION_CHOICES),
    "<metric>": "|".join(re.escape(mlflow_key(m)) for m in TRIAL_METRICS),
    # A protocol metric, or its reading of min-max maps (`minmax_MaxBoxAccV2`).
    "<test metric>": "(?:minmax_)?(?:" + "|".join(
        re.escape(mlflow_key(m)) + ("(_threshold)?" if m in protocol.THRESHOLDED else "")
        for m in protocol.METRICS) + ")",
    "<method>": r"[^/]+",
    "<backbone>": r"[^/]+",
    "<name>": r"[^/]+",
    "<experiment field>": r"[a-z_]+(\.[^.]+)*",
    "<trial field or hyperparameter>": r"[a-z_][a-z0-9_]*",
}


@dataclass(frozen=True)
class Key:
    """A key, or a pattern whose <placeholders> stand for a name part, and its meaning: a text,
    or a function that gives it when read, where it lists what the package registers."""

    name: str
    about: str | Callable[[], str]

    @property
    def meaning(self) -> str:
        return self.about if isinstance(self.about, str) else self.about()

    def matches(self, key: str) -> bool:
        pattern = re.escape(self.name)
        for placeholder, alternatives in _PLACEHOLDERS.items():
            pattern = pattern.replace(re.escape(placeholder), f"(?:{alternatives})")
        return re.fullmatch(pattern, key) is not None


@dataclass(frozen=True)
class Record:
    """What one kind of MLflow record carries."""

    meaning: str
    tags: tuple[Key, ...] = ()
    params: tuple[Key, ...] = ()
    metrics: tuple[Key, ...] = ()
    artifacts: tuple[Key, ...] = ()

    def undeclared(self, part: str, keys: Iterable[str]) -> list[str]:
        """The keys of `part` (tags, params, metrics, artifacts) that nothing here declares."""
        declared: tuple[Key, ...] = getattr(self, part)
        return sorted(k for k in keys if not any(d.matches(k) for d in declared))


def _method_meaning() -> str:
    """The registered methods, found when asked: the registry imports torch, which the many
    importers of this module do not need."""
    from wsol.methods import method_order

    return f"the method ({', '.join(method_order())})"


_RUN_NAME = Key(RUN_NAME, "MLflow's run name")
_PAIR_TAGS = (Key(METHOD, _method_meaning),
              Key(BACKBONE, "the backbone (tiny, vgg16, resnet50, ...)"),
              Key(DATASET, "the experiment's dataset (synthetic, cub, ilsvrc, openimages)"))
_COMPARE_TAGS = (Key(COMPARE_ID, "the `wsol compare` it belongs to"),
                 Key(COMPARE_SEED, "the search seed of that compare"))
_PICTURES = tuple(Key(name, meaning) for name, meaning in zip(PICTURES, (
    "threshold curves (BoxAcc per IoU against tau, or precision-recall)",
    "the same, plotted", "score maps and boxes of the first images"), strict=True))

SCHEMA: dict[str, Record] = {
    SEARCH: Record(
        "a search's parent run (one per `python search.py` / `wsol search`)",
        tags=(_RUN_NAME, Key(KIND, "search"),
              Key(DATASET, "the experiment's dataset"),
              Key(CODE_VERSION, "git commit of the driver's checkout, else `wsol <version>`"),
              Key(DATASET_FINGERPRINT, "sha256 over every metadata file of the dataset"),
              Key(SELECTION_SPLIT, f"where trials select: {protocol.SELECTION_SPLIT}"),
              Key(END_REASON, "why the search did not finish (KILLED / FAILED)"),
              Key(OPTUNA_STORAGE, "where its Optuna studies persist: a journal file or an RDB "
                  "URL (password masked)"),
              Key(OPTUNA_STUDY, "its Optuna studies' name prefix: one study "
                  "`<prefix>/<method>/<backbone>` per pair"),
              Key(SAMPLER, "the Optuna sampler and its options, e.g. `tpe (TPESampler "
                  "multivariate, group)`"),
              *_COMPARE_TAGS),
        params=(Key("<experiment field>", "the experiment config, nested keys joined by dots "
                    "(trial.epochs, scheduler.type, method_params.bgc.warm)"),),
        metrics=(Key(best_metric("<method>/<backbone>"),
                     "best train-fullsup score of the pair"),
                 Key(TRIALS, "trials run"), Key(TRIALS_FAILED, "trials failed")),
        artifacts=(Key(EXPERIMENT_JSON, "the experiment config as run"),
                   Key(f"{SPACES_FOLDER}/<name>.yaml", "each method's search space"),
                   Key(SUMMARY_JSON, "the search's summary"),
                   Key(SUMMARY_MD, "the summary table, as the MLflow UI renders it"),
                   Key(f"{OPTUNA_FOLDER}/<name>.png", "Optuna's plots of each pair's study: "
                       "`<method>-<backbone>_history`, `_parallel`, `_importances`"))),
    TRIAL: Record(
        "one trial of a search, a child run of its search run",
        tags=(_RUN_NAME, Key(KIND, "trial"), *_PAIR_TAGS,
              Key(PARENT, "the search run"),
              Key(RAY_TRIAL_ID, "Ray Tune's trial id (a restored search finds its runs by it)"),
              Key(RAY_TRIAL_NAME, "Ray Tune's trial name"),
              Key(TUNE_RUN, "the Tune run the trial ran in: the search's name, or a "
                  "--more-trials round's `<name>+<time>` (only its own runs are retired)"),
              Key(TRIAL_NUMBER, "1, 2, ... per pair in start order (the #NN of the run name)"),
              Key(RAY_NODE_ID, "the Ray node the trial ran on"),
              Key(SELECTION_SPLIT, f"where the trial selects: {protocol.SELECTION_SPLIT}"),
              Key(SELECTED_ON, "the split the selected epoch was chosen on"),
              Key(SELECTED_EPOCH, "the selected epoch, 0-based"),
              Key(selected("<choice>"), "a post-hoc choice at the selected epoch "
                  f"({', '.join(CHOICES)})"),
              Key(FAILURE_REASON, "the exception line of a failed trial"),
              Key(RECIPE_SOURCE, "where the trial's recipe comes from: its search-space row's "
                  "source (paper section, code file:line), or `built-in defaults`"),
              Key(ORPHANED, "a run a killed driver left, its budget spent on a new trial"),
              Key(TEST_EVALUATIONS, "how often test was read for its checkpoint (`wsol "
                  "evaluate` of its run id or of a version registered from it)")),
        params=(Key("pair", "<method>/<backbone>"),
                Key("<trial field or hyperparameter>",
                    "a sampled or fixed value: a trial config field or a method hyperparameter"),
                Key(f"{RECIPE_PARAM_PREFIX}<trial field or hyperparameter>",
                    "the recipe card: the trial's resolved recipe (epochs, milestones, decay, "
                    "batch sizes, Nesterov, augmentation, head, rates, warm-up)"),),
        metrics=(Key(per_epoch("<metric>"), "train-fullsup numbers per evaluated epoch"),
                 Key(selected_metric("<metric>"), "the same at the selected epoch "
                     f"({SCORE}: the selection score promote ranks by)")),
        artifacts=(Key(CHECKPOINT, "weights of the selected epoch, its config and choices "
                       "(the registered model's source)"),
                   Key(METRICS_JSON, "the selected epoch's numbers and the history"),
                   *_PICTURES)),
    EVALUATION: Record(
        "a test evaluation (`wsol evaluate`), in its trial's experiment",
        tags=(_RUN_NAME, Key(KIND, "evaluation"), *_PAIR_TAGS,
              Key(SPLIT, protocol.TEST_SPLIT),
              Key(TRIAL_RUN_ID, "the trial whose checkpoint was evaluated"),
              Key(MODEL_URI, "what was asked for: models:/<name>@<alias>, .../<version>, a "
                  "run id"),
              Key(MODEL_NAME, "the registered model, if a version was evaluated"),
              Key(MODEL_VERSION, "its version"),
              Key(EVALUATION_NUMBER, "1 for the first reading of test of this trial's "
                  "checkpoint, 2, ... (by version or run id alike)"),
              *_COMPARE_TAGS),
        params=tuple(Key(p, "reused from the trial" if p != "epoch" else "the selected epoch")
                     for p in EVALUATION_PARAMS),
        metrics=(Key(test_metric("<test metric>"), "the test numbers (and thresholds); "
                     "`minmax_` ones: the same maps normalised with min-max alone"),),
        artifacts=(Key(TEST_METRICS_JSON, "the printed result"), *_PICTURES)),
    COMPARE: Record(
        f"a `wsol compare`, in the {COMPARE_EXPERIMENT} experiment",
        tags=(_RUN_NAME, Key(KIND, "compare"), Key(COMPARE_ID, "the compare's id"),
              Key(DATASET, "the experiment's dataset")),
        params=tuple(Key(p, "the compare's setting") for p in COMPARE_PARAMS),
        artifacts=(Key(COMPARE_JSON, "ids, runs and test numbers per seed"),)),
    REPORT: Record(
        f"a `wsol report`, in the {REPORT_EXPERIMENT} experiment",
        tags=(_RUN_NAME, Key(KIND, "report"), Key(COMPARE_ID, "the compare it reports")),
        artifacts=(Key("report.<name>", "the table: .md, .csv, .tex"),
                   Key("<name>.csv", "another table (compare, selected, importance)"),
                   Key("<name>.tex", "the same in LaTeX"),
                   Key("<name>.png", "a plot"))),
    "model_version": Record(
        "a registered model version (`wsol promote`), model wsol-<dataset>-<method>-<backbone>",
        tags=(*_PAIR_TAGS,
              Key(version_tag("<version choice>"), "the trial's choices, epoch and "
                  "selection split, reused by the evaluation"),
              Key(TRIAL_RUN_ID, "the promoted trial run"),
              Key(SEARCH_RUN_ID, "its search run"),
              Key(EXPERIMENT_ID, "its MLflow experiment"),
              Key(CODE_VERSION, "the search's code version"),
              Key(DATASET_FINGERPRINT, "the search's dataset fingerprint"),
              Key(TRAIN_FULLSUP_SCORE, "the selection score it was promoted with"),
              Key(CHECKPOINT_SHA256, "sha256 of the trial's best.pt when promoted; `wsol "
                  "evaluate` refuses a checkpoint that differs"),
              Key(TEST_EVALUATIONS, "how often test was read for it (as the trial run's "
                  "count: by version or run id alike)"),
              Key(LAST_EVALUATION_RUN, "its latest evaluation run"),
              *_COMPARE_TAGS)),
    "experiment": Record(
        "an MLflow experiment the project creates or writes to",
        tags=(Key(EXPERIMENT_KIND, f"{MODEL_TRAINING}: the UI's model-training view"),)),
}
