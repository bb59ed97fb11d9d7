"""`wsol score`: the evaluator on saved score maps, outside any training."""

from __future__ import annotations

import argparse
import sys

from wsol.cli.common import add_metadata_source, metadata_root, print_values, write_json
from wsol.common.protocol import TEST, TRAIN_FULLSUP

# What `--split test` is for, said each time: it scores maps made by any code, so there is
# no model here to count the reading on.
TEST_NOTE = ("note: test ground truth, read for maps made outside `wsol evaluate` and counted "
             "on no model; the protocol's test reading of a promoted model is `wsol evaluate`")


def add_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="score saved score maps (<image_id>.npy in [0,1])")
    score.add_argument("--scoremaps", required=True)
    add_metadata_source(score)
    score.add_argument("--split", required=True, choices=(TRAIN_FULLSUP, TEST))
    score.add_argument("--data-root", help="image root (image sizes, masks)")
    score.add_argument("--mask-root", help="mask root, if not the data root")
    score.add_argument("--curve-interval", type=float, default=0.01)
    score.add_argument("--json", help="write the metrics as JSON here")
    score.set_defaults(run=score_maps)


def score_maps(args: argparse.Namespace) -> int:
    from wsol.data.metadata import load_split
    from wsol.scoring.saved_maps import score_saved_maps

    if args.split == TEST:
        print(TEST_NOTE, file=sys.stderr)
    split = load_split(metadata_root(args), args.split)
    metrics = score_saved_maps(
        args.scoremaps, split, args.data_root, args.mask_root, args.curve_interval
    )
    values: dict[str, object] = dict(metrics)
    values["split"] = args.split
    print_values(values)
    write_json(args.json, values)
    return 0
