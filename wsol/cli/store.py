"""`wsol store backup` and `wsol store restore`: the head's tracking store (its `mlflow server`
SQLite database and the Optuna journals of S3-stored searches) kept in the bucket, so that it
outlives the head (wsol.common.store_backup)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from wsol.common import store_backup as store


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("store", help="the head's tracking store: back up, restore")
    actions = parser.add_subparsers(dest="store_command", required=True)
    backup = actions.add_parser("backup", help="copy the store to s3:// (consistently)")
    _common(backup, "--to")
    backup.add_argument("--every", type=float, metavar="SECONDS",
                        help="keep backing up at this interval (until killed)")
    backup.set_defaults(run=run_backup)
    restore = actions.add_parser("restore", help="bring the store back on a new head, "
                                 "before its mlflow server starts (never over local files)")
    _common(restore, "--from")
    restore.set_defaults(run=run_restore)


def _common(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(flag, dest="prefix", metavar="S3_PREFIX",
                        help=f"s3://bucket/prefix (default ${store.PREFIX_ENV}; neither: "
                        "nothing to do)")
    parser.add_argument("--db", help=f"the server's SQLite file (default ${store.DB_ENV}, else "
                        f"{store.DEFAULT_DB}; none when ${store.SERVER_DB_ENV} names a "
                        "database server)")
    parser.add_argument("--journals", default=store.DEFAULT_JOURNALS,
                        help="folder of <search>/optuna.journal (default %(default)s)")


def _paths(args: argparse.Namespace) -> tuple[str | None, Path | None, Path]:
    prefix = args.prefix or os.environ.get(store.PREFIX_ENV) or None
    db = Path(os.path.expanduser(args.db)) if args.db else store.default_db()
    return prefix, db, Path(os.path.expanduser(args.journals))


def run_backup(args: argparse.Namespace) -> int:
    prefix, db, journals = _paths(args)
    if prefix is None:
        print(f"no store backup: neither --to nor ${store.PREFIX_ENV} is set")
        return 0
    if args.every:
        store.backup_every(args.every, db, journals, prefix)
    keys = store.backup(db, journals, prefix)
    print(f"backed up {len(keys)} files to {prefix}: {', '.join(keys) or 'nothing yet'}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    prefix, db, journals = _paths(args)
    if prefix is None:
        print(f"no store restore: neither --from nor ${store.PREFIX_ENV} is set")
        return 0
    paths = store.restore(db, journals, prefix)
    print(f"restored {len(paths)} files from {prefix}: {', '.join(paths) or 'nothing to restore'}")
    return 0
