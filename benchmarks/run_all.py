"""Run every benchmark and write its JSON under benchmarks/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("synth_speed", "scoring_speed", "input_pipeline", "shard_fetch")

if __name__ == "__main__":
    for name in BENCHMARKS:
        out = HERE / "results" / f"{name}.json"
        subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--json", str(out)], check=True)
