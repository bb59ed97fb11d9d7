"""MinMaxCAM: CE on class-set batches, then CRR + FRR on the linear layer through the map H.

Stage II freezes the backbone (eval mode, no parameter gradients) and masks the *input* image
with H; H is a differentiable function of the classifier weights w, which is the only path by
which CRR and FRR can reach w. Detaching H would silently turn stage II off.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from wsol.data.sampler import ClassSetBatchSampler
from wsol.methods.base import METHODS, Method
from wsol.models.classifier import CAMClassifier


def common_region_loss(features: torch.Tensor, set_size: int) -> torch.Tensor:
    """CRR, MinMaxCAM paper Sec. 3.2, Eq. 3, averaged over the sets of the batch:

        CRR = 1/(S(S-1)) sum_{i=0}^{S-1} sum_{j=0}^{S-1} ||f_i - f_j||_2^2

    with ||.||_2^2 taken as a mean over the K channels, not a sum: the authors' code uses
    nn.MSELoss (mean reduction) per pair, and lambda1 = 1 belongs to that scale (a sum is K
    times larger). features: (N * S, K), the S images of each set consecutive.
    """
    sets = features.view(-1, set_size, features.shape[-1])
    squared = (sets[:, :, None, :] - sets[:, None, :, :]).pow(2).mean(-1)
    return (squared.sum(dim=(1, 2)) / (set_size * (set_size - 1))).mean()


def full_region_loss(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """FRR, MinMaxCAM paper Sec. 3.3, Eq. 4, averaged over the sets (= over all images):

        FRR = 1/S sum_{i=0}^{S-1} ||f_i - f_i^o||_2^2

    again with a mean over the K channels (the authors' nn.MSELoss), the scale of lambda2 = 1.
    """
    return (masked - full).pow(2).mean(-1).mean()


def minmax_per_map(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    return (maps - low) / (high - low + eps)


def stage_two_loss(model: CAMClassifier, images: torch.Tensor, labels: torch.Tensor,
                   set_size: int, lambda1: float, lambda2: float) -> dict[str, torch.Tensor]:
    """L_S2 = lambda1 CRR + lambda2 FRR (Sec. 3.4, Eq. 6). Backbone frozen; the returned losses
    depend on the parameters only through fc.weight."""
    backbone = model.backbone
    was_training = backbone.training
    flags = [p.requires_grad for p in backbone.parameters()]
    backbone.eval()
    backbone.requires_grad_(False)
    try:
        with torch.no_grad():
            features = backbone(images)
        full = features.mean(dim=(2, 3))
        h = minmax_per_map(model.cams(features, labels))
        h = F.interpolate(h[:, None], size=images.shape[-2:], mode="bilinear",
                          align_corners=False)
        masked = backbone(images * h).mean(dim=(2, 3))
        crr = common_region_loss(masked, set_size)
        frr = full_region_loss(masked, full)
    finally:
        for parameter, flag in zip(backbone.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
        backbone.train(was_training)
    return {"crr": crr, "frr": frr, "stage2": lambda1 * crr + lambda2 * frr}


def class_set_sampler(method: Method, labels: Sequence[int], seed: int) -> ClassSetBatchSampler:
    """Batches of `classes_per_batch` classes x `set_size` images, fitted to the data.

    The authors' 12 classes per batch cannot fit a dataset with fewer classes in train (the
    8-class synthetic demo): a default is then lowered to the classes present, with a note;
    a value the user set (config params, --set, a search's sampled or fixed value: anything in
    `config.params`) is refused with the reason, as silently changing it would misreport it.
    """
    present = len(set(labels))
    wanted = int(method.hp["classes_per_batch"])
    if not 1 <= wanted <= present:
        if "classes_per_batch" in method.config.params or wanted < 1:
            raise ValueError(
                f"{method.name} classes_per_batch={wanted} does not fit the data: each batch "
                f"takes set_size images from each of classes_per_batch distinct classes, and "
                f"train has {present} classes; set classes_per_batch "
                + ("to 1" if present == 1 else f"between 1 and {present}"))
        print(f"note: {method.name} classes_per_batch {wanted} -> {present} (the data has "
              f"{present} classes); set it to silence this", file=sys.stderr, flush=True)
        method.hp["classes_per_batch"] = wanted = present
    return ClassSetBatchSampler(labels, wanted, int(method.hp["set_size"]), seed=seed)


@METHODS.register("minmaxcam")
class MinMaxCAM(Method):
    name = "minmaxcam"
    order = 20
    defaults: ClassVar[dict[str, Any]] = {
        "lambda1": 1.0, "lambda2": 1.0, "set_size": 5, "classes_per_batch": 12,
        # Stage II's rate relative to the classifier's; the authors use the same rate (one
        # optimiser for both stages). The knob was added as a workaround for CRR/FRR summed
        # over the K channels (K times the authors' scale), which diverged at lr ~1e-2; with
        # the mean over channels it stays at 1 and is kept only as a searchable knob.
        "stage2_lr_scale": 1.0,
    }
    model: CAMClassifier

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        rate = c.lr * c.lr_classifier_ratio * float(self.hp["stage2_lr_scale"])
        stage_two = self.sgd([self.model.fc.weight], lr=rate)
        return {"main": self.sgd(self.classifier_groups(self.model)), "stage2": stage_two}

    def batch_sampler(self, labels: Sequence[int], seed: int) -> ClassSetBatchSampler:
        return class_set_sampler(self, labels, seed)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        logits, _ = self.model(images)
        ce = F.cross_entropy(logits, labels)
        values = self.step("main", {"ce": ce}, ce, epoch)
        losses = stage_two_loss(self.model, images, labels, int(self.hp["set_size"]),
                                float(self.hp["lambda1"]), float(self.hp["lambda2"]))
        return {**values, **self.step("stage2", losses, losses["stage2"], epoch)}
