"""What several subcommands share: options defined once, the JSON output, the error policy."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

TRACKING_URI_HELP = ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                     "sqlite:///mlruns/mlflow.db), without credentials: they go in "
                     "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD")


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)


def add_experiments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", action="append",
                        help="only these MLflow experiments (repeatable; default all)")


def add_searches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", action="append", help="only trials of this search (its "
                        "parent run id, printed by search.py; repeatable)")


def add_ray_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray address; 'auto' on a cluster's head node "
                        "(default: $RAY_ADDRESS, else a new local Ray, never a cluster that "
                        "is already running here)")
    parser.add_argument("--storage-path", help="Ray storage: a folder or s3://bucket/prefix "
                        "(no keys in it: S3 takes them from the AWS credential chain)")


def add_metadata_source(parser: argparse.ArgumentParser, help_root: str | None = None) -> None:
    """--metadata-root DIR, or --dataset NAME for the real metadata bundled in the package."""
    from wsol.data.bundled import DATASETS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metadata-root", help=help_root)
    source.add_argument("--dataset", type=str.lower, choices=list(DATASETS),
                        help="use the bundled metadata of this benchmark instead")


def metadata_root(args: argparse.Namespace) -> str | Path:
    if args.dataset:
        from wsol.data.bundled import bundled_metadata

        return bundled_metadata(args.dataset)
    return args.metadata_root


def write_json(path: str | None, payload: object) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def print_values(values: dict[str, object]) -> None:
    for key in sorted(values):
        value = values[key]
        print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")


def client(args: argparse.Namespace):
    from mlflow.tracking import MlflowClient

    from wsol.common.tracking_store import tracking_uri

    return MlflowClient(tracking_uri(args.tracking_uri))


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parses and runs the chosen command; a user's mistake (bad value, missing file, refused
    by MLflow) is one line `<prog>: error: ...` and exit status 2, like argparse's own."""
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        print(f"{parser.prog}: error: {error.message}", file=sys.stderr)
        return 2
