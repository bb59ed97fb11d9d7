"""`python -m wsol.cli`: the `wsol` command without its console script."""

import sys

from wsol.cli.parser import main

sys.exit(main())
