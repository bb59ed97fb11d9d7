"""What every WSOL method provides to the trial runner.

A method owns its model and optimisers and does its own update steps (MinMaxCAM takes two
per batch, the weight map switches networks between phases); the runner owns data, epochs,
evaluation on train-fullsup, checkpoints and reporting.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from wsol.common.factories import Factories
from wsol.data.sampler import ClassSetBatchSampler
from wsol.models.backbones import RESNETS, build_backbone, pretrained_fc
from wsol.models.classifier import CAMClassifier
from wsol.trial.config import TrialConfig


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite: the trial stops and reports why."""


class Method:
    name: ClassVar[str]
    # Where the method comes in reports and in an experiment's default methods, ascending (the
    # papers' methods take 10-40); one that sets none comes after them.
    order: ClassVar[int] = 100
    # Whether every other method is compared with this one at equal budget: CAM, and no other.
    baseline: ClassVar[bool] = False
    # Method-specific hyperparameters with the authors' defaults; the search spaces use these names.
    defaults: ClassVar[dict[str, Any]] = {}
    # The hyperparameters among `defaults` that belong to the training recipe (phases, their
    # epochs and batch sizes), not to the losses: see wsol.trial.config.SCHEDULE_FIELDS.
    recipe_params: ClassVar[tuple[str, ...]] = ()
    # What build_model builds: a CAMClassifier unless a method overrides it (then it overrides
    # the hooks below that use the classifier too, and declares its model's type).
    model: nn.Module

    def __init__(self, config: TrialConfig, num_classes: int, device: torch.device):
        unknown = sorted(set(config.params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no hyperparameter {unknown[0]!r}; "
                f"known: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.hp: dict[str, Any] = {**self.defaults, **config.params}
        self.config = config
        self.num_classes = num_classes
        self.device = device
        self.model = self.build_model().to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Loss scaling is needed for float16 only; disabled, it passes values through.
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=config.amp and device.type == "cuda")
        self.optimizers: dict[str, torch.optim.Optimizer] = self.build_optimizers()
        self._base_lrs = {
            name: [group["lr"] for group in opt.param_groups]
            for name, opt in self.optimizers.items()
        }

    @classmethod
    def check_recipe(cls, config: TrialConfig) -> None:
        """Refuses (ValueError, one line) a recipe the method cannot carry out as given, before
        a search starts; the method's constructor applies the same rules."""

    @classmethod
    def first_full_epoch(cls, epochs: int, params: Mapping[str, Any]) -> int:
        """The epochs that come before the method trains its whole objective (BGC's warm-up,
        the weight map's classifier phase): ASHA's rungs are placed after them, so no trial is
        cut on an objective it has not trained yet."""
        return 0

    def build_classifier(self) -> CAMClassifier:
        """The backbone and a new classifier, initialised as `head_init` says, or started from
        the pretrained weights' classifier (`keep_pretrained_fc`, ILSVRC on ResNets)."""
        c = self.config
        backbone = build_backbone(c.backbone, c.weights, large_feature_map=c.large_feature_map)
        model = CAMClassifier(backbone, self.num_classes)
        model.init_head(c.head_init)
        if c.keep_pretrained_fc:
            if c.weights is None:
                raise ValueError("keep_pretrained_fc needs pretrained weights (weights: "
                                 "imagenet or a file); set keep_pretrained_fc: false")
            model.fc.load_state_dict(pretrained_fc(c.backbone, c.weights, self.num_classes))
        return model

    def sgd(self, groups: list[dict] | Iterable[torch.Tensor], lr: float | None = None,
            weight_decay: float | None = None) -> torch.optim.SGD:
        """SGD with the trial's momentum, Nesterov flag and (unless given) rate and decay."""
        c = self.config
        return torch.optim.SGD(groups, lr=c.lr if lr is None else lr, momentum=c.momentum,
                               nesterov=c.nesterov,
                               weight_decay=c.weight_decay if weight_decay is None
                               else weight_decay)

    def classifier_groups(self, model: CAMClassifier) -> list[dict]:
        """Body at lr, new layers and classifier at lr * ratio; `layer4_rate: base` keeps a
        ResNet's layer4 at lr (the authors' code, see TrialConfig.layer4_rate)."""
        c = self.config
        if c.layer4_rate == "base" and c.backbone not in RESNETS:
            raise ValueError(f"layer4_rate: base applies to ResNets, not {c.backbone}; "
                             "set layer4_rate: ratio")
        return model.parameter_groups(c.lr, c.lr_classifier_ratio, c.weight_decay,
                                      new_backbone_layers=c.layer4_rate == "ratio")

    # Hooks a method overrides -------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return self.build_classifier()

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        assert isinstance(self.model, CAMClassifier), "build_model overridden: override this too"
        return {"main": self.sgd(self.classifier_groups(self.model))}

    def batch_sampler(self, labels: Sequence[int], seed: int) -> ClassSetBatchSampler | None:
        """None: plain shuffled batches of `batch_size(epoch)`."""
        return None

    def batch_size(self, epoch: int) -> int:
        """The batch size of an epoch: a method whose paper changes it between phases (BGC's
        warm-up, the weight map's f and g) overrides this."""
        return self.config.batch_size

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def scoremaps(self, images: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw score maps (B, h, w) of the true class, and class logits (None if the method
        has no classifier). Called under torch.no_grad() in eval mode."""
        assert isinstance(self.model, CAMClassifier), "build_model overridden: override this too"
        logits, features = self.model(images)
        return self.model.cams(features, labels), logits

    def evaluates(self, epoch: int) -> bool:
        """Whether this epoch's maps are the method's output (not a pre-training phase)."""
        return True

    def label_free_score(self, maps: torch.Tensor) -> float | None:
        """A selection score that needs no boxes (the weight map's S); None if the method
        has none."""
        return None

    # Shared machinery ----------------------------------------------------------------------

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch on the method's device, in the model's memory layout."""
        layout = torch.channels_last if self.config.channels_last else torch.preserve_format
        return images.to(self.device, memory_format=layout)

    def autocast(self) -> torch.autocast:
        """The precision context of training steps (a no-op unless `amp`)."""
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.config.amp)

    def milestones(self, optimizer: str) -> Sequence[int]:
        """The 0-based epochs from which an optimiser's rates are multiplied by `lr_decay`
        once more; one schedule for all unless a method's phases have their own."""
        return self.config.lr_milestones

    def set_epoch(self, epoch: int) -> None:
        """Step decay by `lr_decay` at each milestone (MultiStepLR; wsolevaluation main.py:337
        multiplies by 0.1, BGC trainer.py:366-369 by its lr_decay_rate)."""
        for name, optimizer in self.optimizers.items():
            factor = self.config.lr_decay ** sum(epoch >= m for m in self.milestones(name))
            for group, base in zip(optimizer.param_groups, self._base_lrs[name], strict=True):
                group["lr"] = base * factor

    def step(self, optimizer: str, losses: dict[str, torch.Tensor], total: torch.Tensor,
             epoch: int) -> dict[str, float]:
        values = {name: float(value.detach()) for name, value in losses.items()}
        if not math.isfinite(float(total.detach())):
            raise NonFiniteLossError(f"non-finite loss in epoch {epoch}: {values}")
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            self.scaler.scale(total).backward()
        self.scaler.step(opt)
        self.scaler.update()
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], with_optimizers: bool = True) -> None:
        self.model.load_state_dict(state["model"])
        if with_optimizers:
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.scaler.load_state_dict(state["scaler"])


def _import_method_modules() -> None:
    """Import every module of this package (each registers its method), so that a new method
    is its module and its search space, with no list of methods to extend. Imported modules
    are not imported again; a folder added to the package's __path__ is searched too."""
    package = importlib.import_module(__name__.rpartition(".")[0])
    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)


METHODS: Factories[type[Method]] = Factories("method", _import_method_modules)


def method_order() -> list[str]:
    """The registered methods in their `order` (then by name): the rows of a report, the
    default methods of an experiment."""
    return sorted(METHODS.names(), key=lambda name: (METHODS.get(name).order, name))


def method_rank(name: str) -> tuple[int, str]:
    """A report's sort key for a method: registered ones in `method_order`, then names that
    no registered method has (runs of a method this installation lacks), alphabetically."""
    order = method_order()
    return (order.index(name) if name in order else len(order), name)


def baseline_method() -> str:
    """The method every other is compared with."""
    found = [name for name in METHODS.names() if METHODS.get(name).baseline]
    if len(found) != 1:
        raise RuntimeError(f"one registered method must be the baseline, found {found}")
    return found[0]


def build_method(config: TrialConfig, num_classes: int, device: torch.device) -> Method:
    return METHODS.get(config.method)(config, num_classes, device)
