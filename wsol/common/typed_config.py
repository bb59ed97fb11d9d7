"""The one typed-configuration layer: experiment, trial and search-space files (and `--set`)
are pydantic 2 dataclasses in strict mode, and every refusal is one line that names the file,
the key path, what was expected and what was given.

Strict, because YAML already types its values: `epochs: "3"` or `amp: yes please` are
mistakes to name, not strings to coerce (an int where a float is meant is still taken).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from wsol.common.uri_secrets import shown

STRICT = ConfigDict(strict=True, extra="forbid")

# The largest seed: numpy's and Optuna's samplers take seeds up to 2**32 - 1, and a search
# seeds pair i's sampler with seed + i (plus the trials a continued study has), so the other
# half of that range is left for those offsets.
SEED_MAX = 2**31 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def finite(low: float | None = None, high: float | None = None, *,
           above: float | None = None, below: float | None = None) -> Any:
    """A float field's bounds (ge/le, or gt/lt with above/below), never inf or nan."""
    return Field(ge=low, le=high, gt=above, lt=below, allow_inf_nan=False)


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as
    a string, so `lr: 1e-3` in a file or `--set lr=1e-3` would be refused as not a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+.0123456789"))


def read_yaml(text: str) -> Any:
    """Every YAML file and value the tool reads goes through here."""
    return yaml.load(text, Loader=_Loader)


T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""

    # The offending key path and what it must be, where one key is to blame (so `--set`
    # can name its own key in its own words).
    key: str | None = None
    rule: str | None = None


class OverrideError(ConfigError):
    """A `--set KEY=VALUE` is wrong; the one-line message starts with `--set KEY:`."""


# What a user reads for each pydantic error type: the expectation, in the file's terms.
_EXPECTED = {
    "int_type": "an int", "float_type": "a number", "bool_type": "a bool (true or false)",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "tuple_type": "a list", "none_required": "null", "model_type": "a mapping",
    "dataclass_type": "a mapping", "finite_number": "a finite number",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


def key_path(location: Sequence[int | str], prefix: str = "") -> str:
    """('scheduler', 'grace_period') -> scheduler.grace_period; list items as [i]."""
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def expectation(error: ErrorDetails) -> str:
    """What the key must be, as the end of `<given> is not <expectation>`."""
    kind, context = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        bound = context[name]  # a float field's bound is a float: 64 rather than 64.0
        whole = isinstance(bound, int) or (isinstance(bound, float) and bound.is_integer())
        return f"{sign} {int(bound)}" if whole else f"{sign} {bound:g}"
    if kind == "literal_error":
        return f"one of {context['expected'].replace(chr(39), '')}"
    return error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")


def describe(error: ErrorDetails, source: str, prefix: str = "") -> ConfigError:
    """One pydantic error as the one-line ConfigError a user reads."""
    path = key_path(error["loc"], prefix)
    if error["type"] in _UNKNOWN:
        head, _, name = path.rpartition(".")
        found = ConfigError(f"{source}: {head + ': ' if head else ''}unknown key {name!r}")
        found.key, found.rule = path, "a known key"
        return found
    if error["type"] == "missing":
        found = ConfigError(f"{source}: {path}: missing (required)")
        found.key, found.rule = path, "given"
        return found
    if error["type"] in ("too_short", "string_too_short"):
        found = ConfigError(f"{source}: {path}: must not be empty (given {shown(error['input'])})")
        found.key, found.rule = path, "not empty"
        return found
    rule = expectation(error)
    found = ConfigError(f"{source}: {path}: {shown(error['input'])} is not {rule}")
    found.key, found.rule = path, rule
    return found


def build(kind: type[T], values: Mapping[str, Any], source: str, prefix: str = "") -> T:
    """`kind(**values)`, with the first validation error as a ConfigError."""
    if not isinstance(values, Mapping):
        where = f"{prefix}: " if prefix else ""
        raise ConfigError(f"{source}: {where}{values!r} is not a mapping")
    try:
        return kind(**values)
    except ValidationError as error:
        raise describe(error.errors()[0], source, prefix) from None


def check_value(annotation: Any, value: Any, source: str, key: str) -> Any:
    """One value against a type (a method hyperparameter against its default's type)."""
    try:
        return TypeAdapter(annotation, config=ConfigDict(strict=True)).validate_python(value)
    except ValidationError as error:
        raise describe(error.errors()[0], source, key) from None


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A configuration file's top level (empty: no keys), or a one-line ConfigError."""
    try:
        data = read_yaml(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data or {}


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
