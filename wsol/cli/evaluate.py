"""`wsol evaluate`: the final test evaluation of a promoted model (the one reading of test)."""

from __future__ import annotations

import argparse

from wsol.cli.common import add_tracking_uri, client, print_values, write_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate",
                                   help="the final test evaluation of a promoted model")
    add_tracking_uri(evaluate)
    evaluate.add_argument("--model", required=True,
                          help="models:/<name>@<alias>, models:/<name>/<version> or a run id")
    evaluate.add_argument("--data-root", help="image root, if not where the search read it")
    evaluate.add_argument("--metadata-root")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--json", help="write the test numbers here")
    evaluate.set_defaults(run=evaluate_on_test)


def evaluate_on_test(args: argparse.Namespace) -> int:
    from wsol.lifecycle.evaluate import evaluate_model

    result = evaluate_model(client(args), args.model, args.data_root, args.metadata_root,
                            args.device, args.batch_size)
    print_values(result)
    print(f"test evaluation #{result['evaluation_number']} of {args.model}: "
          f"MLflow run {result['evaluation_run_id']}")
    write_json(args.json, result)
    return 0
