"""A dataset as tar shards in S3, fetched once per node into a local cache.

`aws s3 sync` of ILSVRC's 1.3 M image files costs every node one request per file before its
first trial, and again on each spot replacement. `wsol data shard` packs the files named by the
metadata into plain tar shards (about 1 GB each) plus `index.json` (path -> shard, byte offset,
size, and each shard's SHA-256). A trial whose `data_root` is `s3://bucket/prefix` calls
`local_root`, which streams each shard once per node (one GET per shard), writes its members
into a node-local folder and returns that folder: every reader of images and masks (PIL,
OpenCV, the evaluator) then works on local files unchanged, and reads the same bytes as from the
source folder.

The cache is per node: `$WSOL_SHARD_CACHE` (default ~/.cache/wsol/shards). Concurrent trials on
a node take one file lock, so one downloads and the others wait; a finished shard leaves a
marker, so an interrupted fetch resumes with the missing shards only.

Everything read from the bucket is untrusted: the index is JSON only, each path must be a plain
relative path inside the data root, byte ranges must lie inside their shard without overlap,
and each shard must match the size and SHA-256 the index gives (tar headers are not used).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from wsol.common.node_lock import node_lock
from wsol.common.protocol import SPLITS
from wsol.data.bundled import bundled_metadata
from wsol.data.metadata import check_relative_path, load_split

FORMAT = "wsol-shards"
VERSION = 1
INDEX_NAME = "index.json"
SHARD_NAME = re.compile(r"shard-\d{5}\.tar")
SHA256 = re.compile(r"[0-9a-f]{64}")
CACHE_ENV = "WSOL_SHARD_CACHE"
DEFAULT_CACHE = "~/.cache/wsol/shards"
DEFAULT_SHARD_BYTES = 1 << 30
# Bounds no real dataset reaches (ILSVRC's index is ~100 MB, 1.34 M entries), so a hostile or
# broken index is refused before it fills memory or disk.
MAX_INDEX_BYTES = 1 << 30
MAX_ENTRIES = 20_000_000
MAX_SHARD_BYTES = 1 << 40
FETCH_THREADS = 8
_CHUNK = 1 << 20


class ShardIndexError(ValueError):
    """The index or a shard read from the bucket is not what a `wsol data shard` wrote."""


@dataclass(frozen=True)
class Shard:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Entry:
    path: str
    shard: int
    offset: int
    size: int


@dataclass(frozen=True)
class ShardIndex:
    shards: tuple[Shard, ...]
    entries: tuple[Entry, ...]

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "version": VERSION,
            "shards": [{"name": s.name, "size": s.size, "sha256": s.sha256} for s in self.shards],
            "entries": [[e.path, e.shard, e.offset, e.size] for e in self.entries],
        }, separators=(",", ":")).encode()


# --- s3:// URIs -------------------------------------------------------------------------------

def is_shard_uri(data_root: str | Path) -> bool:
    return isinstance(data_root, str) and data_root.startswith("s3://")


def uri_problem(data_root: str) -> str | None:
    """Why `data_root` is not a folder or an s3://bucket/prefix of shards, or None."""
    if "://" not in data_root:
        return None
    parts = urlsplit(data_root)
    # Shown without a user part, query or fragment: any of them may hold a key or a secret.
    user, _, host = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}://{'***@' if user else ''}{host}{parts.path}" + \
        ("?***" if parts.query or parts.fragment else "")
    if user:
        return (f"{shown!r} holds credentials, which a search would log and save: leave them "
                "out; S3 takes them from the AWS credential chain ($AWS_ACCESS_KEY_ID and "
                "$AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)")
    if parts.scheme != "s3":
        return f"{shown!r}: only s3:// URIs (a `wsol data shard` prefix) or folders"
    if not host or parts.query or parts.fragment:
        return f"{shown!r} is not s3://bucket/prefix"
    return None


def _split(uri: str) -> tuple[str, str]:
    why = uri_problem(uri)
    if why or not is_shard_uri(uri):
        raise ValueError(why or f"{uri!r} is not s3://bucket/prefix")
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _s3() -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3")


# --- the index: JSON only, every field checked ------------------------------------------------

