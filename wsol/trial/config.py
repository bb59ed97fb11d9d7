"""The configuration of one trial, loaded from YAML (and `--set KEY=VALUE`) with unknown keys and
wrong types refused."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from wsol.common import protocol
from wsol.common.paths import relative_to_file
from wsol.common.typed_config import (
    STRICT,
    ConfigError,
    OverrideError,
    Seed,
    build,
    check_value,
    finite,
    read_mapping,
    read_yaml,
)
from wsol.data.shards import is_shard_uri, uri_problem

__all__ = ["RECIPE_CARD_FIELDS", "SCHEDULE_FIELDS", "ConfigError", "OverrideError", "TrialConfig",
           "apply_overrides", "config_from_dict", "load_config", "parse_overrides", "read_yaml"]


def _either(values: Sequence[object]) -> str:
    """`a, b or c`, for the rule an error message states."""
    words = [str(v) for v in values]
    return f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else words[0]

# Upper bounds no real setting reaches, so that a slip (`epochs: 1000000000`, `lr: .inf`) is
# refused on load rather than a trial that never ends, or runs out of memory, or trains on nan.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_IMAGE_SIZE = 4_096  # pixels a side: resize, crop, eval_size
MAX_WORKERS = 256
MAX_LR = 100.0  # SGD rates are well below 1; large-batch LARS schedules peak near 10
MAX_WEIGHT_DECAY = 1.0

Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Size = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]
Rate = Annotated[float, finite(above=0, high=MAX_LR)]
Percentile = Annotated[float, finite(0, 100)]
# "auto" (CUDA when there is one, else the CPU) or a torch device the trial runner uses.
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")
DEVICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(config=STRICT)
class TrialConfig:
    method: str = "cam"
    backbone: str = "tiny"
    # None: random init; "imagenet": torchvision's IMAGENET1K_V1 download (the weights the
    # papers start from); or a path to a state dict.
    weights: str | None = None
    large_feature_map: bool = False
    # A folder, or s3://bucket/prefix of `wsol data shard` shards (wsol/data/shards.py), which
    # each node fetches once into its local cache; the metadata is then a local folder.
    data_root: str = "data/synthetic-demo"
    # default: <data_root>/metadata
    metadata_root: Annotated[str | None, Field(validate_default=True)] = None
    mask_root: str | None = None  # default: data_root
    epochs: Epochs = 10
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 32
    lr: Rate = 0.01
    lr_classifier_ratio: Annotated[float, finite(above=0, high=1000)] = 10.0
    weight_decay: Annotated[float, finite(0, MAX_WEIGHT_DECAY)] = 5e-4
    momentum: Annotated[float, finite(0, below=1)] = 0.9
    # Nesterov momentum (wsolevaluation main.py:161, BGC trainer.py:179 and MinMaxCAM
    # train.py:254 all use it); needs momentum > 0.
    nesterov: bool = False
    lr_milestones: list[Epochs] = field(default_factory=list)
    # The factor the rates are multiplied by at each milestone: 0.1 in wsolevaluation
    # (main.py:337-340) and MinMaxCAM (train.py:277), 0.2 in BGC's CUB configs.
    lr_decay: Annotated[float, finite(above=0, high=1)] = 0.1
    # ResNets: whether layer4 trains at lr * lr_classifier_ratio ("ratio": BGC appendix B and
    # wsolevaluation main.py:72-75) or at lr ("base": BGC's trainer.py:78-81 and MinMaxCAM's
    # train.py:251-254 put only the classifier at the higher rate).
    layer4_rate: Literal["ratio", "base"] = "ratio"
    # The new classifier's initialisation: "default" (PyTorch's) or "normal" (N(0, 0.01),
    # bias 0: wsolevaluation and BGC wsol/util.py initialize_weights).
    head_init: Literal["default", "normal"] = "default"
    # ResNets with ImageNet-1K weights on a 1000-class dataset: start `fc` from the weights'
    # classifier, as wsolevaluation and BGC do on ILSVRC (wsol/resnet.py load_pretrained_model).
    keep_pretrained_fc: bool = False
    # Random vertical flips in training besides the horizontal ones (MinMaxCAM train.py:136).
    vertical_flip: bool = False
    resize: Size = 256
    crop: Size = 224  # at most resize
    eval_size: Size = 224
    eval_every: Epochs = 1
    curve_interval: float = protocol.CURVE_INTERVALS[0]
    # "auto": MaxBoxAccV2 where train-fullsup has boxes, else PxAP.
    selection_metric: Literal["auto", protocol.SelectionMetric] = protocol.AUTO
    # "train_fullsup" (the protocol) or "label_free" (the method's own rule, e.g. the weight
    # map's S); either way train-fullsup metrics are recorded.
    selection: Literal["train_fullsup", "label_free"] = "train_fullsup"
    normalisations: Annotated[list[protocol.Normalisation], Field(min_length=1)] = \
        field(default_factory=lambda: list(protocol.NORMALISATIONS))
    ivr_percentiles: Annotated[list[Percentile], Field(min_length=1)] = field(
        default_factory=lambda: list(protocol.DEFAULT_IVR_PERCENTILES))
    pas_percentile: Percentile = protocol.DEFAULT_PAS_PERCENTILE
    seed: Seed = 0
    device: str = "auto"  # see DEVICES
    # Mixed precision for training steps (float16 with loss scaling on CUDA, bfloat16 on CPU);
    # score maps for evaluation are always computed in float32.
    amp: bool = False
    # NHWC memory layout for the model and its inputs (faster convolutions on tensor cores).
    channels_last: bool = False
    num_workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] = 0
    params: dict[str, Any] = field(default_factory=dict)

    @field_validator("curve_interval")
    @classmethod
    def _one_of_the_curve_steps(cls, value: float) -> float:
        if value not in protocol.CURVE_INTERVALS:
            raise ValueError(_either(protocol.CURVE_INTERVALS))
        return value

    @field_validator("crop")
    @classmethod
    def _inside_the_resized_image(cls, value: int, info: ValidationInfo) -> int:
        resize = info.data.get("resize")
        if resize is not None and value > resize:
            raise ValueError(f"<= resize ({resize}): the crop is cut from the resized image")
        return value

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("momentum") == 0:
            raise ValueError("Nesterov momentum needs momentum > 0; set nesterov: false")
        return value

    @field_validator("data_root")
    @classmethod
    def _a_folder_or_shards(cls, value: str) -> str:
        why = uri_problem(value)
        if why:
            raise ValueError(f"a folder or s3://bucket/prefix ({why})")
        return value

    @field_validator("metadata_root")
    @classmethod
    def _local_beside_shards(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and is_shard_uri(info.data.get("data_root", "")):
            raise ValueError("set: a local folder, required when data_root is an s3:// URI "
                             "(e.g. the bundled metadata under wsol/data/benchmark_metadata)")
        return value

    @field_validator("device")
    @classmethod
    def _a_known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(DEVICES)
        return value

    @property
    def metadata_dir(self) -> Path:
        return Path(self.metadata_root or Path(self.data_root) / "metadata")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}

# A paper's training recipe beyond its loss weights and rates: what a search space's default
# row carries for its setting, what `recipe: own` leaves to the experiment, and (with the rates
# below) what a trial's recipe card records. A method adds its own (Method.recipe_params).
SCHEDULE_FIELDS = ("epochs", "batch_size", "weight_decay", "momentum", "nesterov",
                   "lr_milestones", "lr_decay", "layer4_rate", "head_init",
                   "keep_pretrained_fc", "vertical_flip")
RECIPE_CARD_FIELDS = ("lr", "lr_classifier_ratio", "large_feature_map", "resize", "crop",
                      *SCHEDULE_FIELDS)


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrialConfig:
    return build(TrialConfig, values, source)


# Keys of a trial config that name inputs; `weights` also takes the names below.
FILE_RELATIVE_KEYS = ("data_root", "metadata_root", "mask_root", "weights")
WEIGHT_NAMES = ("imagenet", "synthetic-pretrained")


def paths_relative_to_file(values: dict[str, Any], keys: tuple[str, ...],
                           file: Path) -> dict[str, Any]:
    """Relative paths written in `file` are relative to its folder (the rule of wsol.common.paths).

    Values that are not strings are left for the type checks, which name the key."""
    resolved = dict(values)
    for key in keys:
        value = values.get(key)
        if isinstance(value, str) and not (key == "weights" and value in WEIGHT_NAMES):
            resolved[key] = relative_to_file(value, file)
    return resolved


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrialConfig:
    """YAML file (optional) merged with overrides (e.g. CLI flags) over the defaults."""
    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        values.update(paths_relative_to_file(read_mapping(path), FILE_RELATIVE_KEYS, Path(path)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, source)


# --set KEY=VALUE ------------------------------------------------------------------------------

def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` items (the repeatable `--set`) as {key: value}, each value read with
    read_yaml as a config file's would be. Only the syntax is checked here; which keys
    exist depends on the method, see `apply_overrides`."""
    overrides: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep:
            raise OverrideError(f"--set {item}: expected KEY=VALUE (e.g. --set lr=0.001)")
        if not key:
            raise OverrideError(f"--set {item}: the key is empty; expected KEY=VALUE")
        if "." in key or "[" in key:
            head, _, tail = key.partition(".")
            hint = (f"set method hyperparameters by their own name: --set {tail}={text}"
                    if head == "params" and tail else "KEY is a trial field or a method "
                    "hyperparameter")
            raise OverrideError(f"--set {key}: nested keys are not supported; {hint}")
        if key in texts:
            raise OverrideError(f"--set {key}: given twice ({key}={texts[key]} and {key}={text}); "
                                "give it once")
        texts[key] = text
        if not text:
            raise OverrideError(f"--set {key}: empty value (write {key}=null for none)")
        try:
            overrides[key] = read_yaml(text)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise OverrideError(f"--set {key}: {text!r} is not a YAML value: {problem}") from None
    return overrides


