"""The min-max reading of test, beside the selected normalisation's: what the papers print.

Every paper of this project reports test numbers of min-max normalised maps, so a test
evaluation also scores its maps with min-max alone. Min-max has no free choice; MaxBoxAcc,
MaxBoxAccV2 and PxAP are maxima over the threshold on test, as the protocol defines them for
any normalisation. The only choice left is Loc's threshold: it is min-max's own threshold on
train-fullsup when the trial recorded it (`minmax_MaxBoxAcc_threshold`, else
`minmax_PxAP_threshold`, score_split's order) or when min-max was the selected normalisation;
otherwise min-max gets no Loc numbers, since choosing a threshold on test is not allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsol.common import protocol
from wsol.trial.evaluation import MINMAX, RawBatch, Targets, minmax_key, score_split


def train_fullsup_threshold(selected: Mapping[str, Any]) -> float | None:
    """The threshold train-fullsup chose for min-max maps, if the checkpoint knows it."""
    if selected.get("normalisation") == MINMAX.method:
        return float(selected["threshold"])
    for metric in (protocol.MAX_BOX_ACC, protocol.PXAP):
        key = minmax_key(protocol.threshold_key(metric))
        if selected.get(key) is not None:
            return float(selected[key])
    return None


class MinMaxReading:
    """Keeps what the min-max scoring needs of the batches a split streams past the selected
    normalisation's scoring, then scores them: one inference pass serves both readings."""

    def __init__(self, selected: Mapping[str, Any]):
        self.same = selected["normalisation"] == MINMAX.method
        self.threshold = train_fullsup_threshold(selected)
        self.batches: list[RawBatch] = []

    def add(self, batch: RawBatch) -> None:
        """Nothing is kept where min-max is the selected normalisation (its numbers are the
        selected ones); logits only where Loc will be read."""
        if self.same:
            return
        self.batches.append(batch if self.threshold is not None else RawBatch(
            batch.maps, None, batch.labels, batch.indices))

    def metrics(self, selected: dict[str, float], targets: Targets,
                interval: float) -> dict[str, float]:
        """The split's metrics of min-max maps under `minmax_` names; `selected`: the selected
        normalisation's metrics of the same maps."""
        if self.same:
            return {minmax_key(k): v for k, v in selected.items()}
        # Without a train-fullsup threshold the batches hold no logits, so no Loc is read and
        # the threshold passed on is never used.
        scored = score_split(self.batches, targets, MINMAX, interval,
                             threshold=0.5 if self.threshold is None else self.threshold)
        return {minmax_key(k): v for k, v in scored.metrics.items()}
