"""A synthetic WSOL benchmark written in the real metadata format.

Every object has the same body (a textured ellipse); classes differ only by a small "head"
part (its colour and shape). Under the first object lies a striped context patch (the duck's
water) whose colour and stripes belong to the object's class with probability
`background_correlation`. A classifier therefore learns the part and the context, which is
exactly why CAM covers only the discriminative part and spills onto the context: the two
failures MinMaxCAM, BGC and the weight map address. Ground truth is the whole body. The rest
of the scene carries no class information, so a map that is low on the object and high
everywhere else cannot score through hole contours."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsol.common.durable import replace_durably

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Bumped whenever the rendering changes, so data written by an older generator is detected.
GENERATOR_VERSION = 2
BODY_RGB = np.array([150.0, 128.0, 110.0])


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator; presets below, any field overridable from the CLI."""

    classes: int = 8
    train_per_class: int = 96
    val_per_class: int = 5
    test_per_class: int = 25
    min_size: int = 64
    max_size: int = 96
    object_scale: tuple[float, float] = (0.12, 0.22)
    part_scale: float = 0.6
    background_correlation: float = 0.8
    second_instance_prob: float = 0.2
    noise: float = 12.0
    ignore_width: int = 2

    def __post_init__(self) -> None:
        if self.classes < 2 or self.classes > 64:
            raise ValueError(f"classes must be in [2, 64], got {self.classes}")
        if not 16 <= self.min_size <= self.max_size:
            raise ValueError("need 16 <= min_size <= max_size")
        if not 0.0 <= self.background_correlation <= 1.0:
            raise ValueError("background_correlation must be in [0, 1]")
        if min(self.train_per_class, self.val_per_class, self.test_per_class) < 1:
            raise ValueError("every split needs at least one image per class")


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(
        classes=4, train_per_class=12, val_per_class=3, test_per_class=6, min_size=40, max_size=56
    ),
    "demo": SynthConfig(),
    "large": SynthConfig(
        classes=20, train_per_class=100, val_per_class=5, test_per_class=50,
        min_size=128, max_size=192,
    ),
}


def _class_style(c: int) -> dict[str, float]:
    """Fixed per-class look: part hue and shape; context hue, stripe angle and period."""
    golden = 0.61803398875
    return {
        "part_hue": (c * golden) % 1.0,
        "part_shape": c % 3,
        "context_hue": (c * golden + 0.37) % 1.0,
        "context_angle": (c * 47.0) % 180.0,
        "context_period": 4.0 + (c % 4) * 2.0,
    }


