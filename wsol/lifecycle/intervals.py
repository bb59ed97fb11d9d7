"""Mean, spread and 95% t-intervals of per-seed numbers: is a difference beyond search noise?

A compare gives each method one test number per search seed. The difference to CAM is paired
by seed when both have the same seeds (a t-interval of the per-seed differences), else
Welch's unpaired t-interval. The t quantile comes from scipy when it is installed, else from
the table below (for a df between rows, the row below it: a slightly wider interval).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

LEVEL = 0.95
# Two-sided 95% quantiles of Student's t (t_{0.975, df}).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042,
         40: 2.021, 60: 2.000, 120: 1.980}
Z_975 = 1.960


def t_quantile(df: float) -> tuple[float, str]:
    """t_{0.975, df} and where it came from ('scipy' or 'table')."""
    try:
        from scipy import stats
    except ImportError:
        below = [d for d in T_975 if d <= df]
        return (T_975[max(below)] if below else math.inf), "table"
    return float(stats.t.ppf(0.5 + LEVEL / 2, df)), "scipy"


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float | None  # sample standard deviation; None for one value
    n: int


def spread(values: list[float]) -> Spread:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Interval:
    """A difference (method minus baseline) with its 95% interval."""

    estimate: float
    low: float | None
    high: float | None
    n: int  # seeds behind it (pairs, or the smaller group for Welch)
    df: float | None
    kind: str  # "paired t", "Welch t", or "n too small"
    quantile_source: str | None = None

    @property
    def verdict(self) -> str:
        """better / worse / within noise: whether the interval excludes 0."""
        if self.low is None or self.high is None:
            return "n too small"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "within noise"


def difference(method: Mapping[int, float], baseline: Mapping[int, float]) -> Interval | None:
    """method - baseline from per-seed numbers (seed -> value); None when either is empty."""
    if not method or not baseline:
        return None
    if set(method) == set(baseline):
        diffs = [method[s] - baseline[s] for s in sorted(method)]
        mean = statistics.fmean(diffs)
        if len(diffs) < 2:
            return Interval(mean, None, None, len(diffs), None, "n too small")
        df: float = len(diffs) - 1
        q, source = t_quantile(df)
        half = q * statistics.stdev(diffs) / math.sqrt(len(diffs))
        return Interval(mean, mean - half, mean + half, len(diffs), df, "paired t", source)
    a, b = list(method.values()), list(baseline.values())
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(mean, None, None, min(len(a), len(b)), None, "n too small")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 \
        else float(len(a) + len(b) - 2)
    q, source = t_quantile(df)
    return Interval(mean, mean - q * se, mean + q * se, min(len(a), len(b)), df, "Welch t",
                    source)
