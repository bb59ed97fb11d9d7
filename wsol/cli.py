"""The `wsol` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path


def _write_json(path: str | None, payload: object) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _add_metadata_source(parser: argparse.ArgumentParser, help_root: str | None = None) -> None:
    """--metadata-root DIR, or --dataset NAME for the real metadata bundled in the package."""
    from wsol.data.bundled import DATASETS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metadata-root", help=help_root)
    source.add_argument("--dataset", type=str.lower, choices=list(DATASETS),
                        help="use the bundled metadata of this benchmark instead")


def _metadata_root(args: argparse.Namespace) -> str | Path:
    if args.dataset:
        from wsol.data.bundled import bundled_metadata

        return bundled_metadata(args.dataset)
    return args.metadata_root


def _data_check(args: argparse.Namespace) -> int:
    from wsol.data.check import check_dataset

    reports = check_dataset(_metadata_root(args), args.data_root)
    print(f"{'split':<6} {'images':>8} {'classes':>8} {'boxes':>8} {'masks':>8} problems")
    for r in reports:
        print(
            f"{r.name:<6} {r.images:>8} {r.classes:>8} {r.boxes:>8} {r.masks:>8} {len(r.problems)}"
        )
    problems = [p for r in reports for p in r.problems]
    for problem in problems:
        print(f"  {problem}")
    _write_json(args.json, {"splits": [asdict(r) for r in reports], "ok": not problems})
    print("OK" if not problems else f"{len(problems)} problem(s) found")
    return 1 if problems else 0


def _data_synth(args: argparse.Namespace) -> int:
    from wsol.data.synthetic import config_with_overrides, generate

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = value
    config = config_with_overrides(args.preset, overrides)
    start = time.perf_counter()
    counts = generate(args.out, config, args.seed)
    seconds = time.perf_counter() - start
    print(f"wrote {counts} images to {args.out} in {seconds:.1f} s (seed {args.seed})")
    print(f"metadata root: {Path(args.out) / 'metadata'}   data root: {args.out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from wsol.data.metadata import load_split
    from wsol.scoring.saved_maps import score_saved_maps

    split = load_split(_metadata_root(args), args.split)
    metrics = score_saved_maps(
        args.scoremaps, split, args.data_root, args.mask_root, args.curve_interval
    )
    metrics["split"] = args.split  # type: ignore[assignment]
    for key in sorted(metrics):
        value = metrics[key]
        print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")
    _write_json(args.json, metrics)
    return 0


def _train(args: argparse.Namespace) -> int:
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


def _client(args: argparse.Namespace):
    from mlflow.tracking import MlflowClient

    from wsol.search.tracking import tracking_uri

    return MlflowClient(tracking_uri(args.tracking_uri))


def _promote(args: argparse.Namespace) -> int:
    from wsol.lifecycle.promote import previous_alias, promote

    promotion = promote(_client(args), args.method, args.backbone, args.dataset, args.alias,
                        args.experiment, args.run_id, args.search)
    replaced = (f"; version {promotion.previous_version} is now @{previous_alias(args.alias)}"
                if promotion.previous_version else "")
    print(f"{promotion.model_uri} -> version {promotion.version} (run {promotion.run_id}, "
          f"train-fullsup {promotion.choices['selection_metric']} {promotion.score:.2f}, "
          f"{promotion.choices['normalisation']}, tau {promotion.choices['threshold']}){replaced}")
    _write_json(args.json, promotion.to_dict())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from wsol.lifecycle.evaluate import evaluate_model

    result = evaluate_model(_client(args), args.model, args.data_root, args.metadata_root,
                            args.device, args.batch_size)
    for key in sorted(result):
        value = result[key]
        print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")
    print(f"test evaluation #{result['evaluation_number']} of {args.model}: "
          f"MLflow run {result['evaluation_run_id']}")
    _write_json(args.json, result)
    return 0


def _report(args: argparse.Namespace) -> int:
    from wsol.lifecycle.report import build_report

    summary = build_report(_client(args), Path(args.out), args.experiment, log=not args.no_log,
                           searches=args.search, compare=args.compare)
    print((Path(args.out) / "report.md").read_text())
    print(f"written to {args.out}: {', '.join(summary['files'])}")
    if summary["report_run_id"]:
        print(f"logged as MLflow run {summary['report_run_id']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from wsol.common.paths import find_input
    from wsol.lifecycle.compare import run_compare
    from wsol.search.experiment import load_experiment

    experiment = load_experiment(find_input(args.config, "experiment"), {
        "tracking_uri": args.tracking_uri, "ray_address": args.address,
        "storage_path": args.storage_path,
    })
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
    _write_json(args.json, summary)
    return 0


def _search(args: argparse.Namespace) -> int:
    from wsol.search.cli import main as search_main

    return search_main(args.search_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsol", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets: validate, generate the synthetic benchmark")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate metadata (and files) of a dataset")
    _add_metadata_source(check, "folder with train/ val/ test/")
    check.add_argument("--data-root", help="image root: also check every image and mask")
    check.add_argument("--json", help="write the report as JSON here")
    check.set_defaults(run=_data_check)

    synth = data_commands.add_parser("synth", help="generate the synthetic WSOL benchmark")
    synth.add_argument("--out", required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--preset", default="demo", help="tiny, demo or large")
    synth.add_argument("--set", action="append", metavar="KNOB=VALUE", help="override a knob")
    synth.set_defaults(run=_data_synth)

    score = commands.add_parser("score", help="score saved score maps (<image_id>.npy in [0,1])")
    score.add_argument("--scoremaps", required=True)
    _add_metadata_source(score)
    score.add_argument("--split", required=True, choices=("val", "test"))
    score.add_argument("--data-root", help="image root (image sizes, masks)")
    score.add_argument("--mask-root", help="mask root, if not the data root")
    score.add_argument("--curve-interval", type=float, default=0.01)
    score.add_argument("--json", help="write the metrics as JSON here")
    score.set_defaults(run=_score)

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
    train.set_defaults(run=_train)

    search = commands.add_parser("search", help="run a search (the same as python search.py)",
                                 add_help=False)
    search.add_argument("search_args", nargs=argparse.REMAINDER)
    search.set_defaults(run=_search)

    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                          "$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")

    promote = commands.add_parser("promote", parents=[tracking],
                                  help="register the best train-fullsup trial of a pair")
    promote.add_argument("--method")
    promote.add_argument("--backbone")
    promote.add_argument("--dataset", help="needed when the pair was searched on several")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--experiment", action="append",
                         help="only these MLflow experiments (repeatable; default all)")
    promote.add_argument("--search", action="append", help="only trials of this search (its "
                         "parent run id, printed by search.py; repeatable)")
    promote.add_argument("--run-id", help="promote this trial run instead of the best")
    promote.add_argument("--json", help="write model_uri, version, run_id, ... here")
    promote.set_defaults(run=_promote)

    evaluate = commands.add_parser("evaluate", parents=[tracking],
                                   help="the final test evaluation of a promoted model")
    evaluate.add_argument("--model", required=True,
                          help="models:/<name>@<alias>, models:/<name>/<version> or a run id")
    evaluate.add_argument("--data-root", help="image root, if not where the search read it")
    evaluate.add_argument("--metadata-root")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--json", help="write the test numbers here")
    evaluate.set_defaults(run=_evaluate)

    report = commands.add_parser("report", parents=[tracking],
                                 help="paper-style tables and plots from MLflow")
    report.add_argument("--out", default="report", help="folder for the tables and plots")
    report.add_argument("--experiment", action="append",
                        help="only these MLflow experiments (repeatable; default all)")
    report.add_argument("--search", action="append", help="only trials of this search (its "
                        "parent run id, printed by search.py; repeatable)")
    report.add_argument("--no-log", action="store_true", help="do not log a report run")
    report.add_argument("--compare", metavar="ID|latest", help="only this compare's searches, "
                        "with its verdict per method (default: the latest compare in scope, "
                        "if any, gets its section)")
    report.set_defaults(run=_report)

    compare = commands.add_parser("compare", parents=[tracking],
                                  help="N seeded searches, promote and test each: the verdict")
    compare.add_argument("--config", required=True, help="experiment YAML (found like "
                         "search.py's --config)")
    compare.add_argument("--search-seeds", type=int, required=True,
                         help="independent searches (seeds: the experiment's seed + 0..N-1)")
    compare.add_argument("--address", help="Ray address; 'auto' on a cluster's head node")
    compare.add_argument("--storage-path", help="Ray storage: a folder or s3://bucket/prefix")
    compare.add_argument("--device", default="auto", help="for the test evaluations")
    compare.add_argument("--json", help="write the summary (ids, runs, test numbers) here")
    compare.set_defaults(run=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f"wsol: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        print(f"wsol: error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
