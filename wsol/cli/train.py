"""`wsol train`: one trial, as a search runs it, from a config file and flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train one configuration (one search trial)")
    train.add_argument("--config", help="trial config YAML (flags below override it)")
    train.add_argument("--out", required=True, help="output directory (resumes if it has last.pt)")
    train.add_argument("--method")
    train.add_argument("--backbone")
    train.add_argument("--data-root")
    train.add_argument("--metadata-root")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="set a trial config field or a hyperparameter of the method, the "
                       "value read as YAML (e.g. lr=1e-3, classes_per_batch=4, "
                       "normalisations=[minmax,ivr], weights=null); repeatable; wins over "
                       "--config and the flags above")
    train.set_defaults(run=train_one)


def train_one(args: argparse.Namespace) -> int:
    from wsol.methods import METHODS
    from wsol.trial.config import OverrideError, apply_overrides, load_config, parse_overrides
    from wsol.trial.runner import run_trial

    flags = {
        "method": args.method, "backbone": args.backbone, "data_root": args.data_root,
        "metadata_root": args.metadata_root, "epochs": args.epochs, "seed": args.seed,
        "device": args.device,
    }
    try:
        # Syntax first, so a malformed --set is reported before the config file is read.
        sets = parse_overrides(args.set or [])
        hyperparameters = {name: METHODS.get(name).defaults for name in METHODS.names()}
        config = apply_overrides(load_config(args.config, flags), sets, hyperparameters)
    except OverrideError as error:
        # One line, like argparse's own errors: a --set is a flag, its mistakes are usage.
        print(f"wsol train: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    summary = run_trial(config, args.out)
    metrics = summary["metrics"]
    print(f"selected epoch {summary['selected_epoch'] + 1} on {summary['selected_on']}: "
          f"{metrics['selection_metric']} {metrics['score']:.2f} "
          f"({metrics['normalisation']}, threshold {metrics['threshold']:.3f})")
    print(f"best checkpoint: {Path(args.out) / 'best.pt'}   metrics: "
          f"{Path(args.out) / 'metrics.json'}")
    return 0
