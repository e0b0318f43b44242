"""Training tasks: what a stage trains, on the one runtime (loop, DeepSpeed, checkpoints, tracking, preemption).

A task is looked up by the recipe's `task` in the contract's table (`spottrain_contract.tasks`), which names its
implementation; the trainer calls it with the validated `train` settings (common keys plus the task's options),
the process's ranks and the run's files (`RunFiles`: what the task keeps with the run, like a data split). The
loop calls only what `Task` declares; a task that keeps state between steps (running statistics, say) is also
`Stateful` and is saved in every checkpoint; one that must keep small modules beside each checkpoint (the critic's
value head) also implements `CheckpointExtras`; one whose weights can be judged on test data or used to predict
(the ranker) is also `Evaluable` and `Predicts`; one judged again once training ends (the VLM task's generation)
is `JudgedAfterTraining`. Shared math lives in plain modules that tasks import, not in a base class.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch

from spottrain.run_files import RunFiles
from spottrain.runtime import Ranks
from spottrain_contract.plugins import load_object
from spottrain_contract.schema import Recipe
from spottrain_contract.tasks import TASKS


LEARNING_RATE_METRIC = "train/learning_rate"  # what a task logs its learning rate as, unless it names another
NO_RUN_TAGS: Mapping[str, str] = MappingProxyType({})


class Batch(Protocol):
    def to(self, device: torch.device) -> "Batch": ...


class Task(Protocol):
    learning_rate_metric: str
    """The metric the loop logs the learning rate as: LEARNING_RATE_METRIC, unless the task's dashboards know it by
    another name (the ranker's)."""

    run_tags: Mapping[str, str]
    """Tags of the MLflow run, read once the model is built (the LoRA task's parameter counts); NO_RUN_TAGS for most
    tasks."""

    def build_model(self) -> torch.nn.Module:
        """The module DeepSpeed trains (built after the global seed is set: the same weights on every rank)."""

    def training_indices(self, epoch: int) -> Sequence[int]:
        """The training examples of epoch `epoch` (0-based), which the step sampler shuffles into global batches:
        a pure function of the settings and the epoch, as many every epoch. Most tasks return the same indices
        every epoch; one that draws its examples (the ranker's pairs) draws them here."""

    def batch(self, indices: list[int]) -> Batch:
        """The training micro-batch of these examples (as `training_indices` returned them), on the CPU."""

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to backpropagate and the metrics to log (averaged over micro-batches and ranks)."""

    def evaluate(self, model) -> dict[str, float]:
        """Validation metrics, the same on every rank (every rank calls it; it may generate)."""

    def export(self, model, out_dir: Path) -> None:
        """The final weights as a directory others load (every rank calls it; rank 0 writes `out_dir`)."""


@runtime_checkable
class CheckpointExtras(Protocol):
    def checkpoint_modules(self, model) -> dict[str, torch.nn.Module]:
        """Small modules stored beside every checkpoint as NAME.safetensors (what a later stage, an evaluation
        or a prediction loads without DeepSpeed)."""


@runtime_checkable
class Evaluable(Protocol):
    """A task whose trained weights `launch eval` judges on its held-out test data."""

    def inference_model(self) -> torch.nn.Module:
        """The model as built for inference (weights then loaded from `checkpoint_modules`)."""

    def checkpoint_modules(self, model) -> dict[str, torch.nn.Module]: ...

    def test_metrics(self, model) -> dict[str, float]:
        """Metrics on the run's test data (one process, the model in eval mode)."""


@runtime_checkable
class JudgedAfterTraining(Protocol):
    """A task whose final weights are judged once more at the end of training (the VLM task generates answers
    to its test rows). The trainer logs the metrics, publishes what it wrote with the final export and logs the
    files named in `mlflow_artifacts` to MLflow."""

    mlflow_artifacts: tuple[str, ...]

    def after_training(self, model, out_dir: Path) -> dict[str, float]:
        """Metrics (on rank 0; every rank calls it and may generate); files it writes go into `out_dir`."""


@runtime_checkable
class JudgesAdapters(Protocol):
    """A task that judges adapter weights trained anywhere (`launch eval --lora-path`), not only its own runs."""

    def adapter_model(self, adapter: str) -> torch.nn.Module:
        """The task's base model with the adapter at `adapter` (a path peft loads) applied, for inference."""

    def judge(self, model, out_dir: Path) -> dict[str, float]:
        """Test metrics of `model` (one process), with what explains them written into `out_dir`."""


@runtime_checkable
class Predicts(Protocol):
    def predict(self, model, inputs: Sequence[str], out: Optional[Path]) -> str:
        """`launch predict`'s answer for these inputs (also written to `out` when given)."""


def create_task(recipe: Recipe, ranks: Ranks, files: Optional[RunFiles]) -> Task:
    """`files` is None only outside a run (a benchmark's bare loop), for tasks that keep none."""
    implementation = load_object(TASKS.get(recipe.task).implementation)
    return _with_declared_defaults(implementation(recipe.train, ranks, files))


_DECLARED_LATER = {"learning_rate_metric": LEARNING_RATE_METRIC, "run_tags": NO_RUN_TAGS}


def _with_declared_defaults(task: Task) -> Task:
    """A plug-in task written before `Task` declared `learning_rate_metric` and `run_tags` (the tests' toy task)
    gets their documented defaults, so that the trainer reads every member from the protocol. The built-in tasks
    declare both."""
    for name, default in _DECLARED_LATER.items():
        if not hasattr(task, name):
            setattr(task, name, default)
    return task


__all__ = ["LEARNING_RATE_METRIC", "NO_RUN_TAGS", "Batch", "CheckpointExtras", "Evaluable", "JudgedAfterTraining",
           "JudgesAdapters", "Predicts", "Task", "create_task"]
