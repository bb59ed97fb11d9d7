"""Small stand-ins for the official archives: the real internal structure (member names from
the bundled metadata, wrapping folders, per-class tars), a few classes, small images at the
sizes image_sizes.txt states."""

from __future__ import annotations

import functools
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from wsol.data.bundled import bundled_metadata
from wsol.data.metadata import SplitMetadata
from wsol.data.prepare import load_splits


@functools.cache
def first_classes(dataset: str, classes: int) -> dict[str, SplitMetadata]:
    """The bundled splits cut to their first classes (read once: ILSVRC's take seconds)."""
    return load_splits(bundled_metadata(dataset), classes)


def image_bytes(size: tuple[int, int], seed: int, kind: str = "JPEG") -> bytes:
    """A noisy image (so a truncated copy fails to decode) of `size` (w, h)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    image = Image.fromarray(pixels)
    if kind == "PNG":
        image = image.convert("L")
    out = io.BytesIO()
    image.save(out, kind, quality=70) if kind == "JPEG" else image.save(out, kind)
    return out.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            add_bytes(tar, name, data)
    return path


def _images(dataset: str, classes: int, splits: tuple[str, ...],
            default_size: tuple[int, int] = (64, 48)) -> dict[str, bytes]:
    """metadata path -> image bytes, for the first `classes` classes of `splits`."""
    found = first_classes(dataset, classes)
    images = {}
    for split in splits:
        meta = found[split]
        for index, image_id in enumerate(meta.image_ids):
            images[image_id] = image_bytes(meta.sizes.get(image_id, default_size), index)
    return images


def cub_archives(folder: Path, classes: int = 1) -> dict[str, bytes]:
    """CUB_200_2011.tgz (train and test under CUB_200_2011/images/, besides other files)
    and CUBV2.tar (the val images at its top). Returns every image by metadata path."""
    folder.mkdir(parents=True, exist_ok=True)
    main = _images("cub", classes, ("train", "test"))
    extra = {"CUB_200_2011/README": b"readme", "CUB_200_2011/images.txt": b"1 x.jpg\n",
             "attributes.txt": b"1 has_bill_shape::curved\n"}
    _tar(folder / "CUB_200_2011.tgz",
         {**extra, **{f"CUB_200_2011/images/{k}": v for k, v in main.items()}}, "w:gz")
    v2 = _images("cub", classes, ("val",))
    _tar(folder / "CUBV2.tar", v2)
    return {**main, **v2}


def ilsvrc_archives(folder: Path, classes: int = 1, per_class: int = 3) -> dict[str, bytes]:
    """ILSVRC2012_img_train.tar (1000 class tars n########.tar, the first `classes` with
    images, the others empty), ILSVRC2012_img_val.tar (flat) and the ImageNetV2 tarball
    (imagenetv2-threshold0.7/<label>/<n>.jpeg)."""
    folder.mkdir(parents=True, exist_ok=True)
    wnids = [f"n{index:08d}" for index in range(1000)]
    train = {}
    with tarfile.open(folder / "ILSVRC2012_img_train.tar", "w") as outer:
        for label, wnid in enumerate(wnids):
            inner = io.BytesIO()
            if label < classes:
                files = {f"{wnid}_{k}.JPEG": image_bytes((80 + k, 60), label * 100 + k)
                         for k in range(per_class)}
                train.update({f"train/{wnid}/{k}": v for k, v in files.items()})
                with tarfile.open(fileobj=inner, mode="w") as tar:
                    for name, data in files.items():
                        add_bytes(tar, name, data)
            add_bytes(outer, f"{wnid}.tar", inner.getvalue())
    test = _images("ilsvrc", classes, ("test",))
    _tar(folder / "ILSVRC2012_img_val.tar", {k.removeprefix("val/"): v for k, v in test.items()})
    val = _images("ilsvrc", classes, ("val",))
    _tar(folder / "imagenetv2-threshold0.7.tar.gz",
         {k.replace("val2/", "imagenetv2-threshold0.7/", 1): v for k, v in val.items()},
         "w:gz")
    return {**train, **test, **val}


def openimages_archives(folder: Path, classes: int = 1) -> dict[str, bytes]:
    """OpenImages_images.zip ({train,val,test}/<class>/<id>.jpg) and
    OpenImages_annotations.zip (the val and test masks, in a wrapping folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = _images("openimages", classes, ("train", "val", "test"))
    with zipfile.ZipFile(folder / "OpenImages_images.zip", "w") as archive:
        for name, data in images.items():
            archive.writestr(name, data)
    masks = {}
    for split in first_classes("openimages", classes).values():
        for annotation in split.masks.values():
            for mask in (*annotation.mask_paths, annotation.ignore_path):
                if mask:
                    masks[mask] = image_bytes((64, 48), len(masks), "PNG")
    with zipfile.ZipFile(folder / "OpenImages_annotations.zip", "w") as archive:
        for name, data in masks.items():
            archive.writestr(f"OpenImages/{name}", data)
    return {**images, **masks}
