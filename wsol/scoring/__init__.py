"""Scoring: CAM normalisations and the protocol's metrics (MaxBoxAcc, MaxBoxAccV2, PxAP)."""
