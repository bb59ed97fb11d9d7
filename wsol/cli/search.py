"""`python search.py` / `wsol search`: run, or restore, a search and print the best per pair."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wsol.common.paths import find_input, project_file
from wsol.trial.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search.py", description=__doc__)
    parser.add_argument("--config", help="experiment YAML (default: the synthetic demo); a "
                        "relative path not in the working directory is looked up in the "
                        "installed project")
    parser.add_argument("--smoke", action="store_true",
                        help="the same pipeline at minimum size (experiments/synthetic-smoke.yaml)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--address", help="Ray address; 'auto' on a cluster's head node")
    parser.add_argument("--storage-path", help="Ray storage: a folder or s3://bucket/prefix")
    parser.add_argument("--restore", action="store_true",
                        help="resume the search of this config after its driver died")
    return parser


def add_parser(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", help="run a search (the same as python search.py)",
                                 add_help=False)
    search.add_argument("search_args", nargs=argparse.REMAINDER)
    search.set_defaults(run=lambda args: main(args.search_args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from wsol.search.experiment import load_experiment
    from wsol.search.runner import run_search

    default = "experiments/" + ("synthetic-smoke.yaml" if args.smoke else "synthetic-demo.yaml")
    try:
        config = find_input(args.config, "experiment") if args.config else \
            project_file(default, "experiment")
        experiment = load_experiment(config, {
            "tracking_uri": args.tracking_uri, "ray_address": args.address,
            "storage_path": args.storage_path,
        })
        summary = run_search(experiment, restore=args.restore)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"search.py: error: {error}", file=sys.stderr)
        return 2
    from wsol.search.tracking import ui_url

    print(f"\n{summary['trials']} trials, {summary['failed']} failed. "
          "Best train-fullsup score per (method, backbone):")
    for pair, best in sorted(summary["best"].items()):
        name = best.get("run_name") or ""
        print(f"  {pair:<24} {best['score']:7.2f}   {name:<20} MLflow run {best['run_id']}")
    uri = summary["tracking_uri"]
    print(f"\nMLflow parent run: {summary['parent_run_id']}")
    page = ui_url(uri, summary["experiment_id"])
    if uri.startswith("sqlite:"):
        mlflow = Path(sys.executable).parent / "mlflow"
        print(f"Open the MLflow UI:  {mlflow} ui --backend-store-uri {uri}")
        print(f"  then the search's runs:  {page}")
    else:
        print(f"MLflow tracking server: {uri}")
        print(f"The search's runs:  {page}")
    print(f"Ray, Tune and trial output: {summary['log']}")
    return 0
