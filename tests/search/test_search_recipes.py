"""A search with `recipe: paper` trains each pair on its own row's recipe (its epochs among
them) and records the recipe card on every trial run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from small_search import SPACES, small_experiment

from wsol.common import tracking_schema as schema
from wsol.search.experiment import experiment_from_dict
from wsol.search.runner import run_search

ROWS = {
    "cam": "defaults:\n  - when: {backbone: tiny}\n    values: {epochs: 1, nesterov: true}\n"
           "    source: test row for cam\n",
    "bgc": "defaults:\n  - when: {backbone: tiny}\n    values: {epochs: 2, warm: 1, "
           "warm_batch_size: 4, lr_decay: 0.5, lr_milestones: [1]}\n"
           "    source: test row for bgc\n",
}


@pytest.mark.e2e
def test_pairs_train_at_their_own_epochs_and_carry_their_recipe(
        tiny_synth: Path, tmp_path: Path, local_ray: None) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    shutil.copy(SPACES / "base.yaml", spaces)
    for method, rows in ROWS.items():
        (spaces / f"{method}.yaml").write_text(f"method: {method}\nextends: base.yaml\n{rows}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    values = small_experiment("recipes", tiny_synth, tmp_path, methods=["cam", "bgc"],
                              search_spaces=str(spaces), tracking_uri=uri, recipe="paper",
                              scheduler={"type": "asha", "grace_period": 1,
                                         "reduction_factor": 2})
    del values["trial"]["epochs"]  # each pair's row gives its own
    summary = run_search(experiment_from_dict(values))
    assert summary["trials"] == 2 and summary["failed"] == 0

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("recipes").experiment_id
    children = {r.data.tags[schema.METHOD]: r for r in client.search_runs([experiment_id])
                if r.data.tags.get(schema.KIND) == schema.TRIAL}
    steps = {method: [m.step for m in client.get_metric_history(run.info.run_id,
                                                                 "train_fullsup/score")]
             for method, run in children.items()}
    assert steps == {"cam": [0], "bgc": [0, 1]}
    cam, bgc = children["cam"].data, children["bgc"].data
    assert cam.tags[schema.RECIPE_SOURCE] == "test row for cam"
    assert bgc.tags[schema.RECIPE_SOURCE] == "test row for bgc"
    assert (cam.params["recipe.epochs"], cam.params["recipe.nesterov"]) == ("1", "True")
    assert (bgc.params["recipe.epochs"], bgc.params["recipe.warm"],
            bgc.params["recipe.warm_batch_size"], bgc.params["recipe.lr_decay"],
            bgc.params["recipe.lr_milestones"]) == ("2", "1", "4", "0.5", "[1]")
    assert cam.params["recipe.lr"] == cam.params["lr"]  # the sampled rate is the card's
    for run in children.values():
        record = schema.SCHEMA[schema.TRIAL]
        assert record.undeclared("params", run.data.params) == []
        assert record.undeclared("tags", run.data.tags) == []
