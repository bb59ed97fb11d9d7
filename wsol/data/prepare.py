"""`wsol data prepare`: the official archives of CUB, ILSVRC or OpenImages to the layout their
metadata names, every file verified on the way.

Each file the metadata names is taken from its archive by name, streamed (never unpacked
whole), decoded, compared with `image_sizes.txt`, and written under a temporary name then
renamed; a journal (wsol.data.journal) lets a rerun skip what is done. The manifest
(wsol.data.manifest) is written last, only when every entry is there and sound.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from PIL import Image

from wsol.data.archives import (
    ARCHIVES,
    IMAGENET_PAGE,
    UNREADABLE,
    Archive,
    archive_files,
    class_tars,
    entry_keys,
    nested_files,
    unreadable,
)
from wsol.data.bundled import bundled_metadata
from wsol.data.journal import Journal
from wsol.data.manifest import Manifest, dataset_fingerprint
from wsol.data.metadata import SPLITS, SplitMetadata, load_split
from wsol.data.subset import write_metadata

Say = Callable[[str], None]

# The formats of the real datasets' files: CUB, ILSVRC and OpenImages images are JPEG (one
# ILSVRC train image, n02105855_2933.JPEG, is a PNG), OpenImages masks PNG. No other of
# Pillow's decoders (EPS runs Ghostscript) ever sees an archive's bytes.
FORMATS = ("JPEG", "PNG")
# The most bytes one file may have: the largest image image_sizes.txt lists (ILSVRC
# val_00048409, 3646x5005) is 55 MB as raw RGB, several times what its JPEG takes.
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """A file the metadata names: its split, image or mask, and its stated (w, h)."""

    split: str
    kind: str
    size: tuple[int, int] | None = None


@dataclass
class Report:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    written: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def verify(data: bytes, size: tuple[int, int] | None) -> str | None:
    """Why these bytes are not a sound image of `size` (None: they are). Decodes every pixel:
    a truncated JPEG opens but does not load."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            image.load()
            found = image.size
    except Exception as error:  # any decoder's failure is this entry's problem, not a crash
        return f"does not decode as {' or '.join(FORMATS)} ({type(error).__name__}: {error})"
    if size is not None and found != size:
        return f"is {found[0]}x{found[1]}, image_sizes.txt says {size[0]}x{size[1]}"
    return None


