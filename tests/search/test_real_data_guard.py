"""Synthetic data only when asked: a real dataset's search never generates (a typo in its
data_root used to be filled with the synthetic benchmark and trained on under the real name);
its missing or mismatched data stops the search before Ray starts, saying how to prepare it.
Known datasets read the metadata the package ships unless metadata_root says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from small_search import small_experiment

from wsol.cli import search as search_cli
from wsol.common.tracking_store import CredentialsInURI
from wsol.common.typed_config import ConfigError
from wsol.data.bundled import bundled_metadata
from wsol.data.manifest import Manifest, dataset_fingerprint
from wsol.search import runner
from wsol.search.experiment import Experiment, experiment_from_dict
from wsol.search.runner import prepare_data, refuse_secrets


def _search(tmp_path: Path, data_root: Path, dataset: str) -> int:
    config = tmp_path / "exp.yaml"
    values = small_experiment("real", data_root, tmp_path, dataset=dataset)
    values.pop("synthetic_preset")
    config.write_text(yaml.safe_dump(
        {**values, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    return search_cli.main(["--config", str(config)])


def test_a_missing_real_data_root_stops_the_search_in_one_line(tmp_path, capsys):
    typo = tmp_path / "CUB-typo"
    assert _search(tmp_path, typo, "cub") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"search.py: error: real: data_root {typo} does not exist: prepare it with "
                   f"`wsol data prepare cub --archives DIR --out {typo}`")
    assert not typo.exists()  # not filled with the synthetic benchmark


def test_real_data_that_does_not_match_its_metadata_stops_the_search(tmp_path, capsys):
    data = tmp_path / "CUB"
    (data / "001.Black_footed_Albatross").mkdir(parents=True)
    assert _search(tmp_path, data, "cub") == 2
    err = capsys.readouterr().err
    assert "5994 of the 5994 train images of" in err and "wsol data prepare cub" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in data.iterdir()) == ["001.Black_footed_Albatross"]


def test_a_preset_for_a_real_dataset_is_refused():
    with pytest.raises(ConfigError, match="synthetic_preset: only dataset: synthetic is "
                       "generated; dataset 'cub' is real data"):
        experiment_from_dict({"dataset": "cub", "data_root": "/data/CUB",
                              "synthetic_preset": "demo"})
    experiment = experiment_from_dict({"dataset": "cub", "data_root": "/data/CUB"})
    assert experiment.synthetic_preset is None  # the trials are given no preset either


@pytest.mark.parametrize(("dataset", "folder"), [("cub", "CUB"), ("ilsvrc", "ILSVRC"),
                                                 ("imagenet", "ILSVRC"),
                                                 ("openimages", "OpenImages")])
def test_known_datasets_read_the_bundled_metadata(dataset, folder):
    experiment = experiment_from_dict({"dataset": dataset, "data_root": "/data/x"})
    assert experiment.metadata_dir() == bundled_metadata(folder.lower()
                                                         if dataset != "imagenet" else "ilsvrc")
    assert experiment.trial_base()["metadata_root"] == str(experiment.metadata_dir())


def test_ilsvrc_reads_the_train_list_prepare_wrote_beside_its_data(tmp_path):
    """The bundled ILSVRC metadata has no train list (it is built from the user's train tar
    by `wsol data prepare ilsvrc`, into OUT/metadata): a prepared folder's own is used."""
    assert not (bundled_metadata("ilsvrc") / "train" / "image_ids.txt").exists()
    data = tmp_path / "ILSVRC"
    experiment = experiment_from_dict({"dataset": "ilsvrc", "data_root": str(data)})
    assert experiment.metadata_dir() == bundled_metadata("ilsvrc")  # nothing prepared yet
    (data / "metadata" / "train").mkdir(parents=True)
    (data / "metadata" / "train" / "image_ids.txt").write_text("train/n01440764/a.JPEG\n")
    assert experiment.metadata_dir() == data / "metadata"
    cub = experiment_from_dict({"dataset": "cub", "data_root": str(data)})
    assert cub.metadata_dir() == bundled_metadata("cub")  # CUB ships its train list


