"""CAM (Zhou et al. 2016): the baseline every method is compared with at equal budget."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol.methods.base import METHODS, Method


@METHODS.register("cam")
class CAM(Method):
    name = "cam"
    order = 10
    baseline = True

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        logits, _ = self.model(images)
        loss = F.cross_entropy(logits, labels)
        return self.step("main", {"ce": loss}, loss, epoch)
