"""The papers' published numbers: the shipped table loads with a source for every number, checks
its own transcriptions, and `wsol report` sets a row's min-max numbers beside the paper's.
Real MLflow on SQLite with fabricated trial and evaluation runs (no training)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from wsol.cli import main
from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.lifecycle import published
from wsol.methods import METHODS, baseline_method
from wsol.models.backbones import BACKBONES
from wsol.trial.evaluation import minmax_key

V2 = protocol.MAX_BOX_ACC_V2


def test_the_shipped_table_loads_and_every_number_has_a_source() -> None:
    entries = published.load_published()
    assert len(entries) >= 30
    for entry in entries:
        assert entry.paper and entry.table.startswith("Table") and entry.row, entry
        assert entry.metric == (protocol.PXAP if entry.dataset == "openimages" else V2), entry
        assert entry.normalisation == "minmax", entry
        # A typo in a name would leave the number unmatched by every report row.
        assert entry.method in METHODS.names(), entry
        assert entry.backbone in BACKBONES.names(), entry
        assert entry.dataset in ("cub", "ilsvrc", "openimages"), entry
    assert {e.source for e in entries} == {"minmaxcam", "bgc", "bgc_appendix", "ivr"}
    assert {e.method for e in entries} == {"cam", "minmaxcam", "bgc"}


def test_the_wheel_ships_the_table() -> None:
    """A wheel has no checkout around the package: the table must be declared package data."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = project["tool"]["setuptools"]["package-data"].get("wsol.lifecycle", [])
    assert published.RESOURCE in declared


def test_papers_that_print_the_same_row_agree_or_say_why_not() -> None:
    """A transcription slip shows as one paper disagreeing with the others on CAM's row; real
    disagreements (different CAM runs quoted) are noted on an entry of that row."""
    groups: dict[tuple[str, ...], list[published.Published]] = defaultdict(list)
    for e in published.load_published():
        groups[(e.dataset, e.method, e.backbone, e.metric)].append(e)
    for row, entries in groups.items():
        values = [e.value for e in entries]
        if max(values) - min(values) <= 0.05 + 1e-9:
            continue
        notes = " ".join(e.note for e in entries)
        unexplained = [e.citation for e in entries if not e.note and f"{e.value:g}" not in notes]
        assert unexplained == [], row


TABLE = """
papers:
  p: {title: "A paper"}
entries:
  - {dataset: cub, method: cam, backbone: vgg16, metric: MaxBoxAccV2, value: "63.7",
     normalisation: minmax, source: p, table: "Table 1", row: "CAM"}
  - {dataset: cub, method: bgc, backbone: vgg16, metric: MaxBoxAccV2, value: VALUE,
     normalisation: minmax, source: p, table: "Table 1", row: "Ours"EXTRA}
"""


@pytest.mark.parametrize(("value", "extra", "error"), [
    ('"70.2"', ", difference: 6.5", None),
    ('"70.2"', ", difference: 6.4", r"entries\[1\]: value 70.2 is not cam 63.7 \+ difference 6.4"),
    ('"80.1"', ", parts: [99.3, 93.2, 47.8]", None),
    ('"80.2"', ", parts: [99.3, 93.2, 47.8]",
     r"entries\[1\]: parts average 80.100, which does not round to the value 80.2"),
    ('"80.10"', ", parts: [99.3, 93.2, 47.8]", None),
    ('"80.13"', ", parts: [99.3, 93.2, 47.8]",  # within 0.05, but printed to two decimals
     r"entries\[1\]: parts average 80.100, which does not round to the value 80.13"),
    ('"80.1"', ", parts: [99.3, 93.2]", r"entries\[1\]: parts: expected 3 values"),
    ('"101"', "", r"entries\[1\]: value: expected a percentage as printed, in quotes "
                  r"\(\"63.71\"\), got '101'"),
    ("80.1", "", r"entries\[1\]: value: expected a percentage as printed, in quotes "
                 r"\(\"63.71\"\), got 80.1"),
    ('"80.1"', ", source: q",  # the later key wins in YAML
     r"entries\[1\]: source 'q' names no paper with a title under `papers`"),
    ('"80.1"', ", colour: red", r"entries\[1\]: unknown field\(s\) colour"),
])
def test_a_bad_entry_is_one_line_naming_it(value: str, extra: str, error: str | None) -> None:
    text = TABLE.replace("VALUE", value).replace("EXTRA", extra)
    if error is None:
        assert [e.printed for e in published.parse_published(text, "t.yaml")] == \
            ["63.7", value.strip('"')]
        return
    with pytest.raises(ValueError, match=rf"^t\.yaml: {error}") as raised:
        published.parse_published(text, "t.yaml")
    assert "\n" not in str(raised.value)


def test_a_missing_field_is_named() -> None:
    text = TABLE.replace("VALUE", '"1"').replace("EXTRA", "").replace(', row: "Ours"', "")
    with pytest.raises(ValueError, match=r"^t\.yaml: entries\[1\]: missing row$"):
        published.parse_published(text, "t.yaml")


