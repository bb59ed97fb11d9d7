"""The head's tracking store kept in the bucket, so that it outlives the head.

A cluster head's root disk goes with the head (`ray down`, a lost spot head): the SQLite
database of its `mlflow server` (every run, metric, model version, alias, test-evaluation
count) and the Optuna journals of searches whose Ray storage is S3 (mlruns/logs/<name>/
optuna.journal under the driver's working directory, the head's home for `ray submit`).
`backup` copies both to an s3:// prefix; `restore` brings them back on a new head before its
`mlflow server` starts. Layout under the prefix: `mlflow.db`, `optuna/<search>/optuna.journal`.

The database is copied with SQLite's online backup API (a consistent snapshot while the
server writes), never as a live file. A journal is append-only: its bytes up to the last
complete line are a consistent state. What comes back from the bucket is treated as written
by someone else: only an SQLite file that passes `PRAGMA quick_check` and journals of JSON
lines are restored, into paths under the journal root, never over local files (which are
newer than any backup), and nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from wsol.common.console import say

PREFIX_ENV = "WSOL_STORE_BACKUP"  # s3://bucket/prefix: where the store is kept
DB_ENV = "WSOL_STORE_DB"  # the SQLite file of the head's `mlflow server`
SERVER_DB_ENV = "WSOL_MLFLOW_DB"  # a team's database (PostgreSQL): nothing of it on the head
DEFAULT_DB = "~/mlflow.db"
DEFAULT_JOURNALS = "~/mlruns/logs"  # where a search with S3 storage keeps its journal
DB_KEY = "mlflow.db"
JOURNAL_FOLDER = "optuna"
JOURNAL_NAME = "optuna.journal"
_SEARCH_NAME = re.compile(r"^[\w.-]+$")


def _s3() -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3")


def _split(prefix: str) -> tuple[str, str]:
    parts = urlsplit(prefix)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"store backup prefix {prefix!r} is not s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def _key(base: str, *names: str) -> str:
    return "/".join(p for p in (base, *names) if p)


def default_db() -> Path | None:
    """The head server's SQLite file; None when the server runs on a team's database
    ($WSOL_MLFLOW_DB), which outlives the head by itself."""
    if os.environ.get(SERVER_DB_ENV, "sqlite:").split(":", 1)[0] != "sqlite":
        return None
    return Path(os.path.expanduser(os.environ.get(DB_ENV) or DEFAULT_DB))


def snapshot_db(db: Path, target: Path) -> None:
    """A consistent copy of a database that a server may be writing (online backup API)."""
    source = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=60)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        copy.close()
        source.close()


def journal_bytes(path: Path) -> bytes:
    """The journal's complete lines after an fsync (an append may be under way)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
        data = handle.read()
    return data[:data.rfind(b"\n") + 1]


def backup(db: Path | None, journal_root: Path | None, prefix: str) -> list[str]:
    """Uploads the database (when it exists) and every journal under `journal_root`;
    returns the keys written."""
    bucket, base = _split(prefix)
    s3, written = _s3(), []
    if db is not None and db.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / DB_KEY
            snapshot_db(db, copy)
            s3.upload_file(str(copy), bucket, _key(base, DB_KEY))
        written.append(_key(base, DB_KEY))
    for journal in sorted(journal_root.glob(f"*/{JOURNAL_NAME}")) if journal_root else []:
        key = _key(base, JOURNAL_FOLDER, journal.parent.name, JOURNAL_NAME)
        s3.put_object(Bucket=bucket, Key=key, Body=journal_bytes(journal))
        written.append(key)
    return written


def _checked_db(path: Path) -> None:
    """Refuses a downloaded file that is not a sound SQLite database."""
    with path.open("rb") as handle:
        if handle.read(16) != b"SQLite format 3\0":
            raise ValueError("the backed-up mlflow.db is not an SQLite database")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = connection.execute("PRAGMA quick_check").fetchone()
    finally:
        connection.close()
    if result != ("ok",):
        raise ValueError(f"the backed-up mlflow.db fails its check: {result}")


def _checked_journal(data: bytes, key: str) -> bytes:
    """Refuses a journal that is not JSON lines (Optuna's journal format)."""
    for line in data.splitlines():
        try:
            json.loads(line)
        except ValueError:
            raise ValueError(f"{key} is not an Optuna journal (JSON lines)") from None
    return data


def _journal_keys(s3: Any, bucket: str, base: str) -> dict[str, str]:
    """Backed-up journals by search name; a key of another shape is ignored."""
    folder = _key(base, JOURNAL_FOLDER) + "/"
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        for item in page.get("Contents", []):
            name, _, rest = item["Key"][len(folder):].partition("/")
            if rest == JOURNAL_NAME and _SEARCH_NAME.match(name) and name not in (".", ".."):
                found[name] = item["Key"]
    return found


def restore(db: Path | None, journal_root: Path | None, prefix: str) -> list[str]:
    """Downloads what the prefix holds into places that have nothing yet; returns the local
    paths written. A missing backup restores nothing; an unreadable one raises."""
    from botocore.exceptions import ClientError

    bucket, base = _split(prefix)
    s3, written = _s3(), []
    if db is not None and not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        partial = db.with_name(f".{db.name}.restoring")
        try:
            s3.download_file(bucket, _key(base, DB_KEY), str(partial))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
        else:
            _checked_db(partial)
            os.replace(partial, db)
            written.append(str(db))
        finally:
            partial.unlink(missing_ok=True)
    for name, key in sorted(_journal_keys(s3, bucket, base).items()) if journal_root else []:
        assert journal_root is not None
        target = journal_root / name / JOURNAL_NAME
        if target.exists():
            continue
        data = _checked_journal(s3.get_object(Bucket=bucket, Key=key)["Body"].read(), key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{JOURNAL_NAME}.restoring")
        partial.write_bytes(data)
        os.replace(partial, target)
        written.append(str(target))
    return written


def backup_every(seconds: float, db: Path | None, journal_root: Path | None,
                 prefix: str) -> NoReturn:
    """Backs up every `seconds` until killed: the window a lost head can lose. A failed
    backup (S3 away) is reported and tried again at the next tick."""
    while True:
        time.sleep(seconds)
        try:
            keys = backup(db, journal_root, prefix)
            say(f"{time.strftime('%Y-%m-%d %H:%M:%S')} backed up {len(keys)} files to {prefix}")
        except Exception as error:
            say(f"warning: store backup to {prefix} failed: {type(error).__name__}: {error}",
                error=True)


@contextlib.contextmanager
def after_search(journal_root: Path | None) -> Iterator[None]:
    """At the end of a search (finished, interrupted or failed), a backup to
    $WSOL_STORE_BACKUP when it is set: the head's store as the search left it. Never the
    reason a search fails: a warning instead."""
    try:
        yield
    finally:
        prefix = os.environ.get(PREFIX_ENV)
        if prefix:
            try:
                keys = backup(default_db(), journal_root, prefix)
                say(f"tracking store backed up to {prefix} ({len(keys)} files)")
            except Exception as error:
                say(f"warning: the tracking store not backed up to {prefix}: "
                    f"{type(error).__name__}: {error}", error=True)
