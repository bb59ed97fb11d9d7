"""search_spaces/<method>.yaml -> a validated space and an Optuna define-by-run function.

Every error names the file and the key, and is raised when the file is loaded, before any
trial starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
import pydantic

import wsol.methods  # noqa: F401  (registers the methods)
from wsol.common.typed_config import STRICT, ConfigError, build, finite, read_mapping
from wsol.methods.base import METHODS
from wsol.trial.config import TrialConfig

TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)} - {"method", "params"}
# What a row of authors' defaults is chosen by: the dataset (its name, `imagenet` read as
# `ilsvrc`), its family (fine-grained CUB against ImageNet / OpenImages), the backbone, and
# whether the body starts from pretrained weights.
ROW_SELECTORS = {"dataset": None, "family": ("fine_grained", "generic"), "backbone": None,
                 "pretrained": (True, False)}
DATASET_ALIASES = {"imagenet": "ilsvrc"}


def row_dataset(name: str) -> str:
    """A dataset's name as rows select it."""
    return DATASET_ALIASES.get(name.lower(), name.lower())


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class DefaultRow:
    """One setting's values from a paper's table, with the table it comes from."""

    when: dict[str, Any]
    values: dict[str, Any]
    source: str

    def matches(self, setting: dict[str, Any]) -> bool:
        return all(setting.get(key) == value for key, value in self.when.items())


