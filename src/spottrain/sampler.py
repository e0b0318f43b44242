"""Which samples each rank trains on at each step: a pure function of (seed, step).

Every optimizer step consumes exactly one global batch (per_gpu × grad_accum × world) from a per-epoch
permutation, dropping the epoch's remainder. So resuming at step s jumps straight to its samples, replays
nothing, and sees exactly what an uninterrupted run would.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np

from spottrain_contract.errors import ConfigurationError


class StepSampler:
    def __init__(self, indices: list[int], *, per_gpu: int, grad_accum: int, world_size: int, rank: int,
                 seed: int):
        self.indices = list(indices)
        self.per_gpu, self.grad_accum, self.world_size, self.rank, self.seed = (
            per_gpu, grad_accum, world_size, rank, seed)
        self.global_batch = per_gpu * grad_accum * world_size
        self.steps_per_epoch = len(self.indices) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigurationError(f"train.batch: a global batch of {self.global_batch} samples "
                             f"(per_gpu × grad_accum × {world_size} ranks) exceeds the {len(self.indices)} "
                             f"training samples")

    def total_steps(self, epochs: float, max_steps: Optional[int]) -> int:
        by_epochs = max(1, math.ceil(epochs * self.steps_per_epoch))
        return min(by_epochs, max_steps) if max_steps else by_epochs

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    @lru_cache(maxsize=2)
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))

    def micro_batches(self, step: int) -> list[list[int]]:
        """`grad_accum` lists of `per_gpu` dataset indices: this rank's share of step `step` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        chunk = self._order(epoch)[within * self.global_batch:(within + 1) * self.global_batch]
        batches = []
        for micro in range(self.grad_accum):
            start = (micro * self.world_size + self.rank) * self.per_gpu
            batches.append([self.indices[i] for i in chunk[start:start + self.per_gpu]])
        return batches
