"""The configuration of one trial, loaded from YAML with unknown keys and wrong types refused."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsol.paths import relative_to_file


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


@dataclass
class TrialConfig:
    method: str = "cam"
    backbone: str = "tiny"
    # None: random init; "imagenet": torchvision's IMAGENET1K_V1 download (the weights the
    # papers start from); or a path to a state dict.
    weights: str | None = None
    large_feature_map: bool = False
    data_root: str = "data/synthetic-demo"
    metadata_root: str | None = None  # default: <data_root>/metadata
    mask_root: str | None = None  # default: data_root
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    lr_classifier_ratio: float = 10.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    lr_milestones: list[int] = field(default_factory=list)
    resize: int = 256
    crop: int = 224
    eval_size: int = 224
    eval_every: int = 1
    curve_interval: float = 0.01
    # "auto": MaxBoxAccV2 where train-fullsup has boxes, else PxAP.
    selection_metric: str = "auto"
    # "train_fullsup" (the protocol) or "label_free" (the method's own rule, e.g. the weight
    # map's S); either way train-fullsup metrics are recorded.
    selection: str = "train_fullsup"
    normalisations: list[str] = field(default_factory=lambda: ["minmax", "max", "pas", "ivr"])
    ivr_percentiles: list[float] = field(
        default_factory=lambda: [5.0, 10.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 60.0, 70.0]
    )
    pas_percentile: float = 90.0
    seed: int = 0
    device: str = "auto"
    # Mixed precision for training steps (float16 with loss scaling on CUDA, bfloat16 on CPU);
    # score maps for evaluation are always computed in float32.
    amp: bool = False
    # NHWC memory layout for the model and its inputs (faster convolutions on tensor cores).
    channels_last: bool = False
    num_workers: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "eval_every": self.eval_every >= 1,
            "curve_interval": self.curve_interval in (0.01, 0.001),
            "selection_metric": self.selection_metric in ("auto", "MaxBoxAccV2", "PxAP"),
            "selection": self.selection in ("train_fullsup", "label_free"),
            "normalisations": bool(self.normalisations)
            and set(self.normalisations) <= {"minmax", "max", "pas", "ivr"},
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {bad[0]}: {getattr(self, bad[0])!r}")

    @property
    def metadata_dir(self) -> Path:
        return Path(self.metadata_root or Path(self.data_root) / "metadata")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
_HINTS = typing.get_type_hints(TrialConfig)


def _accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrialConfig:
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"{source}: unknown key {key!r}")
        if not _accepts(_HINTS[key], value):
            raise ConfigError(f"{source}: {key} = {value!r} is not a {_HINTS[key]}")
    coerced = {k: float(v) if _HINTS[k] is float else v for k, v in values.items()}
    try:
        return TrialConfig(**coerced)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


# Keys of a trial config that name inputs; `weights` also takes the names below.
FILE_RELATIVE_KEYS = ("data_root", "metadata_root", "mask_root", "weights")
WEIGHT_NAMES = ("imagenet",)


def paths_relative_to_file(values: dict[str, Any], keys: tuple[str, ...],
                           file: Path) -> dict[str, Any]:
    """Relative paths written in `file` are relative to its folder (the rule of wsol.paths).

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
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        values.update(paths_relative_to_file(loaded or {}, FILE_RELATIVE_KEYS, Path(path)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, source)
