"""BGC, "Bridging the Gap": CAM = ||w_c|| * ||F_u|| * cos(w_c, F_u), and losses that align
the norm map with the similarity map, plus attentive dropout with a consistency loss.

The attentive dropout sits between the backbone's stem and head (the paper's position per
architecture, see wsol.models.backbones). The loss functions take plain tensors so they can
be checked on hand-made feature maps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wsol.methods.base import METHODS, Method
from wsol.methods.minmaxcam import minmax_per_map


class AttentiveDropout(nn.Module):
    """Drops, each with probability p, the positions whose channel-mean activation exceeds
    gamma * (its maximum over the map). Identity in eval mode."""

    def __init__(self, gamma: float, p: float):
        super().__init__()
        self.gamma = gamma
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        attention = x.mean(dim=1, keepdim=True)
        peak = attention.amax(dim=(2, 3), keepdim=True)
        drop = (attention > self.gamma * peak) & (torch.rand_like(attention) < self.p)
        return x * (~drop)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean over the mask (0 for an empty mask), averaged over the batch."""
    mask = mask.to(values.dtype)
    per_image = (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
    return per_image.mean()


def similarity_and_norm(features: torch.Tensor, weights: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S_u = cos(w_c, F_u) (B, h, w), the min-max normalised norm map, and the cosine to every
    class (B, C, h, w)."""
    unit_features = F.normalize(features, dim=1)
    cos_all = torch.einsum("ck,bkhw->bchw", F.normalize(weights, dim=1), unit_features)
    similarity = cos_all[torch.arange(len(labels)), labels]
    norm_hat = minmax_per_map(features.norm(dim=1))
    return similarity, norm_hat, cos_all


def similarity_loss(similarity: torch.Tensor, norm_hat: torch.Tensor, tau_fg: float,
                    tau_bg: float) -> torch.Tensor:
    """L_sim = -mean_{norm_hat > tau_fg} S + mean_{norm_hat < tau_bg} S."""
    foreground = (norm_hat > tau_fg).detach()
    background = (norm_hat < tau_bg).detach()
    return -masked_mean(similarity, foreground) + masked_mean(similarity, background)


def norm_loss(norm_hat: torch.Tensor, similarity: torch.Tensor, cos_all: torch.Tensor,
              fine_grained: bool) -> torch.Tensor:
    """L_norm = -mean_{S > 0} norm_hat + mean_{bg} norm_hat; bg is S < 0, or for fine-grained
    data the positions whose cosine to every class is <= 0."""
    foreground = (similarity > 0).detach()
    background = (cos_all <= 0).all(dim=1) if fine_grained else similarity < 0
    return -masked_mean(norm_hat, foreground) + masked_mean(norm_hat, background.detach())


@METHODS.register("bgc")
class BGC(Method):
    name = "bgc"
    # CUB / VGG16 row of the paper's table (METHODS.md); fine_grained is the CUB variant of
    # L_norm's background.
    defaults: ClassVar[dict[str, Any]] = {
        "lambda_sim": 0.5, "lambda_norm": 0.15, "lambda_drop": 3.0, "tau_fg": 0.6,
        "tau_bg": 0.1, "gamma": 0.8, "p": 0.5, "warm": 20, "fine_grained": False,
    }

    def build_model(self) -> nn.Module:
        if not self.hp["tau_bg"] < self.hp["tau_fg"]:
            raise ValueError(f"bgc needs tau_bg < tau_fg, got {self.hp['tau_bg']} and "
                             f"{self.hp['tau_fg']}")
        model = self.build_classifier()
        model.dropout = AttentiveDropout(float(self.hp["gamma"]), float(self.hp["p"]))
        return model

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        hp, model = self.hp, self.model
        middle = model.backbone.stem(images)
        features = model.backbone.head(middle)
        dropped = model.backbone.head(model.dropout(middle))
        logits = model.fc(features.mean(dim=(2, 3)))
        losses = {"ce": F.cross_entropy(logits, labels),
                  "drop": (features - dropped).abs().mean()}
        total = losses["ce"] + hp["lambda_drop"] * losses["drop"]
        if epoch >= hp["warm"]:
            similarity, norm_hat, cos_all = similarity_and_norm(features, model.fc.weight, labels)
            losses["sim"] = similarity_loss(similarity, norm_hat, hp["tau_fg"], hp["tau_bg"])
            losses["norm"] = norm_loss(norm_hat, similarity, cos_all, bool(hp["fine_grained"]))
            total = total + hp["lambda_sim"] * losses["sim"] + hp["lambda_norm"] * losses["norm"]
        return self.step("main", losses, total, epoch)