def _entries(splits: dict[str, SplitMetadata]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for name, split in splits.items():
        for image_id in split.image_ids:
            entries[image_id] = Entry(name, "images", split.sizes.get(image_id))
        for annotation in split.masks.values():
            for mask in (*annotation.mask_paths, annotation.ignore_path):
                if mask:
                    entries[mask] = Entry(name, "masks")
    return entries


def load_splits(metadata_root: Path, classes: int | None) -> dict[str, SplitMetadata]:
    """The splits with an image list (ILSVRC's bundled train has none: it comes from the
    archive), only the first `classes` classes when given."""
    splits = {s: load_split(metadata_root, s) for s in SPLITS
              if (metadata_root / s / "image_ids.txt").is_file()}
    if classes is None:
        return splits
    kept = {}
    for name, split in splits.items():
        ids = tuple(i for i in split.image_ids if split.labels[i] < classes)
        kept[name] = SplitMetadata(name, split.folder, ids, {i: split.labels[i] for i in ids},
                                   {i: s for i, s in split.sizes.items() if i in ids},
                                   {i: b for i, b in split.boxes.items() if i in ids},
                                   {i: m for i, m in split.masks.items() if i in ids})
    return kept


def _store(out: Path, entry: str, data: bytes) -> None:
    """Temporary name, then rename: an interrupted write never leaves a truncated file under
    the entry's name."""
    target = out / entry
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_bytes(data)
    os.replace(partial, target)


class Preparer:
    """One prepare run: the entries still to do, the journal, the report."""

    def __init__(self, out: Path, entries: dict[str, Entry], journal: Journal, say: Say):
        self.out, self.entries, self.journal, self.say = out, entries, journal, say
        self.report = Report()
        self.pending = {e: v for e, v in entries.items() if not self._verified(e, v)}

    def _verified(self, entry: str, spec: Entry) -> bool:
        """Done by an earlier run, or already on disk and sound (the reference's scripts or
        an earlier version of this one put it there): then it is not taken again."""
        if self.journal.done(entry):
            self.report.skipped += 1
            return True
        path = self.out / entry
        if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
            data = path.read_bytes()
            if verify(data, spec.size) is None:
                self.journal.add(entry, len(data))
                self.report.skipped += 1
                return True
        return False

    def take(self, entry: str, handle: IO[bytes], size: tuple[int, int] | None) -> bool:
        """Verify one archive file and write it; False (and a problem) when it is unsound."""
        data = handle.read(MAX_FILE_BYTES + 1)
        why = (f"is over {MAX_FILE_BYTES} bytes, more than any image of the dataset"
               if len(data) > MAX_FILE_BYTES else verify(data, size))
        if why:
            self.report.problems.append(f"{entry}: {why}")
            return False
        _store(self.out, entry, data)
        self.journal.add(entry, len(data))
        self.report.written += 1
        if self.report.written % 1000 == 0:
            self.say(f"  {self.report.written} files written")
        return True

    def extract(self, archive: Archive, path: Path) -> None:
        """Stream one archive, taking the pending entries it provides."""
        wanted = {e: v for e, v in self.pending.items()
                  if archive.provides(v.split, e, v.kind)}
        if not wanted:
            return
        self.say(f"{path.name}: {len(wanted)} files to take")
        depths = {e.count("/") + 1 for e in wanted}
        try:
            for name, handle in archive_files(path):
                for key in entry_keys(archive, name, depths):
                    if key in wanted:
                        self.take(key, handle, wanted.pop(key).size)
                        self.pending.pop(key)
                        break
                if not wanted:
                    break
        except UNREADABLE as error:  # what was taken so far stays in the journal
            raise unreadable(path, error, archive.page) from None
        if wanted:
            first = sorted(wanted)[0]
            self.report.problems.append(
                f"{path}: {len(wanted)} of the files the metadata names are not in it "
                f"(first: {first}){archive_hint(archive)}")
            for entry in wanted:
                self.pending.pop(entry)


def archive_hint(archive: Archive) -> str:
    if archive.file.startswith("imagenetv2"):
        return ("; ImageNetV2's current tarball names its files <label>/<sha1>.jpeg, not the "
                "<label>/<n>.jpeg of the metadata: see "
                "https://github.com/clovaai/wsolevaluation/issues/42")
    return f"; the archive may be another version than {archive.page} serves"


def _archive_paths(dataset: str, archives: Path, needed: list[Archive]) -> dict[str, Path]:
    """Every archive still needed, or one error naming each missing one and its page."""
    missing = [f"missing archive {archives / a.file}: get it from {a.page}"
               for a in needed if not (archives / a.file).is_file()]
    if missing:
        raise FileNotFoundError("\n".join(missing))
    return {a.file: archives / a.file for a in needed}


def _imagenet_train(path: Path, classes: int | None, journal: Journal,
                    preparer: Preparer) -> SplitMetadata:
    """ILSVRC train-weaksup: every image of the first `classes` class tars (all 1000 by
    default), labelled by the wnid's sorted index. A class tar taken whole without a problem
    is marked finished, and a rerun does not read it again unless a file of it is gone; a
    chosen class without an image on disk is a problem, never a class left out."""
    wnids = class_tars(path)
    chosen = wnids[:classes] if classes else wnids
    # A finished class with a file no longer on disk as verified is taken again.
    lost = {e.split("/")[1] for e in journal.sizes
            if e.startswith("train/") and not journal.done(e)}
    pending = {w for w in chosen if w not in journal.classes or w in lost}
    if pending:
        preparer.say(f"{path.name}: {len(pending)} class tars to take")
    current, problems = None, len(preparer.report.problems)
    try:
        for entry, handle in nested_files(path, pending):
            wnid = entry.split("/")[1]
            if wnid != current:
                _finish(journal, current, problems, preparer)
                current, problems = wnid, len(preparer.report.problems)
            if not journal.done(entry):
                preparer.take(entry, handle, None)
    except UNREADABLE as error:  # reading an image of `current`'s class tar
        raise unreadable(path, error, IMAGENET_PAGE,
                         f"{current}.tar" if current else None) from None
    _finish(journal, current, problems, preparer)
    label = {w: i for i, w in enumerate(wnids)}
    kept = set(chosen)
    ids = tuple(sorted(e for e in journal.sizes if e.startswith("train/")
                       and e.split("/")[1] in kept and journal.done(e)))
    found = {i.split("/")[1] for i in ids}
    preparer.report.problems.extend(
        f"{path}: {w}.tar gave no sound n########_*.JPEG image; download it again from "
        f"{IMAGENET_PAGE}" for w in chosen if w not in found)
    return SplitMetadata("train", path, ids, {i: label[i.split("/")[1]] for i in ids}, {})


def _finish(journal: Journal, wnid: str | None, problems: int, preparer: Preparer) -> None:
    if wnid is not None and len(preparer.report.problems) == problems:
        journal.finish_class(wnid)


def _needed(dataset: str, preparer: Preparer, generated_train: bool) -> list[Archive]:
    needed = [a for a in ARCHIVES[dataset]
              if any(a.provides(v.split, e, v.kind) for e, v in preparer.pending.items())]
    if generated_train:
        needed.insert(0, ARCHIVES[dataset][0])
    return needed


def prepare(dataset: str, archives: str | Path, out: str | Path, classes: int | None = None,
            metadata_root: str | Path | None = None, say: Say = print) -> Report:
    """Fill `out` from the archives in `archives`; the manifest is written when nothing is
    missing or unsound. `classes`: only the first that many classes (a rehearsal, a test)."""
    if dataset not in ARCHIVES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(ARCHIVES)}")
    if classes is not None and classes < 1:
        raise ValueError(f"--classes must be at least 1, got {classes}")
    root, source = Path(out), Path(archives)
    metadata = Path(metadata_root) if metadata_root else bundled_metadata(dataset)
    splits = load_splits(metadata, classes)
    generated_train = dataset == "ilsvrc" and "train" not in splits
    root.mkdir(parents=True, exist_ok=True)
    journal = Journal(root)
    try:
        preparer = Preparer(root, _entries(splits), journal, say)
        paths = _archive_paths(dataset, source, _needed(dataset, preparer, generated_train))
        if generated_train:
            splits["train"] = _imagenet_train(paths[ARCHIVES[dataset][0].file], classes,
                                              journal, preparer)
        for archive in ARCHIVES[dataset]:
            if archive.file in paths and not archive.nested:
                preparer.extract(archive, paths[archive.file])
    finally:
        journal.close()
    report = preparer.report
    report.counts = {name: {"images": len(split.image_ids),
                            "masks": sum(len(m.mask_paths) for m in split.masks.values())}
                     for name, split in splits.items()}
    if not report.problems:
        _write_manifest(dataset, root, metadata, splits, classes, generated_train, report,
                        metadata_root is None)
    return report


def _write_manifest(dataset: str, root: Path, metadata: Path, splits: dict[str, SplitMetadata],
                    classes: int | None, generated_train: bool, report: Report,
                    bundled: bool) -> None:
    """Metadata of its own (a subset, or ILSVRC with its train list) in `<out>/metadata`."""
    if classes is not None or generated_train:
        write_metadata(metadata, root / "metadata", splits)
        metadata, where = root / "metadata", "metadata"
    else:
        where = "bundled" if bundled else str(metadata.resolve())
    Manifest(dataset, where, dataset_fingerprint(metadata), classes, report.counts).write(root)
