"""`weights: synthetic-pretrained`: the tiny body pretrained once on a separate task, cached.

Why: the papers start from ImageNet-pretrained bodies, a regime a CPU cannot reach. This is
its stand-in: the tiny backbone + GAP + linear head trained to classify images of a synthetic
task of its own, then the head is dropped and the body kept. The task uses the synthetic
generator with its own knobs, its own seed and class styles 20-35, which no benchmark preset
draws (tiny 0-3, demo 0-7, large 0-19); every context patch has the image's own style, so no
benchmark class appears in it at all. Images are rendered in memory with labels only (no
boxes, no masks): no WSOL benchmark image is ever read.

The weights live in a per-machine cache (`$WSOL_CACHE/pretrained/`, else
`$XDG_CACHE_HOME/wsol/pretrained/`, else `~/.cache/wsol/pretrained/`), like torchvision's
ImageNet weights in `~/.cache/torch`: a derived artifact every checkout, experiment and trial
process on the machine shares, not project data, and trials run in temporary folders on any
node, where no project-relative path would be the same. A node that lacks the file builds it
(as `ensure_generated` does for the synthetic data); the file name carries a fingerprint of
everything that determines the weights, and a JSON sidecar says what they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wsol.common.durable import replace_durably
from wsol.common.node_lock import node_lock
from wsol.data.synthetic import GENERATOR_VERSION, SynthConfig, render_image
from wsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD

WEIGHT_NAME = "synthetic-pretrained"
# Bumped whenever the recipe below changes in a way its knobs do not show.
RECIPE_VERSION = 1
ARCHITECTURE = "tiny"


def _task() -> SynthConfig:
    """The pretraining task's generator knobs: more classes than any benchmark preset's
    (train_per_class images per class are rendered; val/test counts are unused)."""
    return SynthConfig(classes=16, train_per_class=64, val_per_class=1, test_per_class=1,
                       min_size=64, max_size=96, background_correlation=1.0)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the weights (all of it goes into the fingerprint)."""

    task: SynthConfig = field(default_factory=_task)
    class_offset: int = 20  # class styles 20..35: none of a benchmark preset's
    heldout_per_class: int = 10  # for the sidecar's accuracy only
    data_seed: int = 1_000_003  # not a benchmark seed
    resize: int = 72
    crop: int = 64
    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 32
    seed: int = 0

    def describe(self) -> dict[str, object]:
        """What the fingerprint covers: generator version, knobs, seeds, schedule, body."""
        return {"recipe_version": RECIPE_VERSION, "generator_version": GENERATOR_VERSION,
                "architecture": {"name": ARCHITECTURE, "width": self.width,
                                 "modules": _architecture_digest(self.width)},
                **dataclasses.asdict(self)}

    def fingerprint(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self) -> str:
        return f"{ARCHITECTURE}-w{self.width}-{WEIGHT_NAME}-{self.fingerprint()}.pt"


DEFAULT = PretrainConfig()


