"""Time to generate each synthetic preset (target: demo under 30 s on 2 cores).

Run: .venv/bin/python benchmarks/synth_speed.py --json benchmarks/results/synth_speed.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.data.synthetic import PRESETS, generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--json")
    args = parser.parse_args()
    timings = {}
    for name in args.presets:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            counts = generate(out, PRESETS[name], seed=0)
            timings[name] = {"seconds": time.perf_counter() - start, "images": counts}
    write_result(args.json, "synth_speed", {"presets": timings})


if __name__ == "__main__":
    main()