def _integer(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ShardIndexError(f"{what}: {value!r} is not an integer in [{low}, {high}]")
    return value


def _shards(raw: object) -> tuple[Shard, ...]:
    if not isinstance(raw, list) or not raw:
        raise ShardIndexError("shards: not a non-empty list")
    shards = []
    for number, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"name", "size", "sha256"}:
            raise ShardIndexError(f"shards[{number}]: not {{name, size, sha256}}")
        name, digest = item["name"], item["sha256"]
        if not isinstance(name, str) or name != f"shard-{number:05d}.tar":
            raise ShardIndexError(f"shards[{number}].name: {name!r} is not shard-{number:05d}.tar")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise ShardIndexError(f"shards[{number}].sha256: not 64 lowercase hex digits")
        size = _integer(item["size"], f"shards[{number}].size", 1, MAX_SHARD_BYTES)
        shards.append(Shard(name, size, digest))
    return tuple(shards)


def _path(value: object, where: str) -> str:
    """A plain relative path: no '..', no absolute path, no '.' or empty parts, no NUL."""
    if not isinstance(value, str):
        raise ShardIndexError(f"{where}: path {value!r} is not a string")
    why = check_relative_path(value)
    if why is None and ("\0" in value or str(PurePosixPath(value)) != value or value == "."):
        why = f"path {value!r} is not in normal form"
    if why:
        raise ShardIndexError(f"{where}: {why}")
    return value


