"""The protocol's names live in wsol.common.protocol: the scoring package imports them, and
what still repeats them (the shared search space, the trial config's defaults) must agree."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np

from wsol.common import protocol
from wsol.scoring import boxes, grid, normalize, reference, selection
from wsol.scoring.boxes import BoxAccumulator
from wsol.scoring.localization import LocalizationAccuracy
from wsol.scoring.report import box_metrics
from wsol.trial.config import TrialConfig, read_yaml
from wsol.trial.evaluation import candidates

BASE = Path(__file__).resolve().parents[2] / "search_spaces" / "base.yaml"


def test_scoring_keeps_no_copy_of_the_protocols_names() -> None:
    """The scoring package imports them from wsol.common.protocol (issue 19)."""
    names = ("IOU_THRESHOLDS", "NORMALISATIONS", "NEEDS_PERCENTILE", "DEFAULT_IVR_PERCENTILES")
    for module in (grid, normalize, selection, boxes, reference):
        source = Path(module.__file__).read_text()
        for name in names:
            assert f"{name} =" not in source, f"{module.__name__} defines its own {name}"
    assert boxes.BoxAccumulator().iou_thresholds == protocol.IOU_THRESHOLDS
    assert [c.percentile for c in selection.default_candidates()[3:]] == list(
        protocol.DEFAULT_IVR_PERCENTILES)
    assert {c.method for c in selection.default_candidates()} == set(protocol.NORMALISATIONS)


def test_the_protocol_imports_nothing_from_wsol() -> None:
    """So the scoring package (and everything else) can import it without a cycle."""
    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "wsol"]


def test_the_evaluator_reports_under_the_protocols_names() -> None:
    accumulator = BoxAccumulator(0.01)
    scoremap = np.zeros((8, 8))
    scoremap[2:6, 2:6] = 1.0
    accumulator.add_many([(scoremap, np.array([[2, 2, 6, 6]]))])
    curves = accumulator.result()
    names = set(box_metrics(curves, curves))
    thresholds = [protocol.threshold_key(m) for m in protocol.THRESHOLDED
                  if m in protocol.BOX_METRICS]
    assert names == {*protocol.BOX_METRICS, *thresholds}
    assert tuple(LocalizationAccuracy(0.5).counts) == protocol.LOCALIZATION


def test_defaults_are_the_protocols() -> None:
    config = TrialConfig()
    assert config.normalisations == list(protocol.NORMALISATIONS)
    assert config.ivr_percentiles == list(protocol.DEFAULT_IVR_PERCENTILES)
    assert config.pas_percentile == protocol.DEFAULT_PAS_PERCENTILE
    assert {c.method for c in candidates(config)} == set(protocol.NORMALISATIONS)
    # The shared space takes them from the protocol instead of writing them out again.
    fixed = read_yaml(BASE.read_text()).get("fixed") or {}
    assert not {"normalisations", "ivr_percentiles", "pas_percentile"} & set(fixed)


def test_the_literal_types_name_the_protocols_values() -> None:
    """A Literal type spells its values out (the type checker takes no names there): the
    protocol's types and the config's fields allow exactly the protocol's names."""
    assert get_args(protocol.SelectionMetric) == protocol.SELECTION_METRICS
    assert get_args(protocol.Normalisation) == protocol.NORMALISATIONS
    hints = get_type_hints(TrialConfig)
    assert get_args(hints["selection_metric"]) == (protocol.AUTO, *protocol.SELECTION_METRICS)


def test_the_selection_split_is_never_test() -> None:
    assert protocol.SELECTION_SPLIT == "train-fullsup"
    assert protocol.SPLITS[protocol.TEST] == protocol.TEST_SPLIT != protocol.SELECTION_SPLIT
