"""Batches of N classes x S images per class, as MinMaxCAM's set-based losses need."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class ClassSetBatchSampler(Sampler[list[int]]):
    """Each batch holds `set_size` images of each of `classes_per_batch` distinct classes.

    Within a class, images are drawn from a reshuffled queue so every image is seen before
    any repeats. Deterministic for (seed, epoch); call `set_epoch` between epochs.
    """

    def __init__(
        self,
        labels: Sequence[int],
        classes_per_batch: int,
        set_size: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ):
        if set_size < 2:
            raise ValueError(f"set_size must be >= 2 (pairs within a set), got {set_size}")
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_class.setdefault(int(label), []).append(index)
        if classes_per_batch > len(by_class):
            raise ValueError(
                f"classes_per_batch={classes_per_batch} exceeds the {len(by_class)} classes present"
            )
        self.by_class = {c: np.asarray(v) for c, v in sorted(by_class.items())}
        self.classes_per_batch = classes_per_batch
        self.set_size = set_size
        self.seed = seed
        self.epoch = 0
        batch = classes_per_batch * set_size
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.array(list(self.by_class))
        queues = {c: list(rng.permutation(v)) for c, v in self.by_class.items()}
        for _ in range(self.batches_per_epoch):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.classes_per_batch, replace=False):
                for _ in range(self.set_size):
                    if not queues[c]:
                        queues[c] = list(rng.permutation(self.by_class[c]))
                    batch.append(int(queues[c].pop()))
            yield batch
