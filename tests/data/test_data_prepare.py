"""`wsol data prepare`: fabricated archives with the official internal structure -> the layout
the metadata names, every entry verified, a manifest whose fingerprint searches record."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from fabricated_archives import (
    add_bytes,
    cub_archives,
    first_classes,
    ilsvrc_archives,
    image_bytes,
    openimages_archives,
)

import wsol.data.prepare as prepare_module
from wsol.cli import main
from wsol.data.bundled import bundled_metadata
from wsol.data.check import check_dataset
from wsol.data.manifest import MANIFEST, dataset_fingerprint, read_manifest
from wsol.data.metadata import load_split
from wsol.data.prepare import load_splits, prepare
from wsol.data.subset import write_metadata

FABRICATE = {"cub": cub_archives, "ilsvrc": ilsvrc_archives, "openimages": openimages_archives}


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("dataset", ["cub", "ilsvrc", "openimages"])
def test_archives_become_the_layout_the_metadata_names(dataset, tmp_path, capsys):
    archives, out = tmp_path / "archives", tmp_path / "out"
    files = FABRICATE[dataset](archives, classes=1)
    code = main(["data", "prepare", dataset, "--archives", str(archives), "--out", str(out),
                 "--classes", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"metadata_root: {(out / 'metadata').resolve()}" in printed
    for entry, data in files.items():
        assert (out / entry).read_bytes() == data, entry
    # Nothing but the archives and the prepared folder: no member landed elsewhere.
    assert {p.name for p in tmp_path.iterdir()} == {"archives", "out"}
    reports = check_dataset(out / "metadata", out)
    assert [r.problems for r in reports] == [[], [], []]
    assert all(r.images > 0 and r.classes == 1 for r in reports)
    manifest = read_manifest(out)
    assert manifest is not None and manifest.dataset == dataset and manifest.classes == 1
    assert manifest.fingerprint == dataset_fingerprint(out / "metadata")
    assert manifest.counts == {r.name: {"images": r.images, "masks": r.masks} for r in reports}


def test_ilsvrc_train_is_listed_from_the_class_tars(tmp_path):
    archives, out = tmp_path / "archives", tmp_path / "out"
    ilsvrc_archives(archives, classes=2, per_class=2)
    report = prepare("ilsvrc", archives, out, classes=2, say=_quiet)
    assert report.problems == []
    train = load_split(out / "metadata", "train")
    assert train.labels == {"train/n00000000/n00000000_0.JPEG": 0,
                            "train/n00000000/n00000000_1.JPEG": 0,
                            "train/n00000001/n00000001_0.JPEG": 1,
                            "train/n00000001/n00000001_1.JPEG": 1}
    # val (ImageNetV2) and test keep the bundled lines of their first two classes.
    bundled = load_split(bundled_metadata("ilsvrc"), "val")
    val = load_split(out / "metadata", "val")
    assert val.image_ids == tuple(i for i in bundled.image_ids if bundled.labels[i] < 2)
    assert val.boxes == {i: bundled.boxes[i] for i in val.image_ids}


def test_a_rerun_and_an_interrupted_run_take_only_what_is_left(tmp_path, monkeypatch):
    archives, out = tmp_path / "archives", tmp_path / "out"
    files = cub_archives(archives, classes=1)
    real_store = prepare_module._store
    stored: list[str] = []

    def store_then_stop(root: Path, entry: str, data: bytes) -> None:
        if len(stored) == 20:
            raise KeyboardInterrupt
        real_store(root, entry, data)
        stored.append(entry)

    monkeypatch.setattr(prepare_module, "_store", store_then_stop)
    with pytest.raises(KeyboardInterrupt):
        prepare("cub", archives, out, classes=1, say=_quiet)
    assert not (out / MANIFEST).exists()
    assert not list(out.rglob("*.part"))
    monkeypatch.setattr(prepare_module, "_store", real_store)
    report = prepare("cub", archives, out, classes=1, say=_quiet)
    assert (report.written, report.skipped, report.problems) == (len(files) - 20, 20, [])
    again = prepare("cub", archives, out, classes=1, say=_quiet)
    assert (again.written, again.skipped) == (0, len(files))


def test_a_missing_archive_is_named_with_its_page(tmp_path, capsys):
    archives, out = tmp_path / "archives", tmp_path / "out"
    cub_archives(archives, classes=1)
    (archives / "CUBV2.tar").unlink()
    code = main(["data", "prepare", "cub", "--archives", str(archives), "--out", str(out),
                 "--classes", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f"wsol: error: missing archive {archives / 'CUBV2.tar'}: get it from "
                           "https://github.com/clovaai/wsolevaluation#cubv2")
    assert not list(out.glob("0*"))  # nothing taken before every archive is there


def _cubv2_with(archives: Path, changes: dict[str, bytes | None], links: dict[str, str]) -> None:
    """Rewrites CUBV2.tar: some images replaced (None: left out), some given as links."""
    val = first_classes("cub", 1)["val"]
    with tarfile.open(archives / "CUBV2.tar", "w") as tar:
        for index, image_id in enumerate(val.image_ids):
            if image_id in links:
                info = tarfile.TarInfo(image_id)
                info.type, info.linkname = tarfile.SYMTYPE, links[image_id]
                tar.addfile(info)
                continue
            data = changes.get(image_id, image_bytes(val.sizes[image_id], index))
            if data is not None:
                add_bytes(tar, image_id, data)
        add_bytes(tar, "../../escaped.jpg", image_bytes((8, 8), 0))
        add_bytes(tar, "/tmp/wsol-absolute-member.jpg", image_bytes((8, 8), 0))


def test_unsound_images_and_links_are_problems_and_no_manifest(tmp_path, capsys):
    archives, out = tmp_path / "archives", tmp_path / "out"
    cub_archives(archives, classes=1)
    ids = first_classes("cub", 1)["val"].image_ids
    truncated = image_bytes((500, 333), 1)[:2000]
    _cubv2_with(archives, {ids[0]: image_bytes((20, 10), 0), ids[1]: truncated},
                {ids[2]: "/etc/passwd"})
    code = main(["data", "prepare", "cub", "--archives", str(archives), "--out", str(out),
                 "--classes", "1"])
    printed = capsys.readouterr().out
    assert code == 1
    assert f"{ids[0]}: is 20x10, image_sizes.txt says" in printed
    assert f"{ids[1]}: does not decode" in printed
    assert f"CUBV2.tar: 1 of the files the metadata names are not in it (first: {ids[2]})" \
        in printed
    assert not (out / MANIFEST).exists() and not (out / ids[2]).exists()
    assert not (tmp_path / "escaped.jpg").exists() and not (archives / "escaped.jpg").exists()
    assert not Path("/tmp/wsol-absolute-member.jpg").exists()
    assert (out / ids[3]).is_file()  # the sound ones are kept for the rerun


def test_imagenetv2_with_hashed_names_points_to_the_known_issue(tmp_path):
    archives, out = tmp_path / "archives", tmp_path / "out"
    ilsvrc_archives(archives, classes=1, per_class=1)
    with tarfile.open(archives / "imagenetv2-threshold0.7.tar.gz", "w:gz") as tar:
        add_bytes(tar, "imagenetv2-threshold0.7/0/0af3f1b55de791c4144e2fb6d7dfe96dfc22d3fc.jpeg",
                  image_bytes((50, 40), 0))
    report = prepare("ilsvrc", archives, out, classes=1, say=_quiet)
    assert len(report.problems) == 1
    assert "10 of the files the metadata names are not in it (first: val2/0/" in \
        report.problems[0]
    assert "wsolevaluation/issues/42" in report.problems[0]
    assert not (out / MANIFEST).exists()


def test_other_metadata_is_recorded_by_path(tmp_path):
    """--metadata-root (here a one-class copy): no metadata folder of its own, the manifest
    names the given one and carries its fingerprint."""
    archives, out, metadata = tmp_path / "archives", tmp_path / "out", tmp_path / "meta"
    cub_archives(archives, classes=1)
    source = bundled_metadata("cub")
    write_metadata(source, metadata, load_splits(source, 1))
    report = prepare("cub", archives, out, metadata_root=metadata, say=_quiet)
    assert report.problems == []
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["metadata"] == str(metadata.resolve()) and manifest["classes"] is None
    assert manifest["fingerprint"] == dataset_fingerprint(metadata)
    assert not (out / "metadata").exists()


def test_a_tar_of_the_wrong_shape_is_refused(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    with tarfile.open(archives / "ILSVRC2012_img_train.tar", "w") as tar:
        add_bytes(tar, "n01440764.tar", io.BytesIO().getvalue())
    for name in ("ILSVRC2012_img_val.tar", "imagenetv2-threshold0.7.tar.gz"):
        tarfile.open(archives / name, "w").close()
    with pytest.raises(ValueError, match=r"1 class tars .* expected 1000: an incomplete download"):
        prepare("ilsvrc", archives, tmp_path / "out", classes=1, say=_quiet)


def test_a_truncated_archive_is_one_line_naming_it(tmp_path, capsys):
    archives, out = tmp_path / "archives", tmp_path / "out"
    cub_archives(archives, classes=1)
    tgz = archives / "CUB_200_2011.tgz"
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    code = main(["data", "prepare", "cub", "--archives", str(archives), "--out", str(out),
                 "--classes", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(f"wsol: error: {tgz}: unreadable (")
    assert err.endswith("download it again from https://www.vision.caltech.edu/datasets/"
                        "cub_200_2011/")
    assert not (out / MANIFEST).exists()
    assert (out / ".wsol-prepare" / "verified.tsv").read_text()  # what it took is kept


def test_a_corrupt_class_tar_or_zip_member_is_named(tmp_path):
    archives, out = tmp_path / "archives", tmp_path / "out"
    ilsvrc_archives(archives, classes=1, per_class=2)
    train = archives / "ILSVRC2012_img_train.tar"
    with tarfile.open(train) as tar:
        inner = tar.extractfile("n00000000.tar").read()  # type: ignore[union-attr]
    data = train.read_bytes()
    start = data.index(inner)
    broken = bytearray(data)
    broken[start + 512 + 100:start + len(inner)] = b"\0" * (len(inner) - 612)
    broken[start:start + 512] = b"\xff" * 512  # the class tar's first header: garbage
    train.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=rf"^{train}: n00000000\.tar: unreadable \(.*\); "
                                         "download it again from https://image-net.org/"):
        prepare("ilsvrc", archives, out, classes=1, say=_quiet)
    openimages = tmp_path / "openimages"
    openimages_archives(openimages, classes=1)
    images = openimages / "OpenImages_images.zip"
    data = bytearray(images.read_bytes())
    data[30:34] = b"XXXX"  # inside the first member's local header and name
    data[0:4] = b"PK\x01\x02"  # no longer a local file header: BadZipFile on open
    images.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"^{images}: unreadable \(.*\); download it again"):
        prepare("openimages", openimages, tmp_path / "out-oi", classes=1, say=_quiet)


def test_a_decoder_other_than_jpeg_or_png_is_never_run(tmp_path):
    from PIL import Image

    archives, out = tmp_path / "archives", tmp_path / "out"
    cub_archives(archives, classes=1)
    val = first_classes("cub", 1)["val"]
    ids = val.image_ids
    tiff = io.BytesIO()
    Image.new("RGB", val.sizes[ids[1]]).save(tiff, "TIFF")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    _cubv2_with(archives, {ids[0]: eps, ids[1]: tiff.getvalue()}, {})
    report = prepare("cub", archives, out, classes=1, say=_quiet)
    assert sorted(p.split(":")[0] for p in report.problems) == sorted(ids[:2])
    assert all("does not decode as JPEG or PNG" in p for p in report.problems)
    assert not (out / ids[0]).exists() and not (out / MANIFEST).exists()


def test_a_file_over_the_limit_is_a_problem_not_read_whole(tmp_path, monkeypatch):
    archives, out = tmp_path / "archives", tmp_path / "out"
    limit = max(len(data) for data in cub_archives(archives, classes=1).values())
    monkeypatch.setattr(prepare_module, "MAX_FILE_BYTES", limit)
    val = first_classes("cub", 1)["val"]
    image = image_bytes(val.sizes[val.image_ids[0]], 0)
    _cubv2_with(archives, {val.image_ids[0]: image + b"\0" * (limit + 1 - len(image))}, {})
    report = prepare("cub", archives, out, classes=1, say=_quiet)
    assert report.problems == [f"{val.image_ids[0]}: is over {limit} bytes, more than any "
                               "image of the dataset"]
    assert not (out / val.image_ids[0]).exists() and not (out / MANIFEST).exists()


def test_an_ilsvrc_class_without_images_or_with_files_gone_is_not_clean(tmp_path):
    archives, out = tmp_path / "archives", tmp_path / "out"
    ilsvrc_archives(archives, classes=1, per_class=2)
    train = archives / "ILSVRC2012_img_train.tar"
    with tarfile.open(train) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    no_images = io.BytesIO()
    with tarfile.open(fileobj=no_images, mode="w") as tar:
        add_bytes(tar, "README", b"a sound tar without a single image")
    members["n00000001.tar"] = no_images.getvalue()
    with tarfile.open(train, "w") as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
    report = prepare("ilsvrc", archives, out, classes=2, say=_quiet)
    # (val and test lack class 1 too: the fabricated archives hold one class)
    assert report.problems[0] == (f"{train}: n00000001.tar gave no sound n########_*.JPEG image; "
                                  "download it again from "
                                  "https://image-net.org/download-images.php")
    assert not (out / MANIFEST).exists()
    ok = prepare("ilsvrc", archives, out, classes=1, say=_quiet)
    assert ok.problems == []
    gone = out / "train/n00000000/n00000000_1.JPEG"
    gone.unlink()
    again = prepare("ilsvrc", archives, out, classes=1, say=_quiet)  # the class is taken again
    assert again.problems == [] and again.written == 1 and gone.is_file()
    train = load_split(out / "metadata", "train")
    assert sorted(train.image_ids) == ["train/n00000000/n00000000_0.JPEG",
                                       "train/n00000000/n00000000_1.JPEG"]