def test_metadata_root_overrides_and_other_datasets_read_their_data_root(tmp_path):
    given = experiment_from_dict({"dataset": "cub", "data_root": "/data/x",
                                  "metadata_root": str(tmp_path / "meta")})
    assert given.trial_base()["metadata_root"] == str(tmp_path / "meta")
    own = experiment_from_dict({"dataset": "birds", "family": "fine_grained",
                                "data_root": str(tmp_path / "birds")})
    assert own.metadata_dir() == tmp_path / "birds" / "metadata"
    assert "metadata_root" not in own.trial_base()


def test_a_prepared_folder_passes_when_its_fingerprint_is_the_searchs(tmp_path):
    """The manifest's fingerprint is the one a search records (dataset_fingerprint of the
    experiment's metadata): equal, the search goes on; another metadata, it stops."""
    data = tmp_path / "CUB"
    data.mkdir()
    experiment = experiment_from_dict({"dataset": "cub", "data_root": str(data)})
    fingerprint = dataset_fingerprint(experiment.metadata_dir())
    Manifest("cub", "bundled", fingerprint, None, {}).write(data)
    prepare_data(experiment)
    Manifest("cub", "bundled", "0" * 64, None, {}).write(data)
    with pytest.raises(ConfigError, match="was prepared for other metadata than"):
        prepare_data(experiment)
    Manifest("openimages", "bundled", fingerprint, None, {}).write(data)
    with pytest.raises(ConfigError, match="holds openimages, not cub: fix data_root"):
        prepare_data(experiment)


def _ilsvrc_on_shards(**values) -> Experiment:
    return experiment_from_dict({"dataset": "ilsvrc", "data_root": "s3://bucket/datasets/ILSVRC",
                                 "synthetic_preset": None, **values})


def test_shards_without_a_train_list_stop_the_search_before_ray(tmp_path, monkeypatch):
    """The bundled ILSVRC metadata has no train list: trials on shards need the metadata
    `wsol data shard` packed them from (metadata_root), said before Ray starts."""
    monkeypatch.setattr(runner, "index_problem", lambda uri: None)  # no S3 here
    experiment = _ilsvrc_on_shards()
    with pytest.raises(ConfigError) as raised:
        prepare_data(experiment)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{experiment.name}: "
                              f"{bundled_metadata('ilsvrc') / 'train' / 'image_ids.txt'} is "
                              "missing")
    assert "set metadata_root" in message
    metadata = tmp_path / "metadata"
    for split in ("train", "val", "test"):
        (metadata / split).mkdir(parents=True)
        (metadata / split / "image_ids.txt").write_text("")
    prepare_data(_ilsvrc_on_shards(metadata_root=str(metadata)))


def test_an_s3_data_root_is_never_read_as_a_local_folder(tmp_path, monkeypatch):
    """Path('s3://b/p').resolve() is <cwd>/s3:/b/p: a folder of that name here is not the
    metadata beside the shards."""
    monkeypatch.chdir(tmp_path)
    train = tmp_path / "s3:" / "bucket" / "datasets" / "ILSVRC" / "metadata" / "train"
    train.mkdir(parents=True)
    (train / "image_ids.txt").write_text("train/n01440764/a.JPEG\n")
    assert _ilsvrc_on_shards().metadata_dir() == bundled_metadata("ilsvrc")


def test_credentials_in_data_root_are_refused_without_being_shown():
    experiment = _ilsvrc_on_shards()
    experiment.data_root = "s3://AKIAKEY:s3cr3t@bucket/datasets/ILSVRC"
    with pytest.raises(CredentialsInURI) as raised:
        refuse_secrets(experiment)
    assert "data_root" in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "AKIAKEY" not in str(raised.value)
