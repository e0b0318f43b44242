"""Micro-batches ready before the loop asks: built on a background thread a step or more ahead, in page-locked
memory on a GPU, so each step only queues non-blocking copies and the GPU never waits for the host (a copy from
ordinary memory makes the host wait for every kernel queued before it)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import torch

from spottrain.sampler import StepSampler


@runtime_checkable
class PinnableBatch(Protocol):
    """A batch that can live in page-locked memory and be copied without blocking (optional for a task)."""

    def pin_memory(self) -> "PinnableBatch": ...
    def to(self, device: torch.device, non_blocking: bool = False) -> "PinnableBatch": ...


class StepBatches:
    def __init__(self, task, sampler: StepSampler, device: torch.device, total_steps: int, ahead: int):
        self.task, self.sampler, self.device = task, sampler, device
        self.total_steps, self.ahead = total_steps, ahead
        self.pin = device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") if ahead else None
        self._coming: dict[int, Future] = {}

    def of_step(self, step: int) -> list:
        """The micro-batches of optimizer step `step` (0-based), on the device; queues the next `ahead` steps'."""
        if self._pool is None:
            return [self._to_device(batch) for batch in self._build(step)]
        for coming in range(step, min(step + self.ahead + 1, self.total_steps)):
            if coming not in self._coming:
                self._coming[coming] = self._pool.submit(self._build, coming)
        return [self._to_device(batch) for batch in self._coming.pop(step).result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _build(self, step: int) -> list:
        batches = [self.task.batch(indices) for indices in self.sampler.micro_batches(step)]
        return [batch.pin_memory() if self.pin and isinstance(batch, PinnableBatch) else batch for batch in batches]

    def _to_device(self, batch):
        if self.pin and isinstance(batch, PinnableBatch):
            return batch.to(self.device, non_blocking=True)
        return batch.to(self.device)
