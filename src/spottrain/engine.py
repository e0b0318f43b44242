"""The DeepSpeed engine for a recipe: ZeRO stage, precision, accumulation and clipping from `train`, a client
torch AdamW (torch's fused kernel on a GPU; nothing for DeepSpeed to compile) and a warmup + decay schedule that
DeepSpeed steps and checkpoints."""

from __future__ import annotations

import math

import torch


class WarmupDecay:
    """LR multiplier: linear warmup, then cosine/linear decay to `min_ratio`, or constant. A plain object
    (not a lambda) so the scheduler's state round-trips through a checkpoint."""

    def __init__(self, total_steps: int, warmup_ratio: float, decay: str, min_ratio: float):
        self.total_steps, self.decay, self.min_ratio = total_steps, decay, min_ratio
        self.warmup_steps = int(round(warmup_ratio * total_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_ratio + (1 - self.min_ratio) * shape


def deepspeed_config(train, world_size: int, load_universal: bool = False) -> dict:
    """`load_universal`: the engine will resume from a checkpoint converted to DeepSpeed's universal format (one
    written by another world size, see `elastic`)."""
    precision = train.deepspeed.precision
    return {
        "checkpoint": {"load_universal": load_universal},
        "train_micro_batch_size_per_gpu": train.batch.per_gpu,
        "gradient_accumulation_steps": train.batch.grad_accum,
        "train_batch_size": train.batch.per_gpu * train.batch.grad_accum * world_size,
        "gradient_clipping": train.optim.grad_clip,
        "zero_optimization": {"stage": train.deepspeed.zero_stage, "elastic_checkpoint": False},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "auto_cast": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def build_engine(model: torch.nn.Module, train, world_size: int, total_steps: int, load_universal: bool = False):
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    # Fused: one kernel for every parameter's update on a GPU (DeepSpeed steps it on the fp32 master weights).
    fused = train.performance.fused_optimizer and torch.cuda.is_available()
    optimizer = torch.optim.AdamW(trainable, lr=train.optim.lr, betas=train.optim.betas,
                                  weight_decay=train.optim.weight_decay, fused=fused or None)
    schedule = WarmupDecay(total_steps, train.schedule.warmup_ratio, train.schedule.decay,
                           train.schedule.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(train, world_size, load_universal))
    return engine


def consolidated_state_dict(module: torch.nn.Module, zero_stage: int, is_main: bool):
    """The full state of `module` on rank 0 (None elsewhere). Every rank must call it: under ZeRO-3 the
    parameters are gathered from their partitions first."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), enabled=zero_stage == 3):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if is_main else None