def _architecture_digest(width: int) -> str:
    """The body's module structure (repr), so a changed tiny builder gets a new file."""
    from wsol.models.backbones import tiny

    return hashlib.sha256(repr(tiny(None, width=width)).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """`$WSOL_CACHE/pretrained`, else `$XDG_CACHE_HOME/wsol/pretrained`, else
    `~/.cache/wsol/pretrained`."""
    root = os.environ.get("WSOL_CACHE")
    if root:
        base = Path(os.path.expandvars(os.path.expanduser(root)))
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "wsol"
    return base / "pretrained"


def weights_path(config: PretrainConfig = DEFAULT, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / config.file_name()


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_pretrained(config: PretrainConfig | None = None, directory: Path | None = None,
                      log: Callable[[str], None] = _log) -> Path:
    """The weights file for `config`, built first if this machine lacks it.

    Concurrent callers on one machine (a search's trials) build it once: the first holds a
    lock while it trains, the others wait and then find the file. It is written to a
    temporary name and renamed, so no caller ever loads half a file."""
    config = config or DEFAULT
    path = weights_path(config, directory)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with node_lock(path.with_suffix(".lock")):
        if path.is_file():  # built by another process while this one waited
            return path
        log(f"pretraining the tiny body on its synthetic task ({path.name}); once per machine")
        started = time.perf_counter()
        state, facts = pretrain(config)
        facts["seconds"] = round(time.perf_counter() - started, 1)
        _write_atomic(path, state, {**facts, "config": config.describe(),
                                    "fingerprint": config.fingerprint(), "file": path.name})
        log(f"pretrained in {facts['seconds']} s: held-out accuracy "
            f"{facts['heldout_accuracy']:.1f}% on {config.task.classes} classes -> {path}")
    return path


def _write_atomic(path: Path, state: dict[str, torch.Tensor], sidecar: dict) -> None:
    """Both files under temporary names, renamed sidecar first and weights last: the weights
    file existing means both are complete."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(handle)
    weights = Path(tmp)
    side = weights.with_name(weights.name + ".json")
    try:
        torch.save(state, weights)
        weights.chmod(0o644)  # mkstemp's 0600 would hide it from the machine's other users
        sidecar["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        side.write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        replace_durably(side, path.with_suffix(".json"))  # fsync'd: a crash leaves no
        replace_durably(weights, path)  # empty weights under the final name
    finally:
        weights.unlink(missing_ok=True)
        side.unlink(missing_ok=True)


# The task ------------------------------------------------------------------------------------


def task_images(config: PretrainConfig, split: str, per_class: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 3, resize, resize) and labels 0..classes-1 of the pretraining
    task, rendered in memory; `split` ('train' or 'heldout') picks its own random stream."""
    code = {"train": 0, "heldout": 1}[split]
    images, labels = [], []
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for label in range(config.task.classes):
        for index in range(per_class):
            rng = np.random.default_rng([config.data_seed, code, label, index])
            rgb, _, _ = render_image(rng, label + config.class_offset, config.task)
            resized = Image.fromarray(rgb).resize((config.resize, config.resize),
                                                  Image.Resampling.BILINEAR)
            tensor = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255
            images.append((tensor - mean) / std)
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def _augment(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop and horizontal flip per image, as the trials' train transform does."""
    n, _, h, w = images.shape
    tops = torch.randint(0, h - crop + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([images[i, :, t:t + crop, s:s + crop]
                       for i, (t, s) in enumerate(zip(tops.tolist(), lefts.tolist(),
                                                      strict=True))])
    out[flips] = out[flips].flip(-1)
    return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """CPU results depend on the thread count; one thread makes every node's build the same
    for a given torch build (and was not slower here: 85 s against 171 s on a busy 2-core
    machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pretrain(config: PretrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train body + GAP + linear head on the task (CPU, one thread); returns the body's state
    dict (head dropped) and facts for the sidecar."""
    with _one_thread():
        return _pretrain(config)


def _pretrain(config: PretrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    from wsol.models.backbones import tiny
    from wsol.models.classifier import CAMClassifier

    train_x, train_y = task_images(config, "train", config.task.train_per_class)
    held_x, held_y = task_images(config, "heldout", config.heldout_per_class)
    torch.manual_seed(config.seed)
    model = CAMClassifier(tiny(None, width=config.width), config.task.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    steps = config.epochs * max(1, len(train_y) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(config.seed)
    loss = torch.tensor(float("nan"))
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            batch = order[start:start + config.batch_size]
            logits, _ = model(_augment(train_x[batch], config.crop, generator))
            loss = F.cross_entropy(logits, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        margin = (config.resize - config.crop) // 2
        centre = held_x[:, :, margin:margin + config.crop, margin:margin + config.crop]
        accuracy = (model(centre)[0].argmax(1) == held_y).float().mean().item() * 100
    facts = {"final_train_loss": loss.item(), "heldout_accuracy": accuracy,
             "train_images": len(train_y), "heldout_images": len(held_y),
             "torch": torch.__version__, "threads": torch.get_num_threads()}
    return model.backbone.state_dict(), facts


# Loading -------------------------------------------------------------------------------------


def load_body(backbone: torch.nn.Module, weights: str, width: int) -> None:
    """Load `weights` ("synthetic-pretrained" or a state-dict file) into a tiny body, strictly:
    every parameter and buffer of the body, nothing else."""
    if weights == WEIGHT_NAME:
        path = ensure_pretrained(dataclasses.replace(DEFAULT, width=width))
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist "
                                    f"(or use {WEIGHT_NAME} / none)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights file {path} does not fit the tiny backbone (width {width}): "
                         f"{' '.join(str(error).split())[:300]}") from error
