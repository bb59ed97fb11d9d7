"""Backbone + GAP + linear classifier, and the class activation maps it defines."""

from __future__ import annotations

import torch
from torch import nn

from wsol.models.backbones import Backbone


class CAMClassifier(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, feature map F of shape (B, K, h, w))."""
        features = self.backbone(images)
        return self.fc(features.mean(dim=(2, 3))), features

    def cams(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """sum_k w[c, k] F[k] for each image's class c: (B, h, w). Differentiable in w."""
        weights = self.fc.weight[labels]
        return torch.einsum("bk,bkhw->bhw", weights, features)

    def init_head(self, mode: str) -> None:
        """"default": PyTorch's; "normal": N(0, 0.01) weights and zero bias, as wsolevaluation
        and BGC initialise every nn.Linear (wsol/util.py initialize_weights, lines 59-61)."""
        if mode == "normal":
            nn.init.normal_(self.fc.weight, 0, 0.01)
            nn.init.zeros_(self.fc.bias)
        elif mode != "default":
            raise ValueError(f"head_init must be 'default' or 'normal', got {mode!r}")

    def parameter_groups(self, lr: float, lr_classifier_ratio: float,
                         weight_decay: float, new_backbone_layers: bool = True) -> list[dict]:
        """The reference's two rates: new layers and the classifier get lr * ratio.
        new_backbone_layers=False: only the classifier does (the backbone's `new` layers,
        e.g. ResNet's layer4, train at lr)."""
        body: list[nn.Parameter] = []
        new: list[nn.Parameter] = []
        for parameter in self.backbone.parameters():
            higher = new_backbone_layers and self.backbone.is_new(parameter)
            (new if higher else body).append(parameter)
        new.extend(self.fc.parameters())
        return [
            {"params": body, "lr": lr, "weight_decay": weight_decay},
            {"params": new, "lr": lr * lr_classifier_ratio, "weight_decay": weight_decay},
        ]
