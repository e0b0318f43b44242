"""Training tasks: what a stage trains, on the one runtime (loop, DeepSpeed, checkpoints, tracking, preemption).

A task is looked up by the recipe's `task` in the contract's table (`spottrain_contract.tasks`), which names its
implementation; the trainer calls it with the validated `train` settings (common keys plus the task's options)
and the process's ranks. The loop calls only what `Task` declares; a task that keeps state between steps (running
statistics, say) is also `Stateful` and is saved in every checkpoint; one that must keep small modules beside
each checkpoint (the critic's value head) also implements `CheckpointExtras`. Shared math lives in plain modules
that tasks import, not in a base class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from spottrain.runtime import Ranks
from spottrain_contract.plugins import load_object
from spottrain_contract.schema import Recipe
from spottrain_contract.tasks import TASKS


class Batch(Protocol):
    def to(self, device: torch.device) -> "Batch": ...


class Task(Protocol):
    def build_model(self) -> torch.nn.Module:
        """The module DeepSpeed trains (built after the global seed is set: the same weights on every rank)."""

    def training_indices(self) -> list[int]:
        """Indices of the training examples the step sampler draws global batches from."""

    def batch(self, indices: list[int]) -> Batch:
        """The training micro-batch of these examples, on the CPU."""

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to backpropagate and the metrics to log (averaged over micro-batches and ranks)."""

    def evaluate(self, model) -> dict[str, float]:
        """Validation metrics, the same on every rank (every rank calls it; it may generate)."""

    def export(self, model, out_dir: Path) -> None:
        """The final weights as a directory others load (every rank calls it; rank 0 writes `out_dir`)."""


@runtime_checkable
class CheckpointExtras(Protocol):
    def checkpoint_modules(self, model) -> dict[str, torch.nn.Module]:
        """Small modules stored beside every checkpoint as NAME.safetensors."""


def create_task(recipe: Recipe, ranks: Ranks) -> Task:
    implementation = load_object(TASKS.get(recipe.task).implementation)
    return implementation(recipe.train, ranks)


__all__ = ["Batch", "CheckpointExtras", "Task", "create_task"]
