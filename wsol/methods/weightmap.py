"""The weight-map method: a classifier f, then a generator g trained against the frozen f.

Method I: min_g CE(softmax f(I), f(I * g(I))) + lambda * |g(I)|_1 (mean over pixels).
Method II: f is a Siamese embedding trained with a triplet loss; g is trained with the inner
triplet (anchor, kept part, removed part) and the outer triplet on masked images.
The score map is M = g(I). The first `classifier_epochs` epochs train f only and produce no
maps to evaluate.

f is a plain classifier, as the paper's (Sec. 3, "Architecture": a ResNet18 "with four blocks
with a receptive field [...] of size 32 x 32", GAP to 512, "a single Fully connected layer";
Sec. 4: SGD at one "initial learning rate of 0.001"): ResNets keep their stride 32 (none of the
CAM methods' stride-1 layer4), and every parameter of f trains at the trial's single `lr`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from wsol.data.sampler import ClassSetBatchSampler
from wsol.methods.base import METHODS, Method
from wsol.methods.minmaxcam import class_set_sampler
from wsol.models.backbones import RESNETS, Backbone, load_torchvision
from wsol.models.classifier import CAMClassifier
from wsol.models.generator import UNetGenerator


def plain_resnet(name: str, weights: str | None) -> Backbone:
    """torchvision's ResNet unchanged (stride 32), cut as stem = up to layer3, head = layer4:
    the paper's f, ResNet18 on fine-grained data and ResNet50 on Tiny-ImageNet (Sec. 4).

    No layer is "new": f has one learning rate, so the split matters to nothing here."""
    net: tvm.ResNet = load_torchvision(RESNETS[name], weights)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                         net.layer3)
    return Backbone(stem, net.layer4, net.fc.in_features, [])


def label_free_score(maps: np.ndarray) -> float:
    """The paper's early-stopping score S, averaged over maps (B, H, W).

    Per map: threshold at max/10, take the bounding box of the largest contour, and return
    the thresholded map's mass inside the box over its total mass.
    """
    scores = []
    for weight_map in maps:
        thresholded = np.where(weight_map >= weight_map.max() / 10, weight_map, 0.0)
        total = float(thresholded.sum())
        if total <= 0:
            scores.append(0.0)
            continue
        binary = (thresholded > 0).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
        scores.append(float(thresholded[y:y + h, x:x + w].sum()) / total)
    return float(np.mean(scores))


class WeightMapModel(nn.Module):
    def __init__(self, classifier: CAMClassifier, generator: UNetGenerator,
                 embedding_dim: int | None):
        super().__init__()
        self.f = classifier
        self.g = generator
        # Method II: f is the backbone plus a linear embedding (512 -> 200 in the paper).
        self.embed: nn.Linear | None = (
            nn.Linear(classifier.backbone.out_channels, embedding_dim) if embedding_dim else None)

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        assert self.embed is not None, "variant I has no embedding"
        return self.embed(self.f.backbone(images).mean(dim=(2, 3)))


def _triplet_indices(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor i, a positive of the same class, a negative of another class, all in the batch."""
    anchors, positives, negatives = [], [], []
    for i, label in enumerate(labels.tolist()):
        same = (labels == label).nonzero().flatten().tolist()
        other = (labels != label).nonzero().flatten().tolist()
        same.remove(i)
        if same and other:
            anchors.append(i)
            positives.append(same[i % len(same)])
            negatives.append(other[i % len(other)])
    if not anchors:
        raise ValueError("a triplet batch needs two images of one class and one of another")
    anchor, positive, negative = (torch.tensor(v, device=labels.device)
                                  for v in (anchors, positives, negatives))
    return anchor, positive, negative


