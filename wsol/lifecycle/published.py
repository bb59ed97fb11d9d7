"""The papers' published test numbers (published.yaml, shipped with the package), checked on load.

Every number carries its paper, table and row, so that a report setting it beside a run's
min-max number says where it comes from. Transcriptions check themselves where the paper gives
a second reading: per-IoU parts must average to the MaxBoxAccV2 printed, and a method printed as
its difference to CAM must equal the same table's CAM plus that difference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from wsol.common import protocol

RESOURCE = "published.yaml"
METRICS = protocol.SELECTION_METRICS
# The project's dataset tags -> the names published.yaml uses (an experiment may say imagenet).
DATASET_ALIASES = {"imagenet": "ilsvrc"}
PAPER_BASELINE = "cam"  # what the papers print differences to, whatever this project's baseline
_REQUIRED = ("dataset", "method", "backbone", "metric", "value", "normalisation", "source",
             "table", "row")
_OPTIONAL = ("parts", "difference", "note")
_PRINTED = re.compile(r"\d{1,3}(\.\d+)?")  # a percentage as a table prints it


@dataclass(frozen=True)
class Published:
    """One number a paper prints, and where."""

    dataset: str
    method: str
    backbone: str
    metric: str
    printed: str  # as the table prints it: "60.0", "63.71"
    normalisation: str
    source: str
    paper: str
    table: str
    row: str
    note: str = ""

    @property
    def value(self) -> float:
        return float(self.printed)

    @property
    def half_last_digit(self) -> float:
        """How far a number that rounds to `printed` may lie from it."""
        decimals = len(self.printed.partition(".")[2])
        return 0.5 * 10.0 ** -decimals

    @property
    def citation(self) -> str:
        """`<paper title>, Table 4, row "CAM [33], CUB-200-2011 VGG16"`."""
        return f'{self.paper}, {self.table}, row "{self.row}"'


def dataset_key(dataset: str) -> str:
    lowered = dataset.lower()
    return DATASET_ALIASES.get(lowered, lowered)


def matching(entries: list[Published], dataset: str, method: str, backbone: str,
             metric: str) -> list[Published]:
    """A report row's published numbers for one metric, in file order."""
    return [e for e in entries if (e.dataset, e.method, e.backbone, e.metric)
            == (dataset_key(dataset), method, backbone, metric)]


@cache
def load_published() -> tuple[Published, ...]:
    """The shipped table, read from the package (works from a wheel)."""
    text = resources.files("wsol.lifecycle").joinpath(RESOURCE).read_text()
    return tuple(parse_published(text, f"wsol/lifecycle/{RESOURCE}"))


def parse_published(text: str, source: str) -> list[Published]:
    """Entries of a published.yaml text; a bad entry is a one-line error naming it."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("papers"), dict) \
            or not isinstance(data.get("entries"), list):
        raise ValueError(f"{source}: expected a mapping with `papers` (a mapping) and "
                         "`entries` (a list)")
    papers: dict[str, Any] = data["papers"]
    entries = [_entry(raw, papers, f"{source}: entries[{index}]")
               for index, raw in enumerate(data["entries"])]
    for index, (raw, entry) in enumerate(zip(data["entries"], entries, strict=True)):
        _check_readings(raw, entry, entries, f"{source}: entries[{index}]")
    return entries


def _entry(raw: Any, papers: dict[str, Any], where: str) -> Published:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "")]
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    if raw["metric"] not in METRICS:
        raise ValueError(f"{where}: metric {raw['metric']!r} is not one of {METRICS}")
    if raw["normalisation"] not in protocol.NORMALISATIONS:
        raise ValueError(f"{where}: normalisation {raw['normalisation']!r} is not one of "
                         f"{protocol.NORMALISATIONS}")
    paper = papers.get(raw["source"])
    if not isinstance(paper, dict) or not paper.get("title"):
        raise ValueError(f"{where}: source {raw['source']!r} names no paper with a title "
                         "under `papers`")
    printed = raw["value"]
    if not isinstance(printed, str) or not _PRINTED.fullmatch(printed) \
            or float(printed) > 100:
        raise ValueError(f"{where}: value: expected a percentage as printed, in quotes "
                         f'("63.71"), got {printed!r}')
    return Published(dataset_key(str(raw["dataset"])), str(raw["method"]), str(raw["backbone"]),
                     raw["metric"], printed, raw["normalisation"], str(raw["source"]),
                     " ".join(str(paper["title"]).split()), str(raw["table"]), str(raw["row"]),
                     str(raw.get("note", "")))


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value <= 100:
        raise ValueError(f"{where}: expected a percentage in [0, 100], got {value!r}")
    return float(value)


def _check_readings(raw: dict[str, Any], entry: Published, entries: list[Published],
                    where: str) -> None:
    """The second readings a paper gives must agree with the transcribed value."""
    parts = raw.get("parts")
    if parts is not None:
        if not isinstance(parts, list) or len(parts) != len(protocol.IOU_THRESHOLDS):
            raise ValueError(f"{where}: parts: expected {len(protocol.IOU_THRESHOLDS)} values "
                             f"(IoU {', '.join(map(str, protocol.IOU_THRESHOLDS))})")
        mean = sum(_percent(p, f"{where}: parts") for p in parts) / len(parts)
        if abs(mean - entry.value) > entry.half_last_digit + 1e-9:
            raise ValueError(f"{where}: parts average {mean:.3f}, which does not round to the "
                             f"value {entry.printed}")
    difference = raw.get("difference")
    if difference is not None:
        bases = [e for e in entries if e.method == PAPER_BASELINE and (
            e.source, e.table, e.dataset, e.backbone, e.metric) == (
            entry.source, entry.table, entry.dataset, entry.backbone, entry.metric)]
        if len(bases) != 1:
            raise ValueError(f"{where}: difference: expected one {PAPER_BASELINE} entry of "
                             f"{entry.source} {entry.table} for {entry.dataset}/"
                             f"{entry.backbone} {entry.metric}, found {len(bases)}")
        if not math.isclose(bases[0].value + float(difference), entry.value, abs_tol=1e-6):
            raise ValueError(f"{where}: value {entry.printed} is not {PAPER_BASELINE} "
                             f"{bases[0].printed} + difference {difference}")