def _entries(raw: object, shards: tuple[Shard, ...]) -> tuple[Entry, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise ShardIndexError(f"entries: not a list of at most {MAX_ENTRIES} entries")
    entries = []
    for number, item in enumerate(raw):
        where = f"entries[{number}]"
        if not isinstance(item, list) or len(item) != 4:
            raise ShardIndexError(f"{where}: not [path, shard, offset, size]")
        shard = _integer(item[1], f"{where}.shard", 0, len(shards) - 1)
        offset = _integer(item[2], f"{where}.offset", 0, shards[shard].size)
        size = _integer(item[3], f"{where}.size", 0, shards[shard].size - offset)
        entries.append(Entry(_path(item[0], where), shard, offset, size))
    _no_clashes(entries)
    return tuple(entries)


def _no_clashes(entries: list[Entry]) -> None:
    """No path twice, no path that is another's folder, no overlapping byte ranges."""
    paths = {e.path for e in entries}
    if len(paths) < len(entries):
        raise ShardIndexError("entries: a path is given twice")
    for entry in entries:
        for parent in PurePosixPath(entry.path).parents:
            if str(parent) in paths:
                raise ShardIndexError(f"entries: {str(parent)!r} is a file and a folder")
    end: dict[int, int] = {}
    for entry in sorted(entries, key=lambda e: (e.shard, e.offset)):
        if entry.offset < end.get(entry.shard, 0):
            raise ShardIndexError(f"entries: {entry.path!r} overlaps another entry's bytes")
        end[entry.shard] = entry.offset + entry.size


def parse_index(data: bytes, source: str) -> ShardIndex:
    """The index a `wsol data shard` wrote, or ShardIndexError naming `source` and the field."""
    try:
        if len(data) > MAX_INDEX_BYTES:
            raise ShardIndexError(f"larger than {MAX_INDEX_BYTES} bytes")
        try:
            raw = json.loads(data)
        except ValueError as error:  # bad UTF-8 or JSON, or an integer too long to convert
            raise ShardIndexError(f"not JSON: {error}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ShardIndexError(f"format: not {FORMAT!r}")
        if raw.get("version") != VERSION:
            raise ShardIndexError(f"version: {raw.get('version')!r}, this reader knows {VERSION}")
        shards = _shards(raw.get("shards"))
        return ShardIndex(shards, _entries(raw.get("entries"), shards))
    except (ShardIndexError, RecursionError) as error:
        raise ShardIndexError(f"{source}: {error}") from None


# --- writing: `wsol data shard` ---------------------------------------------------------------

def missing_split(metadata_root: str | Path) -> str | None:
    """Why `metadata_root` cannot be packed: a split without its image list, whose images the
    shards would silently lack (a search trains on train, selects on val, tests on test)."""
    root = Path(metadata_root)
    for split in SPLITS:
        listing = root / split / "image_ids.txt"
        if listing.is_file():
            continue
        if split == "train" and root.resolve() == bundled_metadata("ilsvrc").resolve():
            return (f"{listing} is missing: the bundled ILSVRC metadata has no train list; "
                    "pack the metadata folder `wsol data prepare ilsvrc --out OUT` writes, "
                    "with --metadata-root OUT/metadata")
        return (f"{listing} is missing: the shards would hold no {split} images; give a "
                "--metadata-root with train/, val/ and test/")
    return None


def dataset_files(metadata_root: str | Path, data_root: str | Path) -> list[str]:
    """Every image and mask path the train, val and test splits under `metadata_root` name
    (checked relative paths, see load_split), each once, sorted; ValueError if a split is not
    listed there, rather than shards without its images."""
    why = missing_split(metadata_root)
    if why:
        raise ValueError(why)
    files: set[str] = set()
    for split in SPLITS:
        metadata = load_split(metadata_root, split)
        files.update(metadata.image_ids)
        for mask in metadata.masks.values():
            files.update(mask.mask_paths)
            files.update([mask.ignore_path] if mask.ignore_path else [])
    missing = [f for f in sorted(files) if not (Path(data_root) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) named by {metadata_root} are not under "
                                f"{data_root}, e.g. {missing[0]}")
    return sorted(files)


def _groups(data_root: Path, files: list[str], shard_bytes: int) -> Iterator[list[str]]:
    """Consecutive runs of `files` of about `shard_bytes` each (a larger file: alone)."""
    group: list[str] = []
    total = 0
    for relative in files:
        size = (data_root / relative).stat().st_size
        if group and total + size > shard_bytes:
            yield group
            group, total = [], 0
        group.append(relative)
        total += size + 1024  # tar header and padding
    if group:
        yield group


def _write_tar(data_root: Path, files: list[str], target: Path) -> dict[str, tuple[int, int]]:
    """One shard; path -> (offset of its bytes, size), read back from the written tar."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for relative in files:
            # A regular file of the open file's size (fstat), never tar.gettarinfo's link
            # entry: it lstats the path, and makes a second hard link to an inode a 0-byte
            # LNKTYPE; a symlinked image is packed as its bytes too.
            with (data_root / relative).open("rb") as handle:
                status = os.fstat(handle.fileno())
                info = tarfile.TarInfo(relative)
                info.size, info.mtime, info.mode = status.st_size, int(status.st_mtime), 0o644
                tar.addfile(info, handle)
    with tarfile.open(target, "r") as tar:
        members = tar.getmembers()
    for member in members:
        size = (data_root / member.name).stat().st_size
        if not member.isreg() or member.size != size:
            raise ValueError(f"{target}: {member.name} packed as {member.size} bytes of type "
                             f"{member.type!r}, the file has {size}: was it changed meanwhile?")
    return {m.name: (m.offset_data, m.size) for m in members}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_shards(data_root: str | Path, files: list[str], out: str,
                 shard_bytes: int = DEFAULT_SHARD_BYTES) -> ShardIndex:
    """Pack `files` (relative to `data_root`) into shards under `out` (a folder or an s3://
    prefix), the index last, so that a reader never sees an index without its shards."""
    root = Path(data_root)
    remote = is_shard_uri(out)
    staging = Path(tempfile.mkdtemp(prefix="wsol-shards-")) if remote else Path(out)
    staging.mkdir(parents=True, exist_ok=True)
    shards: list[Shard] = []
    entries: list[Entry] = []
    try:
        for number, group in enumerate(_groups(root, files, shard_bytes)):
            target = staging / f"shard-{number:05d}.tar"
            members = _write_tar(root, group, target)
            entries += [Entry(f, number, *members[f]) for f in group]
            shards.append(Shard(target.name, target.stat().st_size, _sha256(target)))
            if remote:
                bucket, prefix = _split(out)
                _s3().upload_file(str(target), bucket, _key(prefix, target.name))
                target.unlink()
        index = ShardIndex(tuple(shards), tuple(entries))
        if remote:
            bucket, prefix = _split(out)
            _s3().put_object(Bucket=bucket, Key=_key(prefix, INDEX_NAME), Body=index.to_json())
        else:
            (staging / INDEX_NAME).write_bytes(index.to_json())
        return index
    finally:
        if remote:
            shutil.rmtree(staging, ignore_errors=True)


# --- reading: one fetch per node ----------------------------------------------------------------

@dataclass(frozen=True)
class Fetched:
    """Where the files are, and which shards this call downloaded (the others were cached)."""

    root: Path
    downloaded: tuple[str, ...]


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def _read_exactly(body: BinaryIO, count: int, digest: Any, out: BinaryIO | None) -> int:
    left = count
    while left:
        chunk = body.read(min(left, _CHUNK))
        if not chunk:
            break
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        left -= len(chunk)
    return count - left


def _unpack(body: BinaryIO, shard: Shard, entries: list[Entry], files: Path) -> None:
    """Stream one shard once: its entries' bytes to `files`, the rest only hashed."""
    digest = hashlib.sha256()
    position = 0
    for entry in sorted(entries, key=lambda e: e.offset):
        position += _read_exactly(body, entry.offset - position, digest, None)
        target = files / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            position += _read_exactly(body, entry.size, digest, out)
    position += _read_exactly(body, shard.size - position, digest, None)
    if position != shard.size or body.read(1) or digest.hexdigest() != shard.sha256:
        raise ShardIndexError(f"{shard.name}: not the {shard.size} bytes with the SHA-256 the "
                              "index gives (changed or truncated in the bucket?)")


def _fetch_shard(uri: str, shard: Shard, entries: list[Entry], folder: Path, client: Any) -> str:
    bucket, prefix = _split(uri)
    body = client.get_object(Bucket=bucket, Key=_key(prefix, shard.name))["Body"]
    try:
        _unpack(body, shard, entries, folder / "files")
    finally:
        body.close()
    (folder / "done" / shard.name).touch()
    return shard.name


def _fill(uri: str, index_bytes: bytes, folder: Path, client: Any) -> tuple[str, ...]:
    """The missing shards of `folder`, several at once; then the mark that it is complete."""
    index = parse_index(index_bytes, f"{uri}/{INDEX_NAME}")
    (folder / "done").mkdir(parents=True, exist_ok=True)
    by_shard: dict[int, list[Entry]] = {n: [] for n in range(len(index.shards))}
    for entry in index.entries:
        by_shard[entry.shard].append(entry)
    missing = [n for n, s in enumerate(index.shards) if not (folder / "done" / s.name).exists()]
    with ThreadPoolExecutor(max(1, min(FETCH_THREADS, len(missing)))) as pool:
        # Every shard is tried before an error is raised, so a retry fetches the failed only.
        futures = [pool.submit(_fetch_shard, uri, index.shards[n], by_shard[n], folder, client)
                   for n in missing]
        wait(futures)
    done = tuple(future.result() for future in futures)
    (folder / "files").mkdir(exist_ok=True)
    (folder / "complete").write_bytes(hashlib.sha256(index_bytes).hexdigest().encode())
    return done


def fetch(uri: str, cache: Path | None = None) -> Fetched:
    """The dataset at `uri` as a local folder, downloaded by at most one process per node.

    The cache folder is keyed by the URI and the index's ETag: a re-sharded dataset at the same
    URI is fetched afresh, never mixed with the old one's files."""
    bucket, prefix = _split(uri)
    client = _s3()
    key = _key(prefix, INDEX_NAME)
    etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    name = hashlib.sha256(f"s3://{bucket}/{prefix}\n{etag}".encode()).hexdigest()[:24]
    folder = (cache or cache_dir()) / name
    if (folder / "complete").exists():
        return Fetched(folder / "files", ())
    with node_lock(folder.with_suffix(".lock")):
        if (folder / "complete").exists():  # another trial on this node finished it
            return Fetched(folder / "files", ())
        body = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
        with contextlib.closing(body):
            index_bytes = _read_capped(body)
        return Fetched(folder / "files", _fill(uri, index_bytes, folder, client))


def _read_capped(body: BinaryIO) -> bytes:
    data = io.BytesIO()
    while chunk := body.read(_CHUNK):
        data.write(chunk)
        if data.tell() > MAX_INDEX_BYTES:
            raise ShardIndexError(f"{INDEX_NAME}: larger than {MAX_INDEX_BYTES} bytes")
    return data.getvalue()


def index_problem(uri: str) -> str | None:
    """Why a search may not start on the shards at `uri` (checked on the driver, which
    downloads nothing): one line, or None when their index is there."""
    from botocore.exceptions import ClientError

    bucket, prefix = _split(uri)
    try:
        _s3().head_object(Bucket=bucket, Key=_key(prefix, INDEX_NAME))
    except ClientError as error:
        status = error.response.get("Error", {}).get("Code", "")
        if status in ("404", "NoSuchKey", "NotFound"):
            return (f"data_root {uri} holds no {INDEX_NAME}: pack the dataset there with "
                    f"`wsol data shard --metadata-root METADATA --data-root DIR --out {uri}`")
        return f"data_root {uri}: cannot read {INDEX_NAME} ({status or error})"
    return None


def local_root(data_root: str | Path) -> Path:
    """What the datasets read from: a folder as given, or an s3:// shard prefix's local copy."""
    if is_shard_uri(data_root):
        return fetch(str(data_root)).root
    return Path(data_root)

