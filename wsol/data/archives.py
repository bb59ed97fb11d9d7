"""The official archives of the real benchmarks, and where each of their files goes.

The layouts are those the reference evaluator's scripts make (clovaai/wsolevaluation,
dataset/prepare_cub.sh, prepare_imagenet.sh, prepare_openimages.sh; README section "Prepare
train+eval datasets"), which its metadata (bundled here) names:

- CUB: `CUB_200_2011.tgz` holds `CUB_200_2011/images/<class>/<file>.jpg` (train and test), the
  CUBV2 tar `<class>/<file>.jpg` (train-fullsup); both land in `<out>/<class>/<file>`.
- ILSVRC: `ILSVRC2012_img_train.tar` holds one `<wnid>.tar` per class (-> `train/<wnid>/`),
  `ILSVRC2012_img_val.tar` flat `ILSVRC2012_val_*.JPEG` files (-> `val/`, the test split), and
  `imagenetv2-threshold0.7.tar.gz` `imagenetv2-threshold0.7/<label>/<n>.jpeg` (-> `val2/`,
  train-fullsup).
- OpenImages: `OpenImages_images.zip` and `OpenImages_annotations.zip` hold
  `{train,val,test}/<class>/...` images and masks.

Files are matched by the last components of their names, as many as the metadata path has
below the archive's output prefix, so a wrapping folder in an archive changes nothing; only
metadata paths (checked to stay under the data root) ever name an output file.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

CUB_PAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
CUBV2_PAGE = "https://github.com/clovaai/wsolevaluation#cubv2"
IMAGENET_PAGE = "https://image-net.org/download-images.php"
IMAGENETV2_PAGE = "https://github.com/modestyachts/ImageNetV2 (imagenetv2-threshold0.7.tar.gz)"
OPENIMAGES_PAGE = "https://github.com/clovaai/wsolevaluation#openimages30k"

# A class tar of ILSVRC2012_img_train.tar and an image in it.
WNID_TAR = re.compile(r"(?:.*/)?(n\d{8})\.tar")
TRAIN_IMAGE = re.compile(r"(?:.*/)?(n\d{8}_\d+\.JPEG)")
IMAGENET_CLASSES = 1000

# What reading a truncated or corrupt tar, gzip or zip raises.
UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error)


def unreadable(path: Path, error: BaseException, page: str, inner: str | None = None
               ) -> ValueError:
    """One line naming the archive (and the class tar in it) that cannot be read."""
    where = f"{path}: {inner}" if inner else str(path)
    return ValueError(f"{where}: unreadable ({error}); download it again from {page}")


@dataclass(frozen=True)
class Archive:
    """One downloaded file: the entries of `splits` under `prefix` come from it; `holds`
    says whether those are the images or the masks (OpenImages ships them apart)."""

    file: str
    page: str
    splits: tuple[str, ...]
    prefix: str = ""
    holds: Literal["images", "masks"] = "images"
    nested: bool = False  # a tar of per-class tars (ILSVRC train)

    def provides(self, split: str, entry: str, kind: str) -> bool:
        return split in self.splits and kind == self.holds and entry.startswith(self.prefix)


ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "cub": (Archive("CUB_200_2011.tgz", CUB_PAGE, ("train", "test")),
            Archive("CUBV2.tar", CUBV2_PAGE, ("val",))),
    "ilsvrc": (Archive("ILSVRC2012_img_train.tar", IMAGENET_PAGE, ("train",), "train/",
                       nested=True),
               Archive("ILSVRC2012_img_val.tar", IMAGENET_PAGE, ("test",), "val/"),
               Archive("imagenetv2-threshold0.7.tar.gz", IMAGENETV2_PAGE, ("val",), "val2/")),
    "openimages": (Archive("OpenImages_images.zip", OPENIMAGES_PAGE, ("train", "val", "test")),
                   Archive("OpenImages_annotations.zip", OPENIMAGES_PAGE, ("val", "test"),
                           holds="masks")),
}


def entry_keys(archive: Archive, member: str, depths: set[int]) -> Iterator[str]:
    """The metadata paths a member could be: its last components under the prefix."""
    parts = PurePosixPath(member).parts
    below = archive.prefix.count("/")
    for depth in depths:
        if len(parts) >= depth - below > 0:
            yield archive.prefix + "/".join(parts[len(parts) - (depth - below):])


def _tar_files(tar: tarfile.TarFile) -> Iterator[tuple[str, IO[bytes]]]:
    for member in tar:
        if member.isfile():  # links, devices and folders are never extracted
            handle = tar.extractfile(member)
            if handle is not None:
                yield member.name, handle


def archive_files(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, readable) of every regular file, streamed in archive order: a tar is read
    once front to back (a .tgz is never unpacked whole), a zip through its index."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as handle:
                        yield info.filename, handle
        return
    with tarfile.open(path, "r|*") as tar:
        yield from _tar_files(tar)


def class_tars(path: Path) -> list[str]:
    """The wnids of ILSVRC2012_img_train.tar's class tars, sorted: a class's label is its
    index here, as in the reference metadata (n01440764, tench, is 0)."""
    try:
        with tarfile.open(path, "r:") as tar:  # headers only: the tar is not compressed
            names = tar.getnames()
    except UNREADABLE as error:
        raise unreadable(path, error, IMAGENET_PAGE) from None
    wnids = sorted(m.group(1) for name in names if (m := WNID_TAR.fullmatch(name)))
    if len(wnids) != IMAGENET_CLASSES:
        raise ValueError(f"{path}: {len(wnids)} class tars (n########.tar), expected "
                         f"{IMAGENET_CLASSES}: an incomplete download? Get it from "
                         f"{IMAGENET_PAGE}")
    return wnids


def nested_files(path: Path, wnids: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """(`train/<wnid>/<file>`, readable) of the class tars of `wnids`, each streamed; the
    others are seeked over (the outer tar is not compressed). A tar that cannot be read is a
    ValueError naming it (a reader of the images yielded catches its own, see UNREADABLE)."""
    try:
        with tarfile.open(path, "r:") as outer:
            for name, handle in _tar_files(outer):
                match = WNID_TAR.fullmatch(name)
                if match is not None and match.group(1) in wnids:
                    yield from _class_images(path, name, match.group(1), handle)
    except UNREADABLE as error:
        raise unreadable(path, error, IMAGENET_PAGE) from None


def _class_images(path: Path, name: str, wnid: str, handle: IO[bytes]
                  ) -> Iterator[tuple[str, IO[bytes]]]:
    try:
        with tarfile.open(fileobj=handle, mode="r|") as inner:
            for inner_name, image in _tar_files(inner):
                found = TRAIN_IMAGE.fullmatch(inner_name)
                if found:
                    yield f"train/{wnid}/{found.group(1)}", image
    except UNREADABLE as error:
        raise unreadable(path, error, IMAGENET_PAGE, name) from None
