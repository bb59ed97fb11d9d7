"""The experiment config of a search: dataset, pairs, budget, scheduler, resources."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field
from pydantic.dataclasses import dataclass

from wsol.common.factories import Factories
from wsol.common.outages import outage_limit_s
from wsol.common.paths import expand, is_uri, project_file
from wsol.common.typed_config import (
    STRICT,
    ConfigError,
    Seed,
    build,
    check_value,
    finite,
    read_mapping,
)
from wsol.data.bundled import bundled_metadata, bundled_name
from wsol.data.manifest import how_to_prepare
from wsol.data.synthetic import PRESETS
from wsol.methods.base import METHODS, method_order
from wsol.models.backbones import BACKBONES
from wsol.search.pairs import pair_name
from wsol.trial.config import FILE_RELATIVE_KEYS as TRIAL_FILE_KEYS
from wsol.trial.config import (
    MAX_EPOCHS,
    TrialConfig,
    config_from_dict,
    paths_relative_to_file,
)

# Which row of the papers' default tables a dataset takes (fine-grained birds against the
# general-object sets; the synthetic classes differ by one small part, like CUB's).
DATASET_FAMILIES = {"cub": "fine_grained", "synthetic": "fine_grained", "ilsvrc": "generic",
                    "imagenet": "generic", "openimages": "generic"}

# The one dataset a search may generate (synthetic_preset).
SYNTHETIC = "synthetic"

# Optuna samplers by name: TPE (multivariate), random search, Gaussian-process BO, CMA-ES,
# quasi-Monte Carlo.
Sampler = Literal["tpe", "random", "gp", "cmaes", "qmc"]
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)

# What method_params may set besides a method's hyperparameters: its trials' settings.
TRIAL_SETTINGS = {f.name for f in dataclasses.fields(TrialConfig)} - {"method", "backbone",
                                                                       "params"}

# Keys of an experiment file that name inputs: relative values are relative to the file.
FILE_RELATIVE_KEYS = ("data_root", "metadata_root", "search_spaces", "storage_path")


NonEmpty = Annotated[str, Field(min_length=1)]
Names = Annotated[list[NonEmpty], Field(min_length=1)]

# An experiment's name names folders (Ray's run, the search's log) and the MLflow experiment:
# no path separators, no leading dot, no spaces or newlines.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', not starting with '.'"

# Upper bounds no real search reaches (a slip such as `max_concurrent: 100000` is refused).
MAX_CONCURRENT = 4_096
MAX_TRIALS_PER_PAIR = 100_000
MAX_FAILURES = 1_000
MAX_TIME_BUDGET_S = 365 * 24 * 3600  # a year


@dataclass(config=STRICT)
class Resources:
    """What one trial asks Ray for: Ray takes any other key as a custom resource that no node
    has, and the trial would wait for it forever, so only these are known."""

    cpu: Annotated[float, finite(0, 1024)] | None = None
    gpu: Annotated[float, finite(0, 64)] | None = None
    memory: Annotated[float, finite(0, 2**44)] | None = None  # bytes (16 TiB)


@dataclass(config=STRICT)
class Scheduler:
    """ASHA (per pair: trials of one pair compete) or FIFO (every trial runs all its epochs)."""

    type: Literal["asha", "fifo"] = "asha"
    grace_period: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 2
    reduction_factor: Annotated[float, finite(above=1, high=100)] = 2.0
    # Pairs train for their own recipes' epochs (each pair's ASHA stops at them: max_t). The
    # first rung comes after a method's warm-up or first phase (BGC's warm, the weight map's
    # classifier_epochs), then: "epochs": grace_period epochs later for every pair;
    # "fraction": grace_period counts epochs of the shortest span after those phases and is
    # scaled to each pair's span, so every pair is first judged at the same fraction of its
    # full-objective training. Equal for all pairs either way: the number of trials
    # (trials_per_pair); see wsol.search.pair_spaces.pair_rungs.
    rungs: Literal["epochs", "fraction"] = "fraction"


@dataclass(config=STRICT)
class ParamRange:
    """An experiment's replacement for some fields of a searched parameter's range."""

    low: Annotated[float, finite()] | None = None
    high: Annotated[float, finite()] | None = None
    log: bool | None = None
    choices: Annotated[list[Any], Field(min_length=1)] | None = None


@dataclass(config=STRICT)
class Experiment:
    name: NonEmpty = "wsol-synthetic-demo"
    dataset: NonEmpty = "synthetic"
    # fine_grained | generic: picks the papers' default rows; default from `dataset`.
    family: Literal["fine_grained", "generic"] | None = None
    data_root: NonEmpty = "data/synthetic-demo"
    # Default: the metadata the package ships for cub, ilsvrc (imagenet) and openimages,
    # <data_root>/metadata for any other dataset.
    metadata_root: str | None = None
    # dataset: synthetic only (null for any other): generate the synthetic benchmark with this
    # preset when data_root does not exist yet (and warn when the existing one was written
    # with other knobs or an older generator); null: synthetic data of your own.
    synthetic_preset: str | None = "demo"
    # Default: every registered method, in report order.
    methods: Names = field(default_factory=method_order)
    backbones: Names = field(default_factory=lambda: ["tiny"])
    trials_per_pair: Annotated[int, Field(ge=1, le=MAX_TRIALS_PER_PAIR)] = 4
    time_budget_s: Annotated[float, finite(above=0, high=MAX_TIME_BUDGET_S)] | None = None
    max_concurrent: Annotated[int, Field(ge=1, le=MAX_CONCURRENT)] = 2
    # cpu, gpu, memory (bytes): see Resources.
    resources_per_trial: dict[NonEmpty, float] = field(default_factory=lambda: {"cpu": 1})
    # Optuna's sampler per pair, seeded (see SAMPLERS); random is the protocol's baseline.
    # The default is the replay benchmark's pick (docs/search/efficiency.md): with ASHA it
    # reached random search's final best in a median 0.31 of random's epochs.
    sampler: Sampler = "gp"
    # Where the per-pair Optuna studies persist: None for a journal file beside the search's
    # local state (with an s3:// storage_path: mlruns/logs/<name>/optuna.journal under the
    # driver's working directory, on the driver's disk only, so --restore works only there),
    # or an RDB URL (e.g. postgresql://...) that the driver can reach: the choice for a head
    # that may be lost. Give its password through the database's own means (~/.pgpass):
    # Tune's searcher checkpoint keeps the URL as written.
    optuna_storage: str | None = None
    # How often a trial whose worker or node died is restarted from its last checkpoint.
    max_failures: Annotated[int, Field(ge=0, le=MAX_FAILURES)] = 2
    # {type: asha, grace_period, reduction_factor} or {type: fifo}
    scheduler: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(Scheduler()))
    # The folder of <method>.yaml search spaces; default: the project's search_spaces/.
    search_spaces: str | None = None
    # "paper": each pair takes its search-space row's whole recipe (epochs, milestones and
    # decay, batch sizes per phase, Nesterov, augmentation, head, warm-up: see
    # wsol.trial.config.SCHEDULE_FIELDS); "own": only the rows' loss weights and rates, the
    # schedule is `trial:`'s. None: "paper" for experiments whose trials ask for a GPU, "own"
    # for CPU ones. Either way a value set in `trial:` or method_params wins over the row's.
    recipe: Literal["paper", "own"] | None = None
    # Trial settings shared by all trials (any TrialConfig key), and per-method fixed values.
    trial: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[NonEmpty, Any]] = field(default_factory=dict)
    # Search ranges that replace a space's: {lr: {low: .., high: ..}} for every method that
    # searches lr, {bgc.lambda_sim: {...}} for one method (e.g. a CPU demo's larger rates).
    param_ranges: dict[NonEmpty, dict[str, Any]] = field(default_factory=dict)
    seed: Seed = 0
    storage_path: NonEmpty = "mlruns/ray"
    tracking_uri: str | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        """Only the synthetic dataset is ever generated: a real one that is missing stops
        the search (wsol.data.manifest.data_problem) instead of being replaced."""
        if self.dataset.lower() != SYNTHETIC:
            self.synthetic_preset = None

    def pairs(self) -> list[str]:
        return [pair_name(m, b) for m in self.methods for b in self.backbones]

    def metadata_dir(self) -> Path:
        """metadata_root; else the bundled metadata of a known benchmark, unless it has no
        train list and `wsol data prepare` wrote one beside the data (ILSVRC: its train list
        is built from the user's train tar); else <data_root>/metadata. An s3:// data_root
        has no folder beside it: a known benchmark's bundled metadata, else metadata_root."""
        if self.metadata_root:
            return Path(expand(self.metadata_root)).resolve()
        data_root = expand(self.data_root)
        beside = None if is_uri(data_root) else Path(data_root).resolve() / "metadata"
        known = bundled_name(self.dataset)
        if known is None:
            if beside is None:
                raise ConfigError(f"{self.name}: metadata_root: required when data_root is a "
                                  "URI (no metadata folder beside it)")
            return beside
        bundled = bundled_metadata(known)
        train_list = Path("train", "image_ids.txt")
        if (beside is not None and not (bundled / train_list).is_file()
                and (beside / train_list).is_file()):
            return beside
        return bundled

    def trial_base(self) -> dict[str, Any]:
        """Absolute paths: trials run in their own working directories, on any node."""
        data_root = expand(self.data_root)  # an s3:// shard prefix is kept as written
        base = {**self.trial, "seed": self.seed,
                "data_root": data_root if is_uri(data_root) else str(Path(data_root).resolve())}
        if self.metadata_root or bundled_name(self.dataset):
            base["metadata_root"] = str(self.metadata_dir())
        return base

    def recipe_mode(self) -> str:
        """`recipe`, or its default: the papers' recipes where trials run on GPUs."""
        if self.recipe is not None:
            return self.recipe
        return "paper" if self.resources_per_trial.get("gpu", 0) > 0 else "own"

    def dataset_family(self) -> str:
        return self.family or DATASET_FAMILIES[self.dataset.lower()]

    def pretrained(self) -> bool:
        """Whether the papers' rows for ImageNet-pretrained bodies apply. The tiny body
        pretrained on a synthetic task is another regime: its rates are the from-scratch ones."""
        return self.trial.get("weights") not in (None, "synthetic-pretrained")

    def ranges_for(self, method: str, searched: set[str]) -> dict[str, dict[str, Any]]:
        """param_ranges that apply to one method's space: the shared keys it searches, and
        its own keys (which win, and must name a searched parameter)."""
        common = {k: v for k, v in self.param_ranges.items() if "." not in k and k in searched}
        own = {k.split(".", 1)[1]: v for k, v in self.param_ranges.items()
               if k.startswith(f"{method}.")}
        return {**common, **own}

    def spaces_dir(self) -> Path:
        if self.search_spaces is not None:
            return Path(expand(self.search_spaces))
        return project_file("search_spaces", "search spaces")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def experiment_from_dict(values: dict[str, Any], source: str = "experiment") -> Experiment:
    """Types and ranges first (pydantic), then what depends on other keys or on the methods
    and backbones this installation knows; every error names `source` and the key path."""
    values = dict(values)
    if isinstance(values.get("scheduler"), dict):
        values["scheduler"] = dataclasses.asdict(
            build(Scheduler, values["scheduler"], source, "scheduler"))
    if isinstance(values.get("resources_per_trial"), dict):
        given = build(Resources, values["resources_per_trial"], source, "resources_per_trial")
        values["resources_per_trial"] = {k: v for k, v in dataclasses.asdict(given).items()
                                         if v is not None}
    experiment = build(Experiment, values, source)
    if not NAME.fullmatch(experiment.name):
        name = experiment.name
        shown = repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"
        raise ConfigError(f"{source}: name: {shown} is not {NAME_RULE}")
    _known(experiment.methods, METHODS, source, "methods")
    _known(experiment.backbones, BACKBONES, source, "backbones")
    if values.get("synthetic_preset") is not None and experiment.dataset.lower() != SYNTHETIC:
        hint = how_to_prepare(experiment.dataset, Path(expand(experiment.data_root)))
        raise ConfigError(f"{source}: synthetic_preset: only dataset: {SYNTHETIC} is generated; "
                          f"dataset {experiment.dataset!r} is real data: drop synthetic_preset "
                          f"and prepare it with {hint}")
    if experiment.synthetic_preset is not None and experiment.synthetic_preset not in PRESETS:
        raise ConfigError(f"{source}: synthetic_preset: {experiment.synthetic_preset!r} is not "
                          f"one of {', '.join(PRESETS)} (or null for data of your own)")
    if experiment.family is None and experiment.dataset.lower() not in DATASET_FAMILIES:
        raise ConfigError(f"{source}: family: dataset {experiment.dataset!r} is not one of "
                          f"{', '.join(DATASET_FAMILIES)}; say fine_grained or generic")
    for key, spec in experiment.param_ranges.items():
        method = key.split(".", 1)[0] if "." in key else None
        if method is not None and method not in experiment.methods:
            raise ConfigError(f"{source}: param_ranges.{key}: {method} is not searched here")
        build(ParamRange, spec, source, f"param_ranges.{key}")
    for method, params in experiment.method_params.items():
        _method_params(experiment, method, params, source)
    config_from_dict(experiment.trial_base(), f"{source}: trial")
    _scheduler_fits(experiment, source)
    check_outage_limit()
    return experiment


def _scheduler_fits(experiment: Experiment, source: str) -> None:
    """ASHA's first rung (grace_period) must come at or before a trial's last epoch: the
    trials' epochs (ASHA's max_t) and each method's own `epochs` in method_params."""
    if experiment.scheduler.get("type") != "asha":
        return
    grace = experiment.scheduler["grace_period"]
    default = TrialConfig.epochs
    epochs = [(f"trial.epochs {experiment.trial['epochs']}" if "epochs" in experiment.trial
               else f"the default trial.epochs {default}",
               experiment.trial.get("epochs", default))]
    if "epochs" not in experiment.trial and experiment.recipe_mode() == "paper":
        epochs = []  # each pair's recipe has its epochs: checked per pair (pair_rungs)
    epochs += [(f"method_params.{method}.epochs {params['epochs']}", params["epochs"])
               for method, params in experiment.method_params.items() if "epochs" in params]
    for what, count in epochs:
        if grace > count:
            raise ConfigError(f"{source}: scheduler.grace_period: {grace} is more than {what} "
                              "(ASHA's first rung must come at or before a trial's last "
                              "epoch); lower grace_period, raise epochs or use "
                              "scheduler: {type: fifo}")


def check_outage_limit() -> None:
    """$WSOL_TRACKING_OUTAGE_LIMIT_S, when set, is a finite number of seconds > 0 (nan would
    never stop a search that lost MLflow): refused before the search starts, not mid-way."""
    try:
        outage_limit_s()
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _known(names: list[str], table: Factories, source: str, key: str) -> None:
    for index, name in enumerate(names):
        if name not in table.names():
            raise ConfigError(f"{source}: {key}[{index}]: {name!r} is not one of "
                              f"{', '.join(table.names())}")
    if len(set(names)) < len(names):
        raise ConfigError(f"{source}: {key}: {names} names one twice")


def _method_params(experiment: Experiment, method: str, params: dict[str, Any],
                   source: str) -> None:
    """A method's own values: trial settings (checked as the trial's are) or its
    hyperparameters, each of the type of its default (so `tau_fg: high` is refused here, not
    inside a trial)."""
    where = f"method_params.{method}"
    if method not in experiment.methods:
        raise ConfigError(f"{source}: {where}: not one of the searched methods "
                          f"({', '.join(experiment.methods)})")
    defaults = METHODS.get(method).defaults
    settings = {k: v for k, v in params.items() if k in TRIAL_SETTINGS}
    config_from_dict({**experiment.trial_base(), **settings}, f"{source}: {where}")
    for key, value in params.items():
        if key in settings:
            continue
        if key not in defaults:
            raise ConfigError(f"{source}: {where}.{key}: not a trial setting and not a "
                              f"hyperparameter of {method} (it has "
                              f"{', '.join(sorted(defaults)) or 'none'})")
        if defaults[key] is not None:
            params[key] = check_value(type(defaults[key]), value, source, f"{where}.{key}")


def load_experiment(path: str | Path | None, overrides: dict[str, Any] | None = None
                    ) -> Experiment:
    """The file's relative input paths are made relative to the file (see wsol.common.paths); the
    overrides come from the command line and are taken as given."""
    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        loaded = paths_relative_to_file(read_mapping(path), FILE_RELATIVE_KEYS, Path(path))
        if isinstance(loaded.get("trial"), dict):
            loaded["trial"] = paths_relative_to_file(loaded["trial"], TRIAL_FILE_KEYS, Path(path))
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return experiment_from_dict(values, source)