def _unknown_key(key: str, method: str, own: Mapping[str, Any],
                 hyperparameters: Mapping[str, Mapping[str, Any]]) -> OverrideError:
    """Names the methods that do have `key`, or the close names, or every known one."""
    owners = [name for name, defaults in sorted(hyperparameters.items()) if key in defaults]
    mine = f"{method} hyperparameters: {', '.join(sorted(own)) or 'none'}"
    if owners:
        return OverrideError(f"--set {key}: not a hyperparameter of {method} (it belongs to "
                             f"{' and '.join(owners)}); {mine}")
    fields = sorted(set(_FIELDS) - {"params"})
    every = {name for defaults in hyperparameters.values() for name in defaults}
    close = difflib.get_close_matches(key, [*fields, *sorted(every)], n=3, cutoff=0.6)
    if close:
        return OverrideError(f"--set {key}: unknown key; did you mean {' or '.join(close)}?")
    return OverrideError(f"--set {key}: unknown key; trial fields: {', '.join(fields)}; "
                         f"{mine}")


def apply_overrides(config: TrialConfig, overrides: Mapping[str, Any],
                    hyperparameters: Mapping[str, Mapping[str, Any]]) -> TrialConfig:
    """`--set` values over a loaded config (they win over the file and the flags).

    A key is a TrialConfig field, or a hyperparameter of the config's method (its `defaults`,
    given per method in `hyperparameters`), which goes into `params`. Values get the checks a
    config file's get, the hyperparameters that of the type of their default; every error is
    an OverrideError naming the key."""
    values = config.to_dict()
    params = dict(values["params"])
    if "method" in overrides:
        method = overrides["method"]
        if not isinstance(method, str) or method not in hyperparameters:
            raise OverrideError(f"--set method: unknown method {method!r}; known: "
                                f"{', '.join(sorted(hyperparameters))}")
        values["method"] = method
    method = values["method"]
    own = hyperparameters.get(method)
    for key, raw in overrides.items():
        if key == "params":
            raise OverrideError(f"--set params: set method hyperparameters one at a time, "
                                f"e.g. --set {next(iter(own or {}), 'KEY')}=VALUE")
        if key in _FIELDS:
            try:
                checked = build(TrialConfig, {**config.to_dict(), key: raw}, "--set")
            except ConfigError as error:
                as_list = (f" (a list is written {key}=[{raw}])" if error.rule == "a list"
                           else "")
                raise OverrideError(f"--set {key}: {_detail(error, key)}{as_list}") from None
            values[key] = getattr(checked, key)
        elif own is None:
            raise OverrideError(f"--set {key}: not a trial field, and method {method!r} is "
                                f"unknown (known: {', '.join(sorted(hyperparameters))})")
        elif key in own:
            default = own[key]
            if default is None:
                params[key] = raw
                continue
            try:
                params[key] = check_value(type(default), raw, "--set", key)
            except ConfigError as error:
                raise OverrideError(f"--set {key}: {_detail(error, key)} (a {method} "
                                    f"hyperparameter; default {default!r})") from None
        else:
            raise _unknown_key(key, method, own, hyperparameters)
    values["params"] = params
    return TrialConfig(**values)


def _detail(error: ConfigError, key: str) -> str:
    """A ConfigError from source "--set" without the parts `--set KEY:` already says."""
    return str(error).removeprefix("--set: ").removeprefix(f"{key}: ")
