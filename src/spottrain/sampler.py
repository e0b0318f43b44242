"""Which samples each rank trains on at each step: a pure function of (seed, step).

Every optimizer step consumes exactly one global batch (per_gpu × grad_accum × world) from a per-epoch
permutation of that epoch's examples (the task's `training_indices(epoch)`, the same length every epoch),
dropping the epoch's remainder. So resuming at step s jumps straight to its samples, replays nothing, and sees
exactly what an uninterrupted run would.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np

from spottrain_contract.errors import ConfigurationError


class StepSampler:
    def __init__(self, examples_of_epoch: Callable[[int], Sequence[int]], *, per_gpu: int, grad_accum: int,
                 world_size: int, rank: int, seed: int):
        self.examples_of_epoch = examples_of_epoch
        self.per_gpu, self.grad_accum, self.world_size, self.rank, self.seed = (
            per_gpu, grad_accum, world_size, rank, seed)
        self.global_batch = per_gpu * grad_accum * world_size
        self.epoch_size = len(self._examples(0))
        self.steps_per_epoch = self.epoch_size // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigurationError(f"train.batch: a global batch of {self.global_batch} samples "
                             f"(per_gpu × grad_accum × {world_size} ranks) exceeds the {self.epoch_size} "
                             f"training samples")

    def total_steps(self, epochs: float, max_steps: Optional[int]) -> int:
        by_epochs = max(1, math.ceil(epochs * self.steps_per_epoch))
        return min(by_epochs, max_steps) if max_steps else by_epochs

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    @lru_cache(maxsize=2)
    def _examples(self, epoch: int) -> np.ndarray:
        examples = np.asarray(self.examples_of_epoch(epoch), dtype=np.int64)
        if epoch and len(examples) != self.epoch_size:
            raise RuntimeError(f"the task's epoch {epoch} has {len(examples)} examples, epoch 0 had "
                               f"{self.epoch_size}: every epoch must be as long")
        return examples

    @lru_cache(maxsize=2)
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.epoch_size)

    def micro_batches(self, step: int) -> list[list[int]]:
        """`grad_accum` lists of `per_gpu` example indices: this rank's share of step `step` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        chunk = self._order(epoch)[within * self.global_batch:(within + 1) * self.global_batch]
        examples = self._examples(epoch)
        batches = []
        for micro in range(self.grad_accum):
            start = (micro * self.world_size + self.rank) * self.per_gpu
            batches.append([int(examples[i]) for i in chunk[start:start + self.per_gpu]])
        return batches
