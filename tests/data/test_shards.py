"""Tar shards of a dataset (wsol/data/shards.py) without S3: what the writer packs, and every
kind of index or shard that a reader must refuse because the bucket is not trusted."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import shutil
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from wsol.cli import main
from wsol.common.typed_config import ConfigError
from wsol.data.metadata import load_split
from wsol.data.shards import (
    INDEX_NAME,
    Entry,
    Shard,
    ShardIndexError,
    _unpack,
    dataset_files,
    parse_index,
    uri_problem,
    write_shards,
)
from wsol.search.experiment import experiment_from_dict
from wsol.trial.config import config_from_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packed(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    files = dataset_files(tiny_synth / "metadata", tiny_synth)
    write_shards(tiny_synth, files, str(out), shard_bytes=40_000)
    return out


def test_every_image_and_mask_is_packed_once_at_its_offset(tiny_synth: Path, packed: Path):
    index = parse_index((packed / INDEX_NAME).read_bytes(), "index")
    files = dataset_files(tiny_synth / "metadata", tiny_synth)
    masks = load_split(tiny_synth / "metadata", "val").masks.values()
    assert masks and {p for m in masks for p in m.mask_paths} <= set(files)
    assert set(load_split(tiny_synth / "metadata", "train").image_ids) <= set(files)
    assert [e.path for e in index.entries] == files
    assert len(index.shards) > 2  # 40 kB shards
    for number, shard in enumerate(index.shards):
        data = (packed / shard.name).read_bytes()
        assert len(data) == shard.size and hashlib.sha256(data).hexdigest() == shard.sha256
        with tarfile.open(packed / shard.name) as tar:  # plain tar: `tar x` reads it too
            names = tar.getnames()
        assert names == [e.path for e in index.entries if e.shard == number]
    for entry in index.entries:
        data = (packed / index.shards[entry.shard].name).read_bytes()
        original = (tiny_synth / entry.path).read_bytes()
        assert data[entry.offset:entry.offset + entry.size] == original


def test_a_missing_file_is_named_before_anything_is_written(tiny_synth: Path, tmp_path: Path):
    copy = tmp_path / "data"
    copy.mkdir()
    with pytest.raises(FileNotFoundError, match=r"are not under .*, e\.g\. "):
        dataset_files(tiny_synth / "metadata", copy)


def test_the_bundled_ilsvrc_metadata_is_refused_naming_its_missing_train_list(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The bundled ILSVRC folder lists val and test only: packing it would leave the shards
    without one training image, so the command stops in one line that names the fix."""
    out = tmp_path / "shards"
    assert main(["data", "shard", "--dataset", "ilsvrc", "--data-root", str(tmp_path),
                 "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1
    assert re.search(r"ILSVRC/train/image_ids\.txt is missing: the bundled ILSVRC metadata has "
                     r"no train list; .*`wsol data prepare ilsvrc --out OUT`.* "
                     r"--metadata-root OUT/metadata$", error.strip()), error
    assert not out.exists()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_metadata_folder_without_a_split_is_refused_not_packed_in_part(
        tiny_synth: Path, tmp_path: Path, split: str):
    metadata = tmp_path / "metadata"
    shutil.copytree(tiny_synth / "metadata", metadata)
    shutil.rmtree(metadata / split)
    with pytest.raises(ValueError, match=f"^{re.escape(str(metadata / split / 'image_ids.txt'))}"
                                         f" is missing: the shards would hold no {split} images"):
        dataset_files(metadata, tiny_synth)


def test_the_command_prints_the_metadata_root_trials_need(
        tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "shards"
    assert main(["data", "shard", "--metadata-root", str(tiny_synth / "metadata"),
                 "--data-root", str(tiny_synth), "--out", str(out), "--shard-mb", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert f"  data_root: {out}\n" in printed
    assert f"  metadata_root: {(tiny_synth / 'metadata').resolve()}   #" in printed
    assert (out / INDEX_NAME).is_file()


def test_the_cluster_syncs_ilsvrc_metadata_where_the_manual_points_trials():
    """Shards hold no metadata: each node of cluster/gpu.yaml syncs the folder that the manual
    uploads, to the path its ILSVRC experiment gives as metadata_root."""
    page = (REPO / "docs" / "cluster" / "data.md").read_text()
    setup = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text())["setup_commands"]
    sync = r"aws s3 sync --only-show-errors (s3://YOUR-BUCKET/datasets/ILSVRC/metadata) (\S+)"
    synced = [m.groups() for c in setup for m in [re.search(sync, c)] if m]
    assert len(synced) == 1, setup
    bucket_copy, node_copy = synced[0]
    uploads = re.findall(r"aws s3 sync (?:--only-show-errors )?(\S+) (\S+)", page)
    assert any(target == bucket_copy for _, target in uploads), uploads
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    shown = [yaml.safe_load(textwrap.dedent(block)) for block in blocks]
    experiments = [f for f in shown if isinstance(f, dict) and f.get("dataset") == "ilsvrc"]
    assert len(experiments) == 1, "docs/cluster/data.md shows no (or several) ILSVRC experiments"
    fields = experiments[0]
    assert fields["metadata_root"] == node_copy
    assert fields["data_root"].startswith("s3://YOUR-BUCKET/datasets/ILSVRC")


def _index(packed: Path) -> dict:
    return json.loads((packed / INDEX_NAME).read_text())


def _entry(index: dict, number: int, **changes) -> dict:
    fields = dict(zip(("path", "shard", "offset", "size"), index["entries"][number], strict=True))
    fields.update(changes)
    index["entries"][number] = [fields["path"], fields["shard"], fields["offset"], fields["size"]]
    return index


HOSTILE = {
    "parent": (lambda i: _entry(i, 0, path="../../.bashrc"), "'..' in path"),
    "absolute": (lambda i: _entry(i, 0, path="/etc/passwd"), "absolute path"),
    "dot part": (lambda i: _entry(i, 0, path="a/./b.jpg"), "not in normal form"),
    "empty part": (lambda i: _entry(i, 0, path="a//b.jpg"), "not in normal form"),
    "backslash": (lambda i: _entry(i, 0, path="..\\x.jpg"), "backslash"),
    "offset past the shard": (lambda i: _entry(i, 0, offset=10**9), r"entries\[0\]\.offset"),
    "size past the shard": (lambda i: _entry(i, 0, size=10**9), r"entries\[0\]\.size"),
    "bool for an int": (lambda i: _entry(i, 0, shard=True), r"entries\[0\]\.shard"),
    "no such shard": (lambda i: _entry(i, 0, shard=999), r"entries\[0\]\.shard"),
    "overlap": (lambda i: _entry(i, 1, shard=i["entries"][0][1], offset=i["entries"][0][2]),
                "overlaps"),
    "twice": (lambda i: _entry(i, 1, path=i["entries"][0][0]), "given twice"),
    "file and folder": (lambda i: _entry(i, 1, path=i["entries"][0][0].split("/")[0]),
                        "is a file and a folder"),
    "shard name": (lambda i: {**i, "shards": [{**i["shards"][0], "name": "../../x.tar"},
                                              *i["shards"][1:]]}, r"shards\[0\]\.name"),
    "digest": (lambda i: {**i, "shards": [{**i["shards"][0], "sha256": "00"},
                                          *i["shards"][1:]]}, r"shards\[0\]\.sha256"),
    "format": (lambda i: {**i, "format": "webdataset"}, "format"),
    "version": (lambda i: {**i, "version": 2}, "version: 2"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_an_untrusted_index_is_refused_naming_the_field(packed: Path, case: str):
    change, message = HOSTILE[case]
    data = json.dumps(change(_index(packed))).encode()
    with pytest.raises(ShardIndexError, match=f"^s3://b/p/index.json: .*{message}"):
        parse_index(data, "s3://b/p/index.json")


def test_only_json_is_read_never_a_pickle(packed: Path):
    with pytest.raises(ShardIndexError, match="not JSON"):
        parse_index(pickle.dumps(_index(packed)), "index")
    with pytest.raises(ShardIndexError, match="format"):
        parse_index(b"[1, 2]", "index")
    with pytest.raises(ShardIndexError):
        parse_index(b"[" * 100_000 + b"]" * 100_000, "index")


def test_a_changed_or_truncated_shard_is_refused(packed: Path, tmp_path: Path):
    index = parse_index((packed / INDEX_NAME).read_bytes(), "index")
    shard = index.shards[0]
    entries = [e for e in index.entries if e.shard == 0]
    data = (packed / shard.name).read_bytes()
    _unpack(io.BytesIO(data), shard, entries, tmp_path / "ok")
    assert all((tmp_path / "ok" / e.path).is_file() for e in entries)
    flipped = bytearray(data)
    flipped[entries[0].offset] ^= 1
    for name, body in (("flipped", bytes(flipped)), ("short", data[:-600]),
                       ("long", data + b"\0" * 512)):
        with pytest.raises(ShardIndexError, match=r"shard-00000\.tar: not the"):
            _unpack(io.BytesIO(body), shard, entries, tmp_path / name)


def test_unpacking_writes_inside_the_target_only(tmp_path: Path):
    """Even a shard whose tar headers name '../x' writes only the index's (checked) paths."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = payload.getvalue()
    shard = Shard("shard-00000.tar", len(data), hashlib.sha256(data).hexdigest())
    _unpack(io.BytesIO(data), shard, [Entry("inside.txt", 0, 512, 3)], tmp_path / "root")
    assert (tmp_path / "root" / "inside.txt").read_bytes() == b"abc"
    assert not (tmp_path / "escaped.txt").exists()


def test_data_root_takes_folders_and_s3_shards_only(tmp_path: Path):
    with pytest.raises(ConfigError, match="data_root: 'gs://b/p' is not a folder or s3://"):
        config_from_dict({"data_root": "gs://b/p"})
    with pytest.raises(ConfigError, match=r"metadata_root: .*required when data_root is an s3"):
        config_from_dict({"data_root": "s3://bucket/datasets/ILSVRC"})
    config = config_from_dict({"data_root": "s3://bucket/datasets/ILSVRC",
                               "metadata_root": str(tmp_path)})
    assert config.data_root == "s3://bucket/datasets/ILSVRC"


def test_an_experiment_hands_its_trials_the_s3_uri_as_written(real_metadata: Path):
    experiment = experiment_from_dict({
        "dataset": "ilsvrc", "data_root": "s3://bucket/datasets/ILSVRC",
        "metadata_root": str(real_metadata / "ILSVRC"), "synthetic_preset": None,
        "methods": ["cam"]})
    assert experiment.trial_base()["data_root"] == "s3://bucket/datasets/ILSVRC"


def test_symlinked_and_hard_linked_images_are_packed_as_their_bytes(tiny_synth: Path,
                                                                    tmp_path: Path):
    """tar.gettarinfo(path) lstats: a symlink, or a second hard link to one inode, would be
    packed as a 0-byte link entry, and the nodes would read empty images."""
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    shutil.copytree(tiny_synth, root)
    elsewhere.mkdir()
    files = dataset_files(root / "metadata", root)
    linked, first, second = files[0], files[1], files[2]
    (elsewhere / "image").write_bytes((root / linked).read_bytes())
    (root / linked).unlink()
    (root / linked).symlink_to(elsewhere / "image")
    (root / second).unlink()
    (root / second).hardlink_to(root / first)
    out = tmp_path / "shards"
    index = write_shards(root, files, str(out), shard_bytes=10**9)
    assert len(index.shards) == 1
    with tarfile.open(out / index.shards[0].name) as tar:
        assert all(m.isreg() for m in tar.getmembers())
    entries = list(index.entries)
    with (out / index.shards[0].name).open("rb") as body:
        _unpack(body, index.shards[0], entries, tmp_path / "fetched")
    for name in (linked, first, second, *files[3:]):
        fetched = (tmp_path / "fetched" / name).read_bytes()
        assert fetched and fetched == (root / name).read_bytes(), name


def test_an_index_with_an_overlong_integer_is_refused_naming_it():
    data = b'{"n": ' + b"9" * 5000 + b"}"
    with pytest.raises(ShardIndexError, match=r"^s3://b/p/index.json: not JSON"):
        parse_index(data, "s3://b/p/index.json")


def test_credentials_in_an_s3_data_root_are_refused_without_being_shown():
    for uri in ("s3://AKIAKEY:s3cr3t@bucket/prefix", "s3://s3cr3t@bucket/prefix",
                "s3://bucket/prefix?secret_key=s3cr3t", "gs://AKIAKEY:s3cr3t@bucket/p"):
        why = uri_problem(uri)
        assert why is not None and "s3cr3t" not in why and "AKIAKEY" not in why, uri
    assert "credentials" in (uri_problem("s3://AKIAKEY:s3cr3t@bucket/prefix") or "")