def _hue_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    hsv = np.array([[[int(hue * 179), int(saturation * 255), int(value * 255)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _stripes(h: int, w: int, angle_deg: float, period: float, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = np.deg2rad(angle_deg)
    return np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dull scene with broad stripes of random hue and angle: no class information."""
    wave = _stripes(h, w, rng.uniform(0, 180), min(h, w) * rng.uniform(0.3, 0.6),
                    rng.uniform(0, 2 * np.pi))
    base = _hue_rgb(rng.uniform(), 0.2, 0.6)
    return base[None, None, :] * (0.85 + 0.15 * wave[..., None])


def _context(
    rng: np.random.Generator, h: int, w: int, centre: tuple[float, float], a: float,
    style: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Mask and texture of a striped patch under the object (the duck's water)."""
    cx, cy = centre
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = ((xx - cx) / (1.4 * a)) ** 2 + ((yy - cy - 0.8 * a) / (0.6 * a)) ** 2 <= 1.0
    wave = _stripes(h, w, style["context_angle"] + rng.normal(0, 5), style["context_period"],
                    rng.uniform(0, 2 * np.pi))
    colour = _hue_rgb(style["context_hue"], 0.7, 0.8)
    return mask, colour[None, None, :] * (0.7 + 0.3 * wave[..., None])


def _instance(
    rng: np.random.Generator, h: int, w: int, cfg: SynthConfig, style: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
    """Masks (body, part), centre and semi-major axis of one object at a random pose."""
    side = min(h, w)
    a = side * rng.uniform(*cfg.object_scale)
    b = a * rng.uniform(0.45, 0.7)
    theta = rng.uniform(0, 2 * np.pi)
    margin = a + b * cfg.part_scale
    cx = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
    cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    body = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    r = b * cfg.part_scale
    pu, pv = u - a * 0.85, v
    if style["part_shape"] == 0:
        part = pu**2 + pv**2 <= r**2
    elif style["part_shape"] == 1:
        part = (np.abs(pu) <= r * 0.85) & (np.abs(pv) <= r * 0.85)
    else:
        part = (pu >= -r) & (np.abs(pv) <= (r - pu) * 0.55) & (pu <= r)
    return body, part, (cx, cy), a


def render_image(
    rng: np.random.Generator, label: int, cfg: SynthConfig
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """One RGB image (uint8), its instance masks and its ignore mask."""
    h = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    w = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    context_class = label
    if rng.random() >= cfg.background_correlation:
        context_class = int(rng.integers(cfg.classes))
    image = _background(rng, h, w)
    style = _class_style(label)
    count = 2 if rng.random() < cfg.second_instance_prob else 1
    objects = [_instance(rng, h, w, cfg, style) for _ in range(count)]
    mask, texture = _context(rng, h, w, objects[0][2], objects[0][3], _class_style(context_class))
    image = np.where(mask[..., None], texture, image)
    instances: list[np.ndarray] = []
    part_rgb = _hue_rgb(style["part_hue"], 0.9, 0.95)
    for body, part, _, _ in objects:
        texture = rng.normal(0, 18, size=(h, w, 1))
        image = np.where(body[..., None], BODY_RGB + texture, image)
        image = np.where(part[..., None], part_rgb, image)
        instances.append((body | part).astype(np.uint8) * 255)
    image = image + rng.normal(0, cfg.noise, size=image.shape)
    union = np.max(instances, axis=0)
    kernel = np.ones((2 * cfg.ignore_width + 1,) * 2, np.uint8)
    ignore = cv2.dilate(union, kernel) if cfg.ignore_width else np.zeros_like(union)
    return np.clip(image, 0, 255).astype(np.uint8), instances, ignore


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _write_split(out: Path, split: str, per_class: int, cfg: SynthConfig, seed: int) -> int:
    meta = out / "metadata" / split
    meta.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, boxes, masks = [], [], [], [], []
    for index in range(per_class * cfg.classes):
        label = index // per_class
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
        image, instances, ignore = render_image(rng, label, cfg)
        stem = f"{split}/c{label:02d}/{index:05d}"
        image_id = f"images/{stem}.png"
        (out / image_id).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / image_id), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        (out / "masks" / stem).parent.mkdir(parents=True, exist_ok=True)
        ignore_id = f"masks/{stem}_ignore.png"
        cv2.imwrite(str(out / ignore_id), ignore)
        ids.append(image_id)
        labels.append(f"{image_id},{label}")
        sizes.append(f"{image_id},{image.shape[1]},{image.shape[0]}")
        for k, instance in enumerate(instances):
            mask_id = f"masks/{stem}_{k}.png"
            cv2.imwrite(str(out / mask_id), instance)
            boxes.append(f"{image_id},{','.join(map(str, _bbox(instance)))}")
            masks.append(f"{image_id},{mask_id},{ignore_id if k == 0 else ''}")
    for name, lines in (
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
        ("localization.txt", boxes),
        ("localization_masks.txt", masks),
    ):
        (meta / name).write_text("\n".join(lines) + "\n")
    return len(ids)


def generate(out: str | Path, cfg: SynthConfig, seed: int = 0) -> dict[str, int]:
    """Write the benchmark under `out`; returns the number of images per split."""
    root = Path(out)
    counts = {
        split: _write_split(root, split, getattr(cfg, f"{split}_per_class"), cfg, seed)
        for split in SPLIT_CODES
    }
    (root / "synthetic.json").write_text(json.dumps(_manifest(cfg, seed), indent=2) + "\n")
    return counts


def ensure_generated(out: str | Path, cfg: SynthConfig, seed: int = 0) -> bool:
    """Generate the benchmark under `out` unless it exists; True if this call wrote it.

    The search driver and every trial call it: on a cluster the driver's disk is not the
    workers', and the benchmark is deterministic per seed, so each node makes its own copy.
    It is written beside `out` and renamed into place, so concurrent callers on one node
    never read a half-written copy."""
    root = Path(out)
    if root.exists():
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        generate(staging, cfg, seed)
        try:
            replace_durably(staging, root)  # a crash leaves no truncated image behind
        except OSError:  # another caller finished first
            return False
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _manifest(cfg: SynthConfig, seed: int) -> dict[str, object]:
    return {"generator": "wsol.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
            "config": dataclasses.asdict(cfg)}


def mismatch(root: str | Path, cfg: SynthConfig, seed: int) -> str | None:
    """Why the benchmark under `root` differs from what `generate(root, cfg, seed)` writes."""
    path = Path(root) / "synthetic.json"
    if not path.exists():
        return f"{path} is missing"
    found = json.loads(path.read_text())
    wanted = json.loads(json.dumps(_manifest(cfg, seed)))
    for key in ("version", "seed", "config"):
        if found.get(key) != wanted[key]:
            return f"{path}: {key} is {found.get(key)!r}, expected {wanted[key]!r}"
    return None


def config_with_overrides(preset: str, overrides: dict[str, str]) -> SynthConfig:
    """A preset with `field=value` overrides from the command line, type-checked per field."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[preset]
    fields = {f.name: f for f in dataclasses.fields(SynthConfig)}
    changes: dict[str, Any] = {}  # each of its field's type, checked by the conversion below
    for key, raw in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown synthetic knob {key!r}; knobs: {', '.join(fields)}")
        current = getattr(base, key)
        try:
            if isinstance(current, tuple):
                changes[key] = tuple(float(v) for v in raw.split(","))
            else:
                changes[key] = type(current)(raw)
        except ValueError as error:
            raise ValueError(f"bad value {raw!r} for synthetic knob {key!r}: {error}") from error
    return dataclasses.replace(base, **changes)
