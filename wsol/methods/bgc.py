"""BGC, "Bridging the Gap": CAM = ||w_c|| * ||F_u|| * cos(w_c, F_u), and losses that align
the norm map with the similarity map, plus attentive dropout with a consistency loss.

The attentive dropout sits between the backbone's stem and head (the paper's position per
architecture, see wsol.models.backbones). The loss functions take plain tensors so they can
be checked on hand-made feature maps.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wsol.methods.base import METHODS, Method
from wsol.methods.minmaxcam import minmax_per_map
from wsol.models.classifier import CAMClassifier
from wsol.trial.config import TrialConfig


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
    """L_sim = -mean_{norm_hat > tau_fg} S + mean_{norm_hat < tau_bg} S (Sec. 4.1, Eq. 5-6)."""
    foreground = (norm_hat > tau_fg).detach()
    background = (norm_hat < tau_bg).detach()
    return -masked_mean(similarity, foreground) + masked_mean(similarity, background)


def norm_loss(norm_hat: torch.Tensor, similarity: torch.Tensor, cos_all: torch.Tensor,
              fine_grained: bool) -> torch.Tensor:
    """L_norm = -mean_{R_fg^sim} norm_hat + mean_{R_bg^sim} norm_hat (BGC paper Sec. 4.1, Eq. 8).

    Generally R_fg^sim = {S > 0} and R_bg^sim = {S < 0} with S the target-class cosine (Eq. 7).
    For fine-grained data, Sec. 4.1: "we define the region with a non-positive similarity with
    any class as R_bg^sim and the other as R_fg^sim." So background is where every class's
    cosine is <= 0 and foreground is the rest (max over classes > 0, as the authors' code): a
    position whose target cosine is negative but another bird's is positive is still bird.
    (The authors' code takes max < 0 as background; only an exact 0 differs.)
    """
    if fine_grained:
        best = cos_all.amax(dim=1)
        foreground, background = best > 0, best <= 0
    else:
        foreground, background = similarity > 0, similarity < 0
    return -masked_mean(norm_hat, foreground.detach()) + masked_mean(norm_hat, background.detach())


@METHODS.register("bgc")
class BGC(Method):
    name = "bgc"
    order = 30
    # One coherent setting: CUB-200-2011 on VGG16, the paper's Sec. 5.4 "Sensitivity to
    # Hyperparameters" (lambda_sim 0.5, lambda_norm 0.15, lambda_drop 3; tau_fg / tau_bg 0.6 /
    # 0.1; gamma / p 0.8 / 0.5). CUB is fine-grained, so L_norm uses the any-class regions
    # (Sec. 4.1). The CUB/ResNet50 and ImageNet/VGG16 settings are in the appendix, Sec. C.5.
    # warm: the paper gives no number; 20 (of 70 epochs) is from the authors' CUB configs
    # (configs/config_exp_vgg.yaml:19, warm_epochs: 20).
    # warm_batch_size: the batch size of the warm-up epochs (the code's warm_batch_size,
    # trainer.py:94, then batch_size from the first epoch after it, main.py:55-56); None: the
    # trial's batch_size throughout.
    defaults: ClassVar[dict[str, Any]] = {
        "lambda_sim": 0.5, "lambda_norm": 0.15, "lambda_drop": 3.0, "tau_fg": 0.6,
        "tau_bg": 0.1, "gamma": 0.8, "p": 0.5, "warm": 20, "fine_grained": True,
        "warm_batch_size": None,
    }
    recipe_params = ("warm", "warm_batch_size")
    # The CAM classifier with an AttentiveDropout added as its submodule `dropout`.
    model: CAMClassifier

    def build_model(self) -> CAMClassifier:
        if not self.hp["tau_bg"] < self.hp["tau_fg"]:
            raise ValueError(f"bgc needs tau_bg < tau_fg, got {self.hp['tau_bg']} and "
                             f"{self.hp['tau_fg']}")
        self._fit_warm()
        warm_batch = self.hp["warm_batch_size"]
        if warm_batch is not None and (isinstance(warm_batch, bool)
                                       or not isinstance(warm_batch, int) or warm_batch < 1):
            raise ValueError(f"bgc warm_batch_size must be a positive integer or null, got "
                             f"{warm_batch!r}")
        model = self.build_classifier()
        model.dropout = AttentiveDropout(float(self.hp["gamma"]), float(self.hp["p"]))
        return model

    @classmethod
    def check_recipe(cls, config: TrialConfig) -> None:
        """L_sim and L_norm start after `warm` epochs, so warm >= epochs would train CE and
        L_drop only: a warm-up the user set (config params, a search row or --set) is
        refused."""
        warm = config.params.get("warm")
        if warm is not None and int(warm) >= config.epochs:
            raise ValueError(f"bgc needs warm < epochs, got warm={warm} and "
                             f"epochs={config.epochs}: L_sim and L_norm would never be turned on")

    @classmethod
    def first_full_epoch(cls, epochs: int, params: Mapping[str, Any]) -> int:
        """The warm-up, as the trial will run it: the built-in default 20 is lowered to half
        the epochs where it would not leave one epoch after it."""
        warm = int(params.get("warm", cls.defaults["warm"]))
        return warm if warm < epochs else epochs // 2

    def _fit_warm(self) -> None:
        """check_recipe's rule; the built-in default 20 is lowered to half the epochs, with a
        note (as the weight map's classifier_epochs)."""
        self.check_recipe(self.config)
        warm, epochs = int(self.hp["warm"]), self.config.epochs
        if warm < epochs:
            return
        adapted = self.first_full_epoch(epochs, self.hp)
        print(f"note: bgc warm {warm} -> {adapted} (it must be below epochs={epochs}); set it "
              "to silence this", file=sys.stderr, flush=True)
        self.hp["warm"] = adapted

    def batch_size(self, epoch: int) -> int:
        warm_batch = self.hp["warm_batch_size"]
        if warm_batch is not None and epoch < int(self.hp["warm"]):
            return int(warm_batch)
        return self.config.batch_size

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        hp, model = self.hp, self.model
        middle = model.backbone.stem(images)
        features = model.backbone.head(middle)
        dropped = model.backbone.head(model.get_submodule("dropout")(middle))
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
