"""Entry point of a search: `python search.py` locally, `ray submit cluster/gpu.yaml search.py`.

The same command as `wsol search` (wsol/cli/search.py), as a file that `ray submit` can copy
alone to a head node. With no arguments it runs the demo (experiments/synthetic-demo.yaml):
the synthetic benchmark, local Ray, MLflow at sqlite:///mlruns/mlflow.db. See README.md.
"""

from __future__ import annotations

import sys

from wsol.cli.search import main

if __name__ == "__main__":
    sys.exit(main())
