"""The evaluation protocol's names and defaults, in one place (docs/protocol.md explains them).

Splits and the one that selects, the metrics and their IoU thresholds, the score-map
normalisations and their default percentiles: configs validate against these, trials report
these, the search logs and the report tabulates these; wsol/scoring/ imports its IoU
thresholds, normalisations and default percentiles from here. This module imports nothing
from wsol, so every part of the package can import it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# The three splits, as metadata folders (the reference layout's names) -> the protocol's names.
TRAIN_WEAKSUP, TRAIN_FULLSUP, TEST = "train", "val", "test"
SPLITS = {TRAIN_WEAKSUP: "train-weaksup", TRAIN_FULLSUP: "train-fullsup", TEST: "test"}
# Where every choice is made (epoch, hyperparameters, normalisation, threshold); never test.
SELECTION_SPLIT = SPLITS[TRAIN_FULLSUP]
TEST_SPLIT = SPLITS[TEST]

# Box metrics: MaxBoxAcc (largest contour, IoU 0.5) and MaxBoxAccV2 (all contours, the mean
# over IOU_THRESHOLDS of BoxAccV2@<IoU>); mask metric: PxAP. In percent.
IOU_THRESHOLDS = (30, 50, 70)
MAX_BOX_ACC = "MaxBoxAcc"
MAX_BOX_ACC_V2: Final = "MaxBoxAccV2"
PXAP: Final = "PxAP"
BOX_ACC_V2_AT = tuple(f"BoxAccV2@{iou}" for iou in IOU_THRESHOLDS)
# Localization with the classifier's answer, at the selected threshold (IoU 0.5).
LOCALIZATION = ("top1_loc", "top5_loc", "gt_known_loc")
BOX_METRICS = (MAX_BOX_ACC, MAX_BOX_ACC_V2, *BOX_ACC_V2_AT)
METRICS = (*BOX_METRICS, PXAP, *LOCALIZATION)
# Metrics reported with the threshold that maximises them, as `<metric>_threshold`.
THRESHOLDED = (MAX_BOX_ACC, *BOX_ACC_V2_AT, PXAP)

# The main metric of box and of mask ground truth; what selects a checkpoint ("auto": the
# first the selection split has ground truth for). The type, for the config, spells the names
# out (a Literal takes no names); tests/common/test_protocol.py holds the two equal.
SelectionMetric = Literal["MaxBoxAccV2", "PxAP"]
SELECTION_METRICS: tuple[SelectionMetric, ...] = (MAX_BOX_ACC_V2, PXAP)
AUTO: Final = "auto"

# Score-map normalisations, chosen per checkpoint on the selection split; pas and ivr take a
# percentile (IVR's among the candidates, PAS's fixed).
Normalisation = Literal["minmax", "max", "pas", "ivr"]
NORMALISATIONS: tuple[Normalisation, ...] = get_args(Normalisation)
NEEDS_PERCENTILE = ("pas", "ivr")
DEFAULT_IVR_PERCENTILES = (5.0, 10.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 60.0, 70.0)
DEFAULT_PAS_PERCENTILE = 90.0

# Threshold steps of the curves: the reference evaluator's, and a finer one.
CURVE_INTERVALS = (0.01, 0.001)


def threshold_key(metric: str) -> str:
    """The name a THRESHOLDED metric's best threshold is reported under."""
    return f"{metric}_threshold"
