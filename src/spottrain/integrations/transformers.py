"""Spot-safe Hugging Face Trainer: progress to the run's MLflow run, every checkpoint Trainer saves made durable,
and a stop request (a preemption notice) answered by one more checkpoint and a normal return from train().

Usage (the line a script adds, plus where to save and what to resume from):

    from spottrain.integrations import script as spottrain
    from spottrain.integrations.transformers import SpottrainCallback

    args = TrainingArguments(output_dir=str(spottrain.checkpoint_dir("out")), save_strategy="steps", ...)
    trainer = Trainer(..., args=args, callbacks=[SpottrainCallback()])
    trainer.train(resume_from_checkpoint=spottrain.resume_dir())

How it fits Trainer's loop (transformers 5.x `_inner_training_loop`): after each optimizer step Trainer calls
`on_step_end` (DefaultFlowCallback first, then this one), then logs (`on_log`), evaluates, and saves
(`_save_checkpoint`, then `on_save` on every rank). A stop seen at `on_step_end` therefore sets should_save and
should_training_stop, and that same step is logged, saved and made known before train() returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from spottrain.integrations import script


class SpottrainCallback(TrainerCallback):
    """Reports Trainer's logs as progress (`loss` as `train/loss`, `eval_loss` as `eval/loss`), stops on a
    request after saving, and stages each saved `checkpoint-N` with the metric_for_best_model of that step."""

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        script.attach("transformers")

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        script.report(state.global_step, state.max_steps, **metric_names(logs or {}))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if _any_rank(script.should_stop(), args.device):
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # every rank writes its own rng_state_N.pth before on_save: wait for all of them before staging
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        script.checkpoint_saved(checkpoint, state.global_step, metric=best_metric_at(args, state))


def trained_to_the_end(checkpoint: Optional[Path], max_steps: int) -> bool:
    """Whether the checkpoint to resume from already holds `max_steps` steps (the attempt before was killed after
    its last save). Skip train() then: Trainer (transformers 5.x) resumed at max_steps trains one step past it
    before it checks, and the run would end with other weights than an uninterrupted one."""
    if checkpoint is None or not (Path(checkpoint) / TRAINER_STATE_NAME).is_file():
        return False
    return TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).global_step >= max_steps


def metric_names(logs: dict) -> dict[str, float]:
    """Trainer's log keys as the run shows them: eval_* under eval/, the rest under train/ (numbers only)."""
    named = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.startswith("eval_"):
            named[f"eval/{key.removeprefix('eval_')}"] = value
        else:
            named[f"train/{key}"] = value  # the end-of-training summary keeps its own train_loss, train_runtime
    return named


def best_metric_at(args: TrainingArguments, state: TrainerState) -> Optional[float]:
    """The metric_for_best_model evaluated at this step, or None: a checkpoint saved between evaluations (a stop)
    must not inherit the value of older weights."""
    if not args.metric_for_best_model:
        return None
    key = args.metric_for_best_model
    key = key if key.startswith("eval_") else f"eval_{key}"
    for entry in reversed(state.log_history):
        if entry.get("step") != state.global_step:
            break
        if key in entry:
            return float(entry[key])
    return None


def _any_rank(flag: bool, device) -> bool:
    """True if any rank saw the stop: every rank must save and stop at the same step."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    agreed = torch.tensor([int(flag)], device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())
