"""`wsol promote`: the best train-fullsup trial of a pair as a registered model version."""

from __future__ import annotations

import argparse
import sys

from wsol.cli.common import add_experiments, add_searches, add_tracking_uri, client, write_json
from wsol.common.tracking_schema import CHAMPION


def add_parser(commands: argparse._SubParsersAction) -> None:
    promote = commands.add_parser("promote",
                                  help="register the best train-fullsup trial of a pair")
    add_tracking_uri(promote)
    promote.add_argument("--method")
    promote.add_argument("--backbone")
    promote.add_argument("--dataset", help="needed when the pair was searched on several")
    promote.add_argument("--alias", default=CHAMPION)
    add_experiments(promote)
    add_searches(promote)
    promote.add_argument("--run-id", help="promote this trial run instead of the best")
    promote.add_argument("--json", help="write model_uri, version, run_id, ... here")
    promote.set_defaults(run=promote_pair)


def promote_pair(args: argparse.Namespace) -> int:
    from wsol.common.tracking_schema import previous_alias
    from wsol.lifecycle.promote import promote
    from wsol.lifecycle.runs import scope_note

    store = client(args)
    note = None if args.run_id else scope_note(store, args.experiment, args.search)
    if note:
        print(note, file=sys.stderr)
    promotion = promote(store, args.method, args.backbone, args.dataset, args.alias,
                        args.experiment, args.run_id, args.search)
    replaced = (f"; version {promotion.previous_version} is now @{previous_alias(args.alias)}"
                if promotion.previous_version else "")
    print(f"{promotion.model_uri} -> version {promotion.version} (run {promotion.run_id}, "
          f"train-fullsup {promotion.choices['selection_metric']} {promotion.score:.2f}, "
          f"{promotion.choices['normalisation']}, tau {promotion.choices['threshold']}){replaced}")
    write_json(args.json, promotion.to_dict())
    return 0
