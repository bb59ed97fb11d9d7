"""`wsol data check` and `wsol data synth`: validate a dataset, generate the synthetic one."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from wsol.cli.common import add_metadata_source, metadata_root, write_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="datasets: validate, generate the synthetic benchmark")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate metadata (and files) of a dataset")
    add_metadata_source(check, "folder with train/ val/ test/")
    check.add_argument("--data-root", help="image root: also check every image and mask")
    check.add_argument("--json", help="write the report as JSON here")
    check.set_defaults(run=check_dataset)

    synth = data_commands.add_parser("synth", help="generate the synthetic WSOL benchmark")
    synth.add_argument("--out", required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--preset", default="demo", help="tiny, demo or large")
    synth.add_argument("--set", action="append", metavar="KNOB=VALUE", help="override a knob")
    synth.set_defaults(run=synthesise)


def check_dataset(args: argparse.Namespace) -> int:
    from wsol.data.check import check_dataset

    reports = check_dataset(metadata_root(args), args.data_root)
    print(f"{'split':<6} {'images':>8} {'classes':>8} {'boxes':>8} {'masks':>8} problems")
    for r in reports:
        print(
            f"{r.name:<6} {r.images:>8} {r.classes:>8} {r.boxes:>8} {r.masks:>8} {len(r.problems)}"
        )
    problems = [p for r in reports for p in r.problems]
    for problem in problems:
        print(f"  {problem}")
    write_json(args.json, {"splits": [asdict(r) for r in reports], "ok": not problems})
    print("OK" if not problems else f"{len(problems)} problem(s) found")
    return 1 if problems else 0


def synthesise(args: argparse.Namespace) -> int:
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
