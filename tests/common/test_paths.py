"""The path rule (wsol.common.paths): user paths as given, paths in a file relative to that file, a
relative --config found in the installed project from any working directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wsol.common.paths import PathNotFoundError, find_input, project_roots
from wsol.search.experiment import load_experiment
from wsol.search.pair_spaces import load_spaces
from wsol.trial.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_paths_inside_an_experiment_are_relative_to_its_file(tmp_path: Path, monkeypatch):
    folder = tmp_path / "studies"
    (folder / "spaces").mkdir(parents=True)
    shutil.copy(REPO / "search_spaces" / "base.yaml", folder / "spaces" / "base.yaml")
    shutil.copy(REPO / "search_spaces" / "cam.yaml", folder / "spaces" / "cam.yaml")
    monkeypatch.setenv("WSOL_TEST_DATA", str(tmp_path / "datasets"))
    config = folder / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "data_root": "$WSOL_TEST_DATA/synth", "metadata_root": "meta", "methods": ["cam"],
        "search_spaces": "spaces", "storage_path": "~/ray-results",
        "trial": {"weights": "weights/body.pt", "mask_root": "masks"},
    }))
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(Path("studies/mine.yaml"), {"tracking_uri": "sqlite:///x.db"})
    assert experiment.data_root == str(tmp_path / "datasets" / "synth")
    assert experiment.metadata_root == str(folder / "meta")
    assert experiment.spaces_dir() == folder / "spaces"
    assert experiment.storage_path == str(Path.home() / "ray-results")
    assert experiment.trial["weights"] == str(folder / "weights" / "body.pt")
    assert experiment.trial["mask_root"] == str(folder / "masks")
    assert set(load_spaces(experiment)) == {"cam"}


def test_command_line_values_are_taken_as_given(tmp_path: Path, monkeypatch):
    config = tmp_path / "sub" / "exp.yaml"
    config.parent.mkdir()
    config.write_text("methods: [cam]\n")
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(config, {"storage_path": "runs/ray"})
    assert experiment.storage_path == "runs/ray"  # the flag: relative to where it was typed
    assert experiment.spaces_dir() == REPO / "search_spaces"  # the project's own


def test_trial_config_paths_and_weight_names(tmp_path: Path):
    config = tmp_path / "trial.yaml"
    config.write_text("data_root: ../data/x\nweights: imagenet\n")
    loaded = load_config(config)
    assert loaded.data_root == str(tmp_path.parent / "data" / "x")
    assert loaded.weights == "imagenet"


def test_relative_config_is_found_in_the_installed_project(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert REPO in project_roots()
    found = find_input("experiments/synthetic-smoke.yaml")
    assert found == REPO / "experiments" / "synthetic-smoke.yaml"
    experiment = load_experiment(found, {})
    assert experiment.data_root == str(REPO / "data" / "synthetic-demo")
    with pytest.raises(PathNotFoundError) as error:
        find_input("experiments/nope.yaml", "experiment")
    message = str(error.value)
    assert str(tmp_path / "experiments" / "nope.yaml") in message
    assert str(REPO / "experiments" / "nope.yaml") in message


def test_search_py_copied_alone_names_where_it_looked(tmp_path: Path):
    shutil.copy(REPO / "search.py", tmp_path / "search.py")
    done = subprocess.run([sys.executable, "search.py", "--config", "experiments/missing.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "search.py: error: experiments/missing.yaml: no such experiment" in done.stderr
    assert str(REPO / "experiments" / "missing.yaml") in done.stderr
    assert "Traceback" not in done.stderr
