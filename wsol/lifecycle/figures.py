"""Figures go to files, never to a window: matplotlib's Agg backend, chosen once here for every
report and plot the lifecycle writes (a head node or a CI runner has no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["plt", "save"]


def save(figure: Figure, path: Path) -> Path:
    """Writes and closes: a report draws dozens, and open figures would pile up in memory."""
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
