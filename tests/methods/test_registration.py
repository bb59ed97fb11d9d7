"""Adding a method is its module and its search space, nothing else: a throwaway method whose
module sits in a folder of its own (added to the package's path, as a new file in wsol/methods/
would be found) and whose space sits beside the project's is registered, configured, searched,
reported, tracked and trained. Its registration is undone after each test."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Metric, Run, RunData, RunInfo
from small_search import SMALL_TRIAL, SPACES, small_experiment

import wsol.methods
from wsol.cli import main
from wsol.common import protocol
from wsol.common import tracking_schema as schema
from wsol.lifecycle import report_compare, runs
from wsol.methods import METHODS, baseline_method, method_order
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import load_spaces

NAME = "throwaway"
MODULE = f"{wsol.methods.__name__}.{NAME}"

# CAM's loss with label smoothing: a hyperparameter of its own, placed between MinMaxCAM and
# BGC in reports.
SOURCE = f'''
"""A method of the registration test."""

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from wsol.methods.base import METHODS, Method


@METHODS.register("{NAME}")
class Throwaway(Method):
    name = "{NAME}"
    order = 25
    defaults: ClassVar[dict[str, Any]] = {{"smoothing": 0.0}}

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        logits, _ = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=float(self.hp["smoothing"]))
        return self.step("main", {{"ce": loss}}, loss, epoch)
'''

SPACE = f"""method: {NAME}
extends: base.yaml
params:
  smoothing:
    type: float
    low: 0.0
    high: 0.2
    source: "the registration test's own"
"""


@pytest.fixture
def spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The method's module found through the package's path, and a spaces folder: the
    project's spaces and the method's. Yields that folder."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{NAME}.py").write_text(SOURCE)
    METHODS.names()  # the project's methods registered before the table is set aside
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # restored after the test
    monkeypatch.setattr(wsol.methods, "__path__", [*wsol.methods.__path__, str(folder)])
    shutil.copytree(SPACES, tmp_path / "spaces")
    (tmp_path / "spaces" / f"{NAME}.yaml").write_text(SPACE)
    yield tmp_path / "spaces"
    sys.modules.pop(MODULE, None)
    if hasattr(wsol.methods, NAME):
        delattr(wsol.methods, NAME)


def test_the_module_alone_registers_the_method_in_its_order(spaces: Path) -> None:
    assert NAME in METHODS.names()
    assert METHODS.get(NAME).defaults == {"smoothing": 0.0}
    assert method_order() == ["cam", "minmaxcam", NAME, "bgc", "weightmap"]
    assert baseline_method() == "cam"


def test_an_experiment_names_it_and_its_space_loads(spaces: Path, tiny_synth: Path,
                                                    tmp_path: Path) -> None:
    experiment = experiment_from_dict(small_experiment(
        "registration", tiny_synth, tmp_path, methods=["cam", NAME], search_spaces=str(spaces),
        method_params={NAME: {"smoothing": 0.05}},
        param_ranges={f"{NAME}.smoothing": {"high": 0.1}}))
    assert experiment.pairs() == ["cam/tiny", f"{NAME}/tiny"]
    loaded = load_spaces(experiment)  # checks each space against a sample trial config
    assert loaded[NAME].method == NAME
    smoothing = next(p for p in loaded[NAME].params if p.name == "smoothing")
    assert (smoothing.low, smoothing.high) == (0.0, 0.1)
    default = experiment_from_dict({"data_root": str(tiny_synth), "synthetic_preset": None})
    assert default.methods == ["cam", "minmaxcam", NAME, "bgc", "weightmap"]


def _run(metrics: dict[str, float]) -> Run:
    info = RunInfo(run_id="run", experiment_id="0", user_id="", status="FINISHED",
                   start_time=0, end_time=0, lifecycle_stage="active")
    return Run(info, RunData(metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()]))


def _seed_model(method: str, score: float) -> report_compare.SeedModel:
    metric = schema.test_metric(protocol.MAX_BOX_ACC_V2)
    return report_compare.SeedModel(runs.Pair("synthetic", method, "tiny"), 0, _run({}),
                                    _run({metric: score}))


def test_the_report_places_it_and_compares_it_with_cam(spaces: Path) -> None:
    models = [_seed_model(method, score)
              for method, score in (("bgc", 60.0), (NAME, 55.0), ("cam", 50.0))]
    header, rows = report_compare.verdict_table(models, (protocol.MAX_BOX_ACC_V2,))
    assert [row[2] for row in rows] == ["cam", NAME, "bgc"]
    assert rows[1][header.index(f"test vs {baseline_method()}")] == "+5.00"


def test_the_tracking_schema_takes_it(spaces: Path) -> None:
    search = schema.SCHEMA[schema.SEARCH]
    assert search.undeclared("metrics", [schema.best_metric(f"{NAME}/tiny")]) == []
    trial = schema.SCHEMA[schema.TRIAL]
    assert trial.undeclared("params", {"pair": f"{NAME}/tiny", "smoothing": "0.1"}) == []
    meaning = next(key.meaning for key in trial.tags if key.name == schema.METHOD)
    assert meaning == f"the method (cam, minmaxcam, {NAME}, bgc, weightmap)"


def test_wsol_train_runs_it(spaces: Path, tiny_synth: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in SMALL_TRIAL.items()))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--method", NAME, "--data-root",
                 str(tiny_synth), "--set", "smoothing=0.1", "--out", str(out)]) == 0
    assert "selected epoch 1 on train-fullsup" in capsys.readouterr().out
    assert (out / "best.pt").is_file()


def test_nothing_is_left_registered() -> None:
    """Runs after the tests above (file order): their method is gone."""
    assert NAME not in METHODS.names()
    assert MODULE not in sys.modules
    assert method_order() == ["cam", "minmaxcam", "bgc", "weightmap"]
