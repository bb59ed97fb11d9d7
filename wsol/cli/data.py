"""`wsol data check`, `prepare`, `synth` and `shard`: validate a dataset, lay out a real one
from its official archives (wsol/data/prepare.py), generate the synthetic one, pack one into
tar shards for a cluster (wsol/data/shards.py)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from wsol.cli.common import add_metadata_source, metadata_root, write_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="datasets: validate, prepare a real benchmark, "
                               "generate the synthetic one, pack one into shards")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate metadata (and files) of a dataset")
    add_metadata_source(check, "folder with train/ val/ test/")
    check.add_argument("--data-root", help="image root: also check every image and mask")
    check.add_argument("--json", help="write the report as JSON here")
    check.set_defaults(run=check_dataset)

    add_prepare(data_commands)

    synth = data_commands.add_parser("synth", help="generate the synthetic WSOL benchmark")
    synth.add_argument("--out", required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--preset", default="demo", help="tiny, demo or large")
    synth.add_argument("--set", action="append", metavar="KNOB=VALUE", help="override a knob")
    synth.set_defaults(run=synthesise)

    shard = data_commands.add_parser(
        "shard", help="pack a dataset into tar shards + index.json (a folder or s3://bucket/prefix)")
    add_metadata_source(shard, "folder with train/ val/ test/: the files to pack")
    shard.add_argument("--data-root", required=True, help="image (and mask) root")
    shard.add_argument("--out", required=True, help="s3://bucket/prefix or a folder")
    shard.add_argument("--shard-mb", type=float, default=1024,
                       help="about this many MB per shard (default 1024)")
    shard.set_defaults(run=shard_dataset)


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


def add_prepare(data_commands: argparse._SubParsersAction) -> None:
    from wsol.data.archives import ARCHIVES

    files = "; ".join(f"{name}: {', '.join(a.file for a in archives)}"
                      for name, archives in ARCHIVES.items())
    prepare = data_commands.add_parser(
        "prepare", help="lay out CUB, ILSVRC or OpenImages from the official archives",
        description=f"Takes every file the benchmark's metadata names from the archives "
        f"({files}), checks that it decodes and has the size image_sizes.txt states, and "
        "writes the layout a search reads. Resumes where an interrupted run stopped.")
    prepare.add_argument("dataset", choices=list(ARCHIVES))
    prepare.add_argument("--archives", required=True, help="folder with the downloaded archives")
    prepare.add_argument("--out", required=True, help="the data root to fill")
    prepare.add_argument("--classes", type=int, help="only the first N classes (labels 0..N-1), "
                         "with a metadata folder of their own in OUT/metadata: a rehearsal")
    prepare.add_argument("--metadata-root", help="metadata to prepare for (default: the "
                         "bundled metadata of the dataset)")
    prepare.set_defaults(run=prepare_dataset)


def prepare_dataset(args: argparse.Namespace) -> int:
    from wsol.data.manifest import MANIFEST, read_manifest
    from wsol.data.prepare import prepare

    start = time.perf_counter()
    report = prepare(args.dataset, args.archives, args.out, args.classes, args.metadata_root)
    seconds = time.perf_counter() - start
    for problem in report.problems[:50]:
        print(f"  {problem}")
    if len(report.problems) > 50:
        print(f"  ... and {len(report.problems) - 50} more")
    print(f"{report.written} files written, {report.skipped} already there, "
          f"{len(report.problems)} problem(s), {seconds:.1f} s")
    if report.problems:
        print("nothing is lost: run the same command again once the archives are fixed")
        return 1
    manifest = read_manifest(args.out)
    assert manifest is not None
    counts = ", ".join(f"{s} {c['images']}" for s, c in manifest.counts.items())
    print(f"OK: {counts} images; {Path(args.out) / MANIFEST}: fingerprint "
          f"{manifest.fingerprint[:12]}")
    lines = [f"dataset: {args.dataset}", f"data_root: {Path(args.out).resolve()}"]
    if manifest.metadata != "bundled":
        lines.append(f"metadata_root: {(Path(args.out) / manifest.metadata).resolve()}")
    print("in an experiment file:\n  " + "\n  ".join(lines))
    return 0


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


def shard_dataset(args: argparse.Namespace) -> int:
    from wsol.data.shards import dataset_files, write_shards

    if not args.shard_mb > 0:
        raise ValueError(f"--shard-mb: {args.shard_mb} is not a number of MB > 0")
    start = time.perf_counter()
    metadata = metadata_root(args)
    files = dataset_files(metadata, args.data_root)
    index = write_shards(args.data_root, files, args.out, int(args.shard_mb * 1e6))
    size = sum(s.size for s in index.shards) / 1e9
    print(f"wrote {len(index.entries)} files in {len(index.shards)} shard(s), {size:.2f} GB, to "
          f"{args.out} in {time.perf_counter() - start:.1f} s")
    # The shards hold images only: trials read the metadata at the path the driver resolved.
    source = (f"dataset: {args.dataset}" if args.dataset else
              f"metadata_root: {Path(metadata).resolve()}   # or where every node has a copy")
    print(f"in an experiment file:\n  data_root: {args.out}\n  {source}")
    return 0
