"""`wsol report`: paper-style tables and plots from what MLflow holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsol.cli.common import add_experiments, add_searches, add_tracking_uri, client


def add_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="paper-style tables and plots from MLflow")
    add_tracking_uri(report)
    report.add_argument("--out", default="report", help="folder for the tables and plots")
    add_experiments(report)
    add_searches(report)
    report.add_argument("--no-log", action="store_true", help="do not log a report run (it "
                        "holds the files this report wrote, nothing else of --out)")
    report.add_argument("--compare", metavar="ID|latest", help="only this compare's searches, "
                        "with its verdict per method (default: the latest compare in scope, "
                        "if any, gets its section)")
    report.set_defaults(run=write_report)


def write_report(args: argparse.Namespace) -> int:
    from wsol.lifecycle.report import build_report
    from wsol.lifecycle.runs import scope_note

    store = client(args)
    note = None if args.compare else scope_note(store, args.experiment, args.search)
    if note:
        print(note, file=sys.stderr)
    summary = build_report(store, Path(args.out), args.experiment, log=not args.no_log,
                           searches=args.search, compare=args.compare)
    print((Path(args.out) / "report.md").read_text())
    print(f"written to {args.out}: {', '.join(summary['files'])}")
    if summary["report_run_id"]:
        print(f"logged as MLflow run {summary['report_run_id']}")
    return 0
