"""`wsol search`, and `python search.py` (the same options): run, restore or continue a search
and print the best trial per pair and how to open its Optuna studies."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wsol.cli import common

DESCRIPTION = ("Run, restore or continue a search and print the best trial per (method, "
               "backbone).")


def add_parser(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", help="run a search (the same as python search.py)",
                                 description=DESCRIPTION)
    add_arguments(search)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML (default: the synthetic demo); a "
                        "relative path not in the working directory is looked up in the "
                        "installed project")
    parser.add_argument("--smoke", action="store_true",
                        help="the same pipeline at minimum size (experiments/synthetic-smoke.yaml)")
    common.add_tracking_uri(parser)
    common.add_ray_cluster(parser)
    parser.add_argument("--restore", action="store_true",
                        help="resume the search of this config after its driver died (not "
                        "a --more-trials continuation: run that again)")
    parser.add_argument("--more-trials", type=int, metavar="N",
                        help="continue the finished search of this config: N more trials per "
                        "pair in its Optuna studies, under the same MLflow parent run (its "
                        "status FINISHED)")
    parser.set_defaults(run=search)


def search(args: argparse.Namespace) -> int:
    from wsol.common.paths import find_input, project_file
    from wsol.common.tracking_store import ui_url
    from wsol.search.experiment import load_experiment
    from wsol.search.runner import run_search

    default = "experiments/" + ("synthetic-smoke.yaml" if args.smoke else "synthetic-demo.yaml")
    config = find_input(args.config, "experiment") if args.config else \
        project_file(default, "experiment")
    experiment = load_experiment(config, {
        "tracking_uri": args.tracking_uri, "ray_address": args.address,
        "storage_path": args.storage_path,
    })
    if args.more_trials is not None and args.more_trials < 1:
        raise ValueError("--more-trials must be at least 1")
    summary = run_search(experiment, restore=args.restore, more_trials=args.more_trials)
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
    optuna = summary.get("optuna")
    if optuna:
        from wsol.search.studies import dashboard_command

        print(f"Optuna studies: {', '.join(optuna['studies'].values())}")
        print(f"Open them:  {dashboard_command(optuna['storage'])}   (pip install "
              "'wsol[optuna]')")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python search.py`: this subcommand alone, its errors prefixed `search.py: error:`."""
    parser = argparse.ArgumentParser(prog="search.py", description=DESCRIPTION)
    add_arguments(parser)
    return common.run(parser, argv)
