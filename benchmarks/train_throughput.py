"""Training throughput (images/s) of one method's step: plain fp32 against mixed precision,
channels-last, and both, on the trial runner's own code path (Method.inputs, Method.autocast,
Method.train_batch). Inputs are random tensors already in memory, so the number is the
model's, not the data loader's.

On a GPU (the issue's measurement): .venv/bin/python benchmarks/train_throughput.py \
    --backbones vgg16 resnet50 --size 224 --batch-size 64 \
    --json benchmarks/results/train_throughput.json
On this CPU, as a check that it runs: --backbones tiny --size 64 --steps 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from wsol.methods import build_method
from wsol.trial.config import TrialConfig
from wsol.trial.runner import resolve_device

MODES = {
    "plain": {"amp": False, "channels_last": False},
    "amp": {"amp": True, "channels_last": False},
    "channels_last": {"amp": False, "channels_last": True},
    "amp+channels_last": {"amp": True, "channels_last": True},
}


def images_per_second(backbone: str, mode: dict[str, bool], args: argparse.Namespace,
                      device: torch.device) -> float:
    config = TrialConfig(method=args.method, backbone=backbone, weights=None, crop=args.size,
                         batch_size=args.batch_size, device=str(device), **mode)
    method = build_method(config, 1000, device)
    method.model.train()
    images = torch.randn(args.batch_size, 3, args.size, args.size)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)

    def step() -> None:
        with method.autocast():
            method.train_batch(method.inputs(images), labels, 0)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--method", default="cam")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {
        backbone: {name: images_per_second(backbone, mode, args, device)
                   for name, mode in MODES.items()}
        for backbone in args.backbones
    }
    for per_mode in results.values():
        per_mode["speedup_amp+channels_last"] = per_mode["amp+channels_last"] / per_mode["plain"]
    write_result(args.json, "train_throughput", {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "method": args.method, "size": args.size, "batch_size": args.batch_size,
        "steps": args.steps, "images_per_second": results,
    })


if __name__ == "__main__":
    main()
