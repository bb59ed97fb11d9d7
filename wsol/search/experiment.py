"""The experiment config of a search: dataset, pairs, budget, scheduler, resources."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsol.common.paths import expand, project_file
from wsol.search.pairs import pair_name
from wsol.trial.config import FILE_RELATIVE_KEYS as TRIAL_FILE_KEYS
from wsol.trial.config import ConfigError, config_from_dict, paths_relative_to_file, read_yaml

# Which row of the papers' default tables a dataset takes (fine-grained birds against the
# general-object sets; the synthetic classes differ by one small part, like CUB's).
DATASET_FAMILIES = {"cub": "fine_grained", "synthetic": "fine_grained", "ilsvrc": "generic",
                    "imagenet": "generic", "openimages": "generic"}

# Optuna samplers by name: TPE (multivariate), random search, Gaussian-process BO, CMA-ES,
# quasi-Monte Carlo.
SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")

# Keys of an experiment file that name inputs: relative values are relative to the file.
FILE_RELATIVE_KEYS = ("data_root", "metadata_root", "search_spaces", "storage_path")


@dataclass
class Experiment:
    name: str = "wsol-synthetic-demo"
    dataset: str = "synthetic"
    # fine_grained | generic: picks the papers' default rows; default from `dataset`.
    family: str | None = None
    data_root: str = "data/synthetic-demo"
    metadata_root: str | None = None
    # Generate the synthetic benchmark with this preset when data_root does not exist yet
    # (and warn when the existing one was written with other knobs or an older generator).
    synthetic_preset: str | None = "demo"
    methods: list[str] = field(default_factory=lambda: ["cam", "minmaxcam", "bgc", "weightmap"])
    backbones: list[str] = field(default_factory=lambda: ["tiny"])
    trials_per_pair: int = 4
    time_budget_s: float | None = None
    max_concurrent: int = 2
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    # Optuna's sampler per pair, seeded (see SAMPLERS); random is the protocol's baseline.
    sampler: str = "tpe"
    # Where the per-pair Optuna studies persist: None for a journal file beside the search's
    # local state, or an RDB URL (e.g. postgresql://...) that the driver can reach.
    optuna_storage: str | None = None
    # How often a trial whose worker or node died is restarted from its last checkpoint.
    max_failures: int = 2
    # {type: asha, grace_period, reduction_factor} or {type: fifo}
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha",
                                                                 "grace_period": 2,
                                                                 "reduction_factor": 2})
    # The folder of <method>.yaml search spaces; default: the project's search_spaces/.
    search_spaces: str | None = None
    # Trial settings shared by all trials (any TrialConfig key), and per-method fixed values.
    trial: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Search ranges that replace a space's: {lr: {low: .., high: ..}} for every method that
    # searches lr, {bgc.lambda_sim: {...}} for one method (e.g. a CPU demo's larger rates).
    param_ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    storage_path: str = "mlruns/ray"
    tracking_uri: str | None = None
    ray_address: str | None = None

    def pairs(self) -> list[str]:
        return [pair_name(m, b) for m in self.methods for b in self.backbones]

    def trial_base(self) -> dict[str, Any]:
        """Absolute paths: trials run in their own working directories, on any node."""
        base = {**self.trial, "data_root": str(Path(expand(self.data_root)).resolve()),
                "seed": self.seed}
        if self.metadata_root:
            base["metadata_root"] = str(Path(expand(self.metadata_root)).resolve())
        return base

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


_FIELDS = {f.name for f in dataclasses.fields(Experiment)}


def experiment_from_dict(values: dict[str, Any], source: str = "experiment") -> Experiment:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}")
    try:
        experiment = Experiment(**values)
    except TypeError as error:
        raise ConfigError(f"{source}: {error}") from None
    if experiment.trials_per_pair < 1:
        raise ConfigError(f"{source}: trials_per_pair must be at least 1")
    if experiment.max_failures < 0:
        raise ConfigError(f"{source}: max_failures must be 0 or more")
    if experiment.sampler not in SAMPLERS:
        raise ConfigError(f"{source}: sampler must be one of {', '.join(SAMPLERS)}, "
                          f"got {experiment.sampler!r}")
    if experiment.scheduler.get("type") not in ("asha", "fifo"):
        raise ConfigError(f"{source}: scheduler.type must be asha or fifo")
    if experiment.family not in (None, "fine_grained", "generic"):
        raise ConfigError(f"{source}: family must be fine_grained or generic, "
                          f"got {experiment.family!r}")
    if experiment.family is None and experiment.dataset.lower() not in DATASET_FAMILIES:
        raise ConfigError(f"{source}: family: dataset {experiment.dataset!r} is not one of "
                          f"{', '.join(DATASET_FAMILIES)}; say fine_grained or generic")
    for key in experiment.param_ranges:
        method = key.split(".", 1)[0] if "." in key else None
        if method is not None and method not in experiment.methods:
            raise ConfigError(f"{source}: param_ranges.{key}: {method} is not searched here")
    config_from_dict(experiment.trial_base(), f"{source}: trial")
    return experiment


def load_experiment(path: str | Path | None, overrides: dict[str, Any] | None = None
                    ) -> Experiment:
    """The file's relative input paths are made relative to the file (see wsol.common.paths); the
    overrides come from the command line and are taken as given."""
    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            loaded = read_yaml(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read experiment: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        loaded = paths_relative_to_file(loaded, FILE_RELATIVE_KEYS, Path(path))
        if isinstance(loaded.get("trial"), dict):
            loaded["trial"] = paths_relative_to_file(loaded["trial"], TRIAL_FILE_KEYS, Path(path))
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return experiment_from_dict(values, source)