@METHODS.register("weightmap")
class WeightMap(Method):
    name = "weightmap"
    order = 40
    defaults: ClassVar[dict[str, Any]] = {
        "lambda": 1.0, "classifier_epochs": 5, "generator_encoder": "resnet18",
        # The paper's rate for g (Sec. 4): SGD from an ImageNet-pretrained encoder, batch 128,
        # ~100 epochs on fine-grained data. A randomly initialised encoder (the tiny demo)
        # over a few epochs is another regime and needs a larger rate (the search's range).
        "generator_lr": 1e-4, "variant": "I", "margin": 1.0, "embedding_dim": 200,
        "set_size": 2, "classes_per_batch": 8,
        # f's own batch size, weight decay and 0-based decay epochs (the paper trains f at
        # batch 16, weight decay 1e-4, lr / 10 every 80 epochs, and g at batch 128, sec. 4);
        # None: the trial's batch_size, weight_decay and lr_milestones. g always takes the
        # trial's, so `batch_size` is g's.
        "classifier_batch_size": None, "classifier_weight_decay": None,
        "classifier_lr_milestones": None,
    }
    recipe_params = ("classifier_epochs", "classifier_batch_size", "classifier_weight_decay",
                     "classifier_lr_milestones")
    model: WeightMapModel

    def build_model(self) -> WeightMapModel:
        if self.hp["variant"] not in ("I", "II"):
            raise ValueError(f"weightmap variant must be 'I' or 'II', got {self.hp['variant']!r}")
        self._fit_classifier_epochs()
        self._check_phase_settings()
        encoder = str(self.hp["generator_encoder"])
        generator = UNetGenerator(encoder, None if encoder == "tiny" else self.config.weights)
        embedding = int(self.hp["embedding_dim"]) if self.hp["variant"] == "II" else None
        return WeightMapModel(self.build_f(), generator, embedding)

    def _check_phase_settings(self) -> None:
        """f's own batch size (a positive integer), weight decay (>= 0) and milestones (a list
        of positive epochs), each None for the trial's."""
        batch, decay, milestones = (self.hp[k] for k in (
            "classifier_batch_size", "classifier_weight_decay", "classifier_lr_milestones"))
        if batch is not None and (type(batch) is not int or batch < 1):
            raise ValueError(f"weightmap classifier_batch_size must be a positive integer or "
                             f"null, got {batch!r}")
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, int | float)
                                  or not 0 <= decay <= 1):
            raise ValueError(f"weightmap classifier_weight_decay must be in [0, 1] or null, "
                             f"got {decay!r}")
        if milestones is not None and (not isinstance(milestones, list) or any(
                type(m) is not int or m < 1 for m in milestones)):
            raise ValueError(f"weightmap classifier_lr_milestones must be a list of epochs "
                             f">= 1 or null, got {milestones!r}")

    @classmethod
    def first_full_epoch(cls, epochs: int, params: Mapping[str, Any]) -> int:
        """The classifier phase (f only, no maps), as the trial will run it: a default that
        leaves the generator no epoch is lowered to half the epochs."""
        wanted = int(params.get("classifier_epochs", cls.defaults["classifier_epochs"]))
        return wanted if 1 <= wanted < epochs else max(1, epochs // 2)

    def _fit_classifier_epochs(self) -> None:
        """classifier_epochs must leave the generator at least one epoch: the default 5 does
        not with `--epochs 2`, so a default is lowered (with a note) to half the epochs; a
        value the user set (anything in `config.params`) is refused with the reason."""
        wanted, epochs = int(self.hp["classifier_epochs"]), self.config.epochs
        if 1 <= wanted < epochs:
            return
        why = ("the first classifier_epochs epochs train the classifier f only, the rest the "
               "generator g, and the maps of g are what is evaluated")
        if "classifier_epochs" in self.config.params or epochs < 2:
            raise ValueError(f"weightmap needs 1 <= classifier_epochs < epochs, got "
                             f"classifier_epochs={wanted} and epochs={epochs}: {why}; "
                             + ("set epochs >= 2" if epochs < 2 else "set classifier_epochs "
                                + ("to 1" if epochs == 2 else f"between 1 and {epochs - 1}")))
        adapted = self.first_full_epoch(epochs, self.hp)
        print(f"note: weightmap classifier_epochs {wanted} -> {adapted} (it must be below "
              f"epochs={epochs}; half the epochs go to the classifier); set it to silence this",
              file=sys.stderr, flush=True)
        self.hp["classifier_epochs"] = adapted

    def build_f(self) -> CAMClassifier:
        """The trial's backbone + GAP + one linear layer; ResNets plain as in the paper (so
        `large_feature_map` does not apply). Other backbones (the tiny CPU one, VGG16-GAP) have
        no plain form in the paper and are built as for every method."""
        c = self.config
        if c.backbone in RESNETS:
            return CAMClassifier(plain_resnet(c.backbone, c.weights), self.num_classes)
        return self.build_classifier()

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # f: one parameter group at the trial's lr (the paper: 1e-3 for every layer of f), not
        # the CAM methods' body / new-layer split with lr_classifier_ratio.
        f_params = list(self.model.f.parameters())
        if self.model.embed is not None:
            f_params.extend(self.model.embed.parameters())
        decay = self.hp["classifier_weight_decay"]
        generator = self.sgd(self.model.g.parameters(), lr=float(self.hp["generator_lr"]))
        return {"f": self.sgd(f_params, weight_decay=None if decay is None else float(decay)),
                "g": generator}

    def milestones(self, optimizer: str) -> Sequence[int]:
        own = self.hp["classifier_lr_milestones"]
        if optimizer == "f" and own is not None:
            return [int(epoch) for epoch in own]
        return self.config.lr_milestones

    def batch_size(self, epoch: int) -> int:
        own = self.hp["classifier_batch_size"]
        if own is not None and epoch < int(self.hp["classifier_epochs"]):
            return int(own)
        return self.config.batch_size

    def batch_sampler(self, labels: Sequence[int], seed: int) -> ClassSetBatchSampler | None:
        if self.hp["variant"] == "I":
            return None
        return class_set_sampler(self, labels, seed)

    def evaluates(self, epoch: int) -> bool:
        return epoch >= int(self.hp["classifier_epochs"])

    def _freeze_f(self, frozen: bool) -> None:
        for module in (self.model.f, self.model.embed):
            if module is not None:
                module.requires_grad_(not frozen)
                module.train(not frozen)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        training_f = epoch < int(self.hp["classifier_epochs"])
        self._freeze_f(not training_f)
        if self.hp["variant"] == "I":
            losses = self._classifier_losses(images, labels) if training_f else \
                self._generator_losses(images)
        else:
            losses = self._siamese_losses(images, labels, training_f)
        total = sum(losses.values())
        assert isinstance(total, torch.Tensor)  # losses is never empty: never sum's start 0
        values = self.step("f" if training_f else "g", losses, total, epoch)
        return values

    def _classifier_losses(self, images: torch.Tensor,
                           labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, _ = self.model.f(images)
        return {"ce": F.cross_entropy(logits, labels)}

    def _generator_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target = F.softmax(self.model.f(images)[0], dim=1)
        weight_map = self.model.g(images)
        logits, _ = self.model.f(images * weight_map[:, None])
        # R(M): Sec. 3, "R is the L1 norm. For the sake of simplicity, lambda is set to one
        # and no tuning of this value was ever performed." Taken as a mean over pixels (and
        # images), i.e. the L1 norm divided by H*W: summed over 224 x 224 pixels, lambda = 1
        # would weigh R ~5e4 times more than a CE of a few nats and g would collapse to M = 0,
        # so the mean is the only scale on which the paper's untuned lambda = 1 is sensible.
        return {"ce": F.cross_entropy(logits, target),
                "l1": float(self.hp["lambda"]) * weight_map.abs().mean()}

    def _siamese_losses(self, images: torch.Tensor, labels: torch.Tensor,
                        training_f: bool) -> dict[str, torch.Tensor]:
        anchor, positive, negative = _triplet_indices(labels)
        triplet = nn.TripletMarginLoss(margin=float(self.hp["margin"]))
        embed = self.model.embedding
        if training_f:
            e = embed(images)
            return {"triplet": triplet(e[anchor], e[positive], e[negative])}
        weight_map = self.model.g(images)[:, None]
        kept, removed = images * weight_map, images * (1 - weight_map)
        e_images, e_kept, e_removed = embed(images), embed(kept), embed(removed)
        return {
            "inner": triplet(e_images[anchor], e_kept[anchor], e_removed[anchor]),
            "outer": triplet(e_kept[anchor], e_kept[positive], e_kept[negative]),
            "l1": float(self.hp["lambda"]) * weight_map[anchor].abs().mean(),  # as method I
        }

    def scoremaps(self, images: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.model.f(images)[0] if self.hp["variant"] == "I" else None
        return self.model.g(images), logits

    def label_free_score(self, maps: torch.Tensor) -> float | None:
        return label_free_score(maps.float().cpu().numpy())