def test_imagenet_is_the_tables_ilsvrc() -> None:
    entries = list(published.load_published())
    assert published.matching(entries, "imagenet", "bgc", "resnet50", V2) == \
        published.matching(entries, "ILSVRC", "bgc", "resnet50", V2) != []


# -- the report ---------------------------------------------------------------------------------

def fabricate(client: MlflowClient, method: str, selected: float, minmax: float,
              test: float, test_minmax: float) -> None:
    """A finished cub/<method>/vgg16 trial and a finished test evaluation of it, with the
    metric names the trial and `wsol evaluate` log."""
    experiment = client.get_experiment_by_name("searches").experiment_id
    pair = {schema.METHOD: method, schema.BACKBONE: "vgg16", schema.DATASET: "cub"}
    trial = client.create_run(experiment, tags={schema.KIND: schema.TRIAL, **pair}).info.run_id
    for key, value in ((schema.SCORE, selected), (schema.selected_metric(V2), selected),
                       (schema.selected_metric(minmax_key(V2)), minmax)):
        client.log_metric(trial, key, value)
    client.set_terminated(trial, "FINISHED")
    evaluation = client.create_run(experiment, tags={
        schema.KIND: schema.EVALUATION, schema.TRIAL_RUN_ID: trial, **pair}).info.run_id
    client.log_metric(evaluation, schema.test_metric(V2), test)
    client.log_metric(evaluation, schema.test_metric(minmax_key(V2)), test_minmax)
    client.set_terminated(evaluation, "FINISHED")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_report_shows_both_columns_and_the_papers_numbers(client, tmp_path, capsys):
    fabricate(client, "cam", selected=66.0, minmax=61.5, test=65.25, test_minmax=62.75)
    fabricate(client, "bgc", selected=75.0, minmax=72.0, test=74.5, test_minmax=78.0)
    out = tmp_path / "report"
    assert main(["report", "--tracking-uri", client.tracking_uri, "--out", str(out),
                 "--experiment", "searches", "--no-log"]) == 0
    printed = capsys.readouterr().out
    baseline = baseline_method()

    rows = {r["method"]: r for r in read_csv(out / "report.csv")}
    assert rows["bgc"][f"cub {V2} (test)"] == "74.50"
    assert rows["bgc"][f"cub {V2} min-max (test)"] == "78.00"
    assert rows["bgc"][f"cub {V2} min-max (train-fullsup)"] == "72.00"
    assert rows["bgc"][f"cub {V2} (test) vs {baseline}"] == "+9.25"
    assert rows["cam"][f"cub {V2} min-max (test)"] == "62.75"
    assert "vs CAM" not in (out / "report.csv").read_text()  # the baseline is named as it is

    compared = read_csv(out / "published.csv")
    bgc = [r for r in compared if r["method"] == "bgc"]
    assert bgc == [{
        "dataset": "cub", "method": "bgc", "backbone": "vgg16", "metric": V2,
        "published min-max (test)": "80.1", "test (min-max)": "78.00",
        "test (min-max) - published": "-2.10", "train-fullsup (min-max)": "72.00",
        "test (selected normalisation)": "74.50",
        "source": "Bridging the Gap between Classification and Localization for Weakly "
                  'Supervised Object Localization (Kim et al., CVPR 2022), Table 4, row "Ours, '
                  'CUB-200-2011 VGG16"'}]
    cam = {(r["published min-max (test)"], r["source"].split(":")[0].split(" (")[0])
           for r in compared if r["method"] == "cam"}
    assert cam == {("63.7", "MinMaxCAM"), ("63.7", "Bridging the Gap between Classification "
                                                   "and Localization for Weakly Supervised "
                                                   "Object Localization"),
                   ("63.71", "Normalization Matters in Weakly Supervised Object Localization")}
    assert all(r["test (min-max)"] == "62.75" for r in compared if r["method"] == "cam")
    assert "## Published numbers (test, min-max normalisation)" in printed
    assert '| cub | bgc | vgg16 | MaxBoxAccV2 | 80.1 | 78.00 | -2.10 |' in printed


def test_a_report_without_published_rows_says_so(client, tmp_path):
    experiment = client.get_experiment_by_name("searches").experiment_id
    run = client.create_run(experiment, tags={
        schema.KIND: schema.TRIAL, schema.METHOD: "cam", schema.BACKBONE: "tiny",
        schema.DATASET: "synthetic"}).info.run_id
    client.log_metric(run, schema.SCORE, 50.0)
    client.log_metric(run, schema.selected_metric(V2), 50.0)
    client.set_terminated(run, "FINISHED")
    from wsol.lifecycle.report import build_report

    summary = build_report(client, tmp_path / "r", ["searches"], log=False)
    assert "published.csv" not in summary["files"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "No row of this report has a published number (the table covers cub/" in text
    assert "min-max (" not in (tmp_path / "r" / "report.csv").read_text()  # no such numbers