@dataclass
class SearchSpace:
    method: str
    path: Path
    params: list[Param]
    fixed: dict[str, Any]
    less_than: dict[str, str]  # a -> b for each constraint "a < b"
    defaults: list[DefaultRow] = field(default_factory=list)

    def default_row(self, family: str, backbone: str, pretrained: bool,
                    dataset: str | None = None) -> DefaultRow | None:
        """The first row whose conditions all hold for this setting (rows go from specific
        to general); None when the method's built-in defaults apply."""
        setting = {"family": family, "backbone": backbone, "pretrained": pretrained,
                   "dataset": None if dataset is None else row_dataset(dataset)}
        return next((row for row in self.defaults if row.matches(setting)), None)

    def with_ranges(self, ranges: dict[str, dict[str, Any]], source: str) -> SearchSpace:
        """A copy whose named params take the given fields (low, high, log, choices); the
        result is validated like a param written in the file itself."""
        params = []
        for p in self.params:
            if p.name not in ranges:
                params.append(p)
                continue
            override = ranges[p.name]
            if not isinstance(override, dict):
                raise ConfigError(f"{source}: {p.name}: must be a mapping of low/high/log/choices")
            spec = {"type": p.kind, "log": p.log, "when": p.when, "source": p.source,
                    **({"choices": list(p.choices)} if p.kind == "categorical" else
                       {"low": p.low, "high": p.high}), **override}
            params.append(_param(Path(source), p.name, spec))
        unknown = sorted(set(ranges) - {p.name for p in self.params})
        if unknown:
            raise ConfigError(f"{source}: {unknown[0]}: not a searched parameter of "
                              f"{self.method} ({self.path})")
        return dataclasses.replace(self, params=params)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Define-by-run: samples the active parameters, returns the fixed values."""
        values: dict[str, Any] = {}
        for p in self.params:
            if any(values.get(k) != v for k, v in p.when.items()):
                continue
            if p.kind == "categorical":
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
                continue
            assert p.low is not None and p.high is not None  # numeric: both (checked on load)
            high = p.high
            if p.name in self.less_than:
                bound = values[self.less_than[p.name]]
                high = min(high, bound - 1e-3 if p.kind == "float" else bound - 1)
            if p.kind == "int":
                values[p.name] = trial.suggest_int(p.name, int(p.low), int(high), log=p.log)
            else:
                values[p.name] = trial.suggest_float(p.name, p.low, high, log=p.log)
        return dict(self.fixed)


# The file's shape, typed (pydantic, strict); what depends on several keys is checked below.

# (Models, not dataclasses, for what nests: strict mode takes a mapping for a model only.)
class ParamSpec(pydantic.BaseModel):
    model_config = STRICT
    type: Literal["float", "int", "categorical"]
    low: Annotated[float, finite()] | None = None
    high: Annotated[float, finite()] | None = None
    log: bool = False
    choices: Annotated[list[Any], pydantic.Field(min_length=1)] | None = None
    when: dict[str, Any] = pydantic.Field(default_factory=dict)
    source: str = ""


class RowSpec(pydantic.BaseModel):
    model_config = STRICT
    values: dict[str, Any]
    when: dict[str, Any] = pydantic.Field(default_factory=dict)
    source: str = ""


@pydantic.dataclasses.dataclass(config=STRICT)
class SpaceFile:
    method: str | None = None
    extends: str | None = None
    params: dict[str, ParamSpec] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    defaults: list[RowSpec] = field(default_factory=list)


def _fail(path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {message}")


def _read(path: Path) -> SpaceFile:
    return build(SpaceFile, read_mapping(path), str(path))


def _param(path: Path, name: str, spec: ParamSpec | dict[str, Any]) -> Param:
    key = f"params.{name}"
    if isinstance(spec, dict):
        spec = build(ParamSpec, spec, str(path), key)
    if spec.type == "categorical":
        if not spec.choices:
            raise _fail(path, key, "categorical needs a non-empty list of choices")
        return Param(name, spec.type, choices=tuple(spec.choices), when=spec.when,
                     source=spec.source)
    low, high, log = spec.low, spec.high, spec.log
    if low is None or high is None:
        raise _fail(path, key, "needs numeric low and high")
    if not low < high:
        raise _fail(path, key, f"low {low:g} must be below high {high:g}")
    if log and low <= 0:
        raise _fail(path, key, "a log range needs low > 0")
    if spec.type == "int" and not (low.is_integer() and high.is_integer()):
        raise _fail(path, key, "an int range needs integer bounds")
    return Param(name, spec.type, low, high, log, when=spec.when, source=spec.source)


def load_search_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    data = _read(path)
    params: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    constraints: list[str] = []
    if data.extends is not None:
        base = load_search_space_parts(path.parent / data.extends, path)
        params.update(base[0])
        fixed.update(base[1])
        constraints.extend(base[2])
    own = _parts(path, data)
    params.update(own[0])
    fixed.update(own[1])
    constraints.extend(own[2])
    method = data.method
    if method not in METHODS.names():
        known = ", ".join(METHODS.names())
        raise _fail(path, "method", f"unknown method {method!r}; known: {known}")
    method_params = set(METHODS.get(method).defaults)
    for name in [*params, *fixed]:
        if name not in TRIAL_FIELDS and name not in method_params:
            where = "params" if name in params else "fixed"
            raise _fail(path, f"{where}.{name}",
                        f"not a trial setting and not a hyperparameter of {method}")
    for p in params.values():
        for cond, value in p.when.items():
            target = params.get(cond)
            if target is None or target.kind != "categorical" or value not in target.choices:
                raise _fail(path, f"params.{p.name}.when", f"{cond} = {value!r} is not a choice")
    less_than = {}
    for text in constraints:
        a, op, b = [*str(text).split(), "", "", ""][:3]
        if op != "<" or a not in params or b not in params:
            raise _fail(path, "constraints", f"{text!r}: expected 'A < B' over sampled params")
        low_a, low_b = params[a].low, params[b].low
        if low_a is None or low_b is None:
            raise _fail(path, "constraints", f"{text!r}: both sides must be numeric params")
        if low_a >= low_b:
            raise _fail(path, "constraints", f"{text!r} cannot hold: {a}'s low must be below "
                        f"{b}'s low")
        less_than[a] = b
    ordered = sorted(params.values(), key=lambda p: p.name in less_than)
    conditional = [p for p in ordered if p.when]
    ordered = [p for p in ordered if not p.when] + conditional
    rows = _rows(path, data.defaults, TRIAL_FIELDS | method_params)
    return SearchSpace(method, path, ordered, fixed, less_than, rows)


def _rows(path: Path, raw: list[RowSpec], known: set[str]) -> list[DefaultRow]:
    rows = []
    for index, row in enumerate(raw):
        key = f"defaults[{index}]"
        for selector, value in row.when.items():
            allowed = ROW_SELECTORS.get(selector, ())
            if selector not in ROW_SELECTORS or (allowed is not None and value not in allowed):
                raise _fail(path, f"{key}.when.{selector}",
                            f"{value!r} is not a condition (dataset: NAME, family: "
                            "fine_grained|generic, backbone: NAME, pretrained: true|false)")
        for name in row.values:
            if name not in known:
                raise _fail(path, f"{key}.values.{name}",
                            "not a trial setting and not a hyperparameter of the method")
        if not row.source.strip():
            raise _fail(path, f"{key}.source", "every row names the table it comes from")
        rows.append(DefaultRow(dict(row.when), dict(row.values), row.source))
    return rows


def load_search_space_parts(path: Path, child: Path) -> tuple[dict, dict, list]:
    if not path.is_file():
        raise _fail(child, "extends", f"{path} does not exist")
    data = _read(path)
    if data.extends is not None or data.method is not None:
        raise _fail(path, "extends", "a base file names neither a method nor another base")
    return _parts(path, data)


def _parts(path: Path, data: SpaceFile) -> tuple[dict[str, Param], dict[str, Any], list]:
    params = {name: _param(path, name, spec) for name, spec in data.params.items()}
    return params, dict(data.fixed), list(data.constraints)
