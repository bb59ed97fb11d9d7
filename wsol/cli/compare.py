"""`wsol compare`: N seeded searches, each pair promoted and tested per seed: the verdict."""

from __future__ import annotations

import argparse

from wsol.cli.common import add_ray_cluster, add_tracking_uri, write_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare",
                                  help="N seeded searches, promote and test each: the verdict")
    add_tracking_uri(compare)
    compare.add_argument("--config", required=True, help="experiment YAML (found like "
                         "search.py's --config)")
    compare.add_argument("--search-seeds", type=int, required=True,
                         help="independent searches (seeds: the experiment's seed + 0..N-1)")
    add_ray_cluster(compare)
    compare.add_argument("--device", default="auto", help="for the test evaluations")
    compare.add_argument("--json", help="write the summary (ids, runs, test numbers) here")
    compare.set_defaults(run=compare_methods)


def compare_methods(args: argparse.Namespace) -> int:
    from wsol.common.paths import find_input
    from wsol.lifecycle.compare import run_compare
    from wsol.search.experiment import load_experiment
    from wsol.search.runner import refuse_secrets

    experiment = load_experiment(find_input(args.config, "experiment"), {
        "tracking_uri": args.tracking_uri, "ray_address": args.address,
        "storage_path": args.storage_path,
    })
    refuse_secrets(experiment)  # before the compare's own run, not at its first search
    summary = run_compare(experiment, args.search_seeds, device=args.device)
    for entry in summary["seeds"]:
        for pair, done in entry["pairs"].items():
            numbers = "  ".join(f"{k} {v:.2f}" for k, v in done.get("test", {}).items())
            print(f"seed {entry['seed']}  {pair:<20} "
                  + (f"train-fullsup {done['train_fullsup_score']:.2f}  test {numbers}"
                     if "test" in done else f"not promoted: {done['error']}"))
    print(f"compare {summary['compare_id']}: {summary['tracking_uri']}\n"
          f"  wsol report --compare {summary['compare_id']} --tracking-uri "
          f"{summary['tracking_uri']}")
    write_json(args.json, summary)
    return 0
