"""Input pipeline: images per second per core for JPEG decode + the training transform, at
CUB's and ImageNet's real image sizes, and how many cores a trial needs to feed a GPU.

The sizes are drawn from the bundled metadata's image_sizes.txt (CUB train, ILSVRC val: the
ILSVRC train split ships without sizes; val images come from the same collection). Each size
gets a fabricated JPEG: smooth noise (bicubic upsampling of a coarse random field, like the
large smooth regions of photographs) plus fine-grained texture, encoded by Pillow at quality
90; the JSON records the bits per pixel it came out at. Decoders: Pillow (what
wsol/data/images.py load_rgb uses, then the PIL path of train_transform) and
torchvision.io.decode_jpeg on the CPU (then the same transform on the uint8 tensor, bilinear
with antialiasing: close to, not bit-identical with, Pillow's resize).

Per core: one process, one thread, images / CPU second (robust to other load on the machine);
wall-clock rates of a DataLoader with 1..N workers are recorded beside them with the load
average. The cores a trial needs = published GPU training throughput / the per-core rate, plus
one for the training process itself.

    .venv/bin/python benchmarks/input_pipeline.py --json benchmarks/results/input_pipeline.json
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, write_result
from wsol.data.bundled import bundled_metadata
from wsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform

SIZE_FILES = {"cub": ("cub", "train"), "imagenet": ("ilsvrc", "val")}
QUALITY = 90

# Published single-GPU training throughputs (images/s, 224 x 224 crops).
# ResNet50 v1.5, PyTorch, NVIDIA DeepLearningExamples
# PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance results"
# (1 GPU rows): DGX A100 80GB TF32 938, mixed precision 2470; DGX-1 V100 16GB FP32 367, mixed
# precision 1200.
RESNET50 = {"A100 mixed precision": 2470, "A100 TF32": 938, "V100 mixed precision": 1200,
            "V100 FP32": 367}
# VGG16 has no NVIDIA DeepLearningExamples entry; its speed relative to ResNet50 is taken from
# TensorFlow's published benchmarks (tensorflow/docs_src/performance/benchmarks.md, DGX-1 P100,
# 1 GPU, real data, batch 64: ResNet-50 218 images/s, VGG16 154): an estimate, labelled so.
VGG16_PER_RESNET50 = 154 / 218


def image_sizes(dataset: str, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` (width, height) pairs drawn from the bundled metadata of `dataset`."""
    name, split = SIZE_FILES[dataset]
    lines = (bundled_metadata(name) / split / "image_sizes.txt").read_text().splitlines()
    sizes = [(int(w), int(h)) for _, w, h in (line.split(",") for line in lines if line)]
    rng = np.random.default_rng(seed)
    return [sizes[i] for i in rng.choice(len(sizes), size=count, replace=False)]


def fabricate_jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A photograph-like JPEG: a smooth colour field plus fine texture, quality 90."""
    coarse = rng.random((3, max(2, height // 24), max(2, width // 24)), dtype=np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(height, width),
                                             mode="bicubic", align_corners=False)[0].numpy()
    texture = rng.normal(0, 0.1, (3, height, width)).astype(np.float32)
    pixels = np.clip((smooth + texture) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def tensor_transform(resize: int = 256, crop: int = 224) -> transforms.Compose:
    """train_transform's steps on a decoded uint8 tensor (decode_jpeg's output)."""
    return transforms.Compose([
        transforms.Resize((resize, resize), antialias=True),
        transforms.RandomCrop(crop),
        transforms.RandomHorizontalFlip(),
        transforms.ConvertImageDtype(torch.float32),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class JpegBytes(Dataset):
    """Encoded images in memory: the loader's cost is decode + transform, not the disk."""

    def __init__(self, blobs: list[bytes], decoder: str):
        self.blobs = blobs
        self.decoder = decoder
        self.pil = train_transform()
        self.tensor = tensor_transform()

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> torch.Tensor:
        blob = self.blobs[index]
        if self.decoder == "pillow":
            with Image.open(io.BytesIO(blob)) as image:
                return self.pil(image.convert("RGB"))
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        return self.tensor(decode_jpeg(data, mode=ImageReadMode.RGB))


def per_core(dataset: JpegBytes, repeats: int) -> dict[str, float]:
    """Images per CPU second and per wall second, one thread, best of `repeats`."""
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(len(dataset)):
            dataset[index]
        cpu_rates.append(len(dataset) / (time.process_time() - cpu))
        wall_rates.append(len(dataset) / (time.perf_counter() - wall))
    return {"images_per_cpu_second": round(max(cpu_rates), 1),
            "images_per_wall_second": round(max(wall_rates), 1)}


def loader_rate(dataset: JpegBytes, workers: int, batch_size: int) -> float:
    """Wall-clock images/s of a DataLoader with `workers` processes (the trial's own loader)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    iter(loader)  # start the workers before timing
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return round(count / (time.perf_counter() - start), 1)


def cores_needed(rate_per_core: float) -> dict[str, dict[str, float]]:
    """Decode cores (+1 for the training process) to feed each published GPU throughput."""
    needs: dict[str, dict[str, float]] = {}
    for setting, resnet in RESNET50.items():
        for model, images in (("resnet50", resnet), ("vgg16 (estimate)",
                                                     resnet * VGG16_PER_RESNET50)):
            needs[f"{model}, {setting}"] = {
                "gpu_images_per_s": round(images), "cores": math.ceil(images / rate_per_core) + 1}
    return needs


def measure(dataset_name: str, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    sizes = image_sizes(dataset_name, args.images, args.seed)
    blobs = [fabricate_jpeg(w, h, rng) for w, h in sizes]
    pixels = sum(w * h for w, h in sizes)
    result: dict = {
        "images": len(sizes), "mean_pixels": round(pixels / len(sizes)),
        "median_size": [int(np.median([s[0] for s in sizes])),
                        int(np.median([s[1] for s in sizes]))],
        "jpeg_bits_per_pixel": round(8 * sum(map(len, blobs)) / pixels, 2),
        "mean_kb": round(sum(map(len, blobs)) / len(blobs) / 1024, 1),
        "decoders": {},
    }
    for decoder in ("pillow", "decode_jpeg"):
        dataset = JpegBytes(blobs, decoder)
        core = per_core(dataset, args.repeats)
        result["decoders"][decoder] = {
            **core,
            "dataloader_images_per_s": {str(n): loader_rate(dataset, n, args.batch_size)
                                        for n in range(1, args.workers + 1)},
            "cores_per_trial": cores_needed(core["images_per_cpu_second"]),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images per dataset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers up to this many (default: this machine's CPUs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per core: one decode + transform thread
    results = {name: measure(name, args) for name in SIZE_FILES}
    write_result(args.json, "input_pipeline", {
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "pillow": Image.__version__, "jpeg_quality": QUALITY, "cpu_count": os.cpu_count(),
        "load_average": load_average(), "datasets": results,
        "published_resnet50_images_per_s": RESNET50,
        "vgg16_per_resnet50": round(VGG16_PER_RESNET50, 3),
    })


if __name__ == "__main__":
    main()
