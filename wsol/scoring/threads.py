"""How many threads the scoring kernels may use: the CPUs this trial was given.

Inside a Ray worker (a Tune trial) that is the CPU count Ray assigned to it, so trials
packed on one node do not oversubscribe it; elsewhere the CPUs this process may run on.
"""

from __future__ import annotations

import math
import os
import sys


def _ray_assigned_cpus() -> float | None:
    """Ray's CPUs for this worker (0 when its trial asked for none), or None outside a
    connected Ray worker (the driver, or no Ray at all: Ray is not imported just to ask)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    return float(context.get_assigned_resources().get("CPU", 0.0))  # a trial without CPUs


def available_cpus() -> int:
    """The trial's CPUs: Ray's assignment (fractions rounded up, at least 1: a trial given
    no CPU still runs on one), else the affinity mask, else the machine's cores."""
    assigned = _ray_assigned_cpus()
    if assigned is not None:
        return max(1, math.ceil(assigned))
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
