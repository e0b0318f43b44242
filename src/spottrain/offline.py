"""A finished (or running) run's weights put to use without DeepSpeed: `python -m spottrain eval` and
`python -m spottrain predict`, which `launch eval` and `launch predict` run on a target.

The weights are the modules a task stores beside every checkpoint (`CheckpointExtras`), loaded into the model
the task builds for inference, so any checkpoint loads on one process whatever world size and ZeRO stage
trained it. The data split is the one the run stored (`RunFiles`, read only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from spottrain import runtime
from spottrain.run_files import RunFiles
from spottrain.tasks import Evaluable, JudgesAdapters, Predicts, create_task
from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import LoadedRecipe
from spottrain_contract.store import open_store, with_retries


def resolve_step(stored: StoredRun, checkpoint: str) -> int:
    """`best` (BEST.json), `last` (the newest complete checkpoint) or a step number that is complete."""
    complete = stored.complete_steps()
    if not complete:
        raise ConfigurationError(f"run {stored.run_id} has no complete checkpoint in {stored.store.uri}")
    if checkpoint == "best":
        best = stored.best_step()
        if best is None:
            raise ConfigurationError(f"--checkpoint best: run {stored.run_id} has no best checkpoint yet "
                                     f"(no evaluation): pass --checkpoint last")
        return best
    if checkpoint == "last":
        return complete[-1]
    if checkpoint.isdigit() and int(checkpoint) in complete:
        return int(checkpoint)
    raise ConfigurationError(f"--checkpoint: expected best, last or a complete step of run {stored.run_id} "
                             f"({', '.join(map(str, complete[-5:]))}), got {checkpoint!r}")


class RestoredRun:
    """The task and model of `run_id` with the weights of one of its checkpoints."""

    def __init__(self, loaded: LoadedRecipe, run_id: str, checkpoint: str):
        cfg = loaded.recipe.train
        self.store = open_store(cfg.checkpoint.uri, cfg.checkpoint.endpoint_url)
        self.run_id = run_id
        stored = StoredRun(self.store, run_id)
        self.step = resolve_step(stored, checkpoint)
        runtime.seed_everything(cfg.seed)
        self.task = create_task(loaded.recipe, runtime.Ranks(0, 0, 1), RunFiles(self.store, run_id, writable=False))
        if not isinstance(self.task, Evaluable):
            raise ConfigurationError(f"task {loaded.recipe.task}: no test evaluation or prediction (it is not "
                                     f"Evaluable: inference_model, checkpoint_modules, test_metrics)")
        self.model = self.task.inference_model()
        self._load_weights(layout.step_prefix(run_id, self.step))
        self.model.to(runtime.device()).eval()

    def _load_weights(self, prefix: str) -> None:
        from safetensors.torch import load

        for name, module in self.task.checkpoint_modules(self.model).items():
            key = f"{prefix}{name}.safetensors"
            data = with_retries(lambda: self.store.get_bytes(key), what=f"read {key}")
            if data is None:
                raise ConfigurationError(f"{self.store.uri}/{key}: missing (is run {self.run_id} from this task?)")
            module.load_state_dict(load(data))

    @property
    def where(self) -> str:
        return f"{self.store.uri}/{self.run_id}/{layout.step_tag(self.step)}"


def evaluate(loaded: LoadedRecipe, run_id: str, checkpoint: str) -> dict[str, float]:
    """The task's test metrics for one checkpoint; printed, and kept in the store beside the run."""
    restored = RestoredRun(loaded, run_id, checkpoint)
    judged = getattr(restored.task, "test_data", None)  # what a task names its test data (several sets may be)
    print(f"run {run_id}: evaluating {restored.where} ({checkpoint})" + (f" on {judged}" if judged else ""),
          flush=True)
    with torch.no_grad():
        metrics = restored.task.test_metrics(restored.model)
    key = f"{run_id}/{layout.EVALUATIONS}/{layout.step_tag(restored.step)}.json"
    record = {"run_id": run_id, "step": restored.step, "checkpoint": checkpoint, "metrics": metrics,
              **({"test_data": judged} if judged else {})}
    with_retries(lambda: restored.store.put_bytes(json.dumps(record, indent=1).encode(), key), what=f"write {key}")
    _print_metrics(metrics)
    print(f"saved {restored.store.uri}/{key}", flush=True)
    return metrics


def evaluate_adapter(loaded: LoadedRecipe, adapter: str, out_dir: Path) -> dict[str, float]:
    """An adapter trained anywhere, on the recipe's base model and test data (`launch eval --lora-path`): the
    metrics printed, and what the task writes to explain them in `out_dir`."""
    runtime.seed_everything(loaded.recipe.train.seed)
    task = create_task(loaded.recipe, runtime.Ranks(0, 0, 1), None)
    if not isinstance(task, JudgesAdapters):
        raise ConfigurationError(f"task {loaded.recipe.task} does not judge adapters (--lora-path)")
    print(f"evaluating adapter {adapter} on {loaded.recipe.train.model.id}", flush=True)
    metrics = task.judge(task.adapter_model(adapter), out_dir)
    _print_metrics(metrics)
    print(f"wrote {out_dir}", flush=True)
    return metrics


def _print_metrics(metrics: dict[str, float]) -> None:
    width = max(map(len, metrics))
    for name, value in metrics.items():
        shown = f"{int(value)}" if name.endswith(("total_pairs", "correct_predictions", "count")) else f"{value:.4f}"
        print(f"{name:<{width}}  {shown}")


def predict(loaded: LoadedRecipe, run_id: str, checkpoint: str, inputs: Sequence[str], out: Optional[Path]) -> str:
    restored = RestoredRun(loaded, run_id, checkpoint)
    print(f"run {run_id}: predicting with {restored.where} ({checkpoint})", file=sys.stderr, flush=True)
    if not isinstance(restored.task, Predicts):
        raise ConfigurationError(f"task {loaded.recipe.task} has no prediction")
    text = restored.task.predict(restored.model, inputs, out)
    if out is None:
        print(text, end="", flush=True)
    else:
        print(f"wrote {out}", file=sys.stderr, flush=True)
    return text
