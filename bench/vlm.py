"""The VLM LoRA task's speed: the trainer's step time beside a plain peft + transformers loop on the same model,
batches and optimizer, and the evaluation's generation throughput.

    .venv/bin/python bench/vlm.py [--model-id tiny:llava] [--steps 30] [--warmup 5] [--json FILE]
    python3 bench/vlm.py --model-id llava-hf/llava-1.5-7b-hf --override train.batch.per_gpu=1 \\
        --override train.batch.grad_accum=8                               # on a GPU: a published model

Both loops train the `vlm_ablation` recipe's local profile (the generated image-text set) with `--model-id` and
`--override`s, on one process:
  trainer   `python -m spottrain train` under torchrun (DeepSpeed, checkpoints off, tracking, prefetch): the
            wall-clock period between logged steps (MLflow timestamps), so everything the loop does counts
  plain     this process: the task's own model (base + peft adapters) and micro-batches, torch AdamW over the
            adapter, clip, step: no DeepSpeed, tracking or checkpoints
  generate  the evaluation after training: the test rows answered by generate() in `evaluation.batch_size`
            batches (one process), rows and new tokens per second
The ratio plain/trainer is what the runtime costs; on CPU with a tiny model it is mostly fixed per-step work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import PROJECT, TrainerRun, median, table

RECIPE = "recipes/vlm_ablation.yaml"
FAR = 10**6


@dataclass
class VlmRun(TrainerRun):
    """The trainer on the VLM recipe's local profile."""

    def command(self) -> list[str]:
        overrides = [f"train.checkpoint.uri={self.store}", f"train.checkpoint.local_dir={self.local_dir}",
                     *self.overrides]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                "-m", "spottrain", "train", "--recipe", RECIPE, "--profile", "local",
                *[arg for o in overrides for arg in ("--override", o)]]

    def env(self) -> dict[str, str]:
        env = super().env()
        if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
            del env["CUDA_VISIBLE_DEVICES"]  # the GPU, where there is one
        return env


def trainer_step_seconds(work: Path, overrides: list[str], warmup: int, steps: int) -> float:
    run = VlmRun(run_id="vlm-bench", root=work / "trainer", store=str(work / "trainer" / "store"),
                 local_dir=work / "trainer" / "local", overrides=overrides, nproc=1)
    last = warmup + steps + 1
    run.run_until(lambda: len(_points(run)) >= last, timeout=900, poll=0.5)
    stamps = [stamp for step, _, stamp in _points(run) if warmup < step <= last]
    return median([(b - a) / 1000 for a, b in zip(stamps, stamps[1:])])


def _points(run: VlmRun) -> list:
    try:
        return run.metric_points("perf/step_seconds")
    except Exception:  # no MLflow run yet
        return []


def plain_loop(loaded, warmup: int, steps: int) -> tuple[float, object]:
    """Median seconds per optimizer step of peft + transformers + torch AdamW on the task's batches; the task."""
    import torch

    from spottrain import runtime
    from spottrain.sampler import StepSampler
    from spottrain.tasks import create_task

    cfg = loaded.recipe.train
    runtime.seed_everything(cfg.seed)
    task = create_task(loaded.recipe, runtime.Ranks(0, 0, 1), None)
    model = task.build_model().to(runtime.device())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    sampler = StepSampler(task.training_indices, per_gpu=cfg.batch.per_gpu, grad_accum=cfg.batch.grad_accum,
                          world_size=1, rank=0, seed=cfg.seed)
    ends = []
    for step in range(warmup + steps + 1):
        for indices in sampler.micro_batches(step):
            batch = task.batch(indices).to(runtime.device())
            (model(**batch.inputs).loss / cfg.batch.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return median([b - a for a, b in zip(ends[warmup:], ends[warmup + 1:])]), (task, model)


def generation(task, model, work: Path) -> dict[str, float]:
    started = time.perf_counter()
    task.judge(model, work / "generated")
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (work / "generated" / "predictions.jsonl").read_text().splitlines()]
    tokens = sum(len(task.processor.tokenizer(r["prediction"], add_special_tokens=False)["input_ids"]) for r in rows)
    return {"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds, "new_tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default="tiny:llava")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from spottrain_contract.recipe import load_recipe

    work = Path(tempfile.mkdtemp(prefix="bench-vlm-"))
    overrides = [f"train.model.id={args.model_id}", "resources.gpus=1", f"train.max_steps={FAR}", "train.epochs=1000",
                 f"train.checkpoint.every_steps={FAR}", f"train.eval.every_steps={FAR}", "train.log_every_steps=1",
                 f"train.data.generated_dir={work / 'data'}", *args.override]
    loaded = load_recipe(RECIPE, project_dir=PROJECT, profile="local",
                         overrides=[*overrides, f"train.checkpoint.local_dir={work / 'plain'}"])
    batch = loaded.recipe.train.batch
    trainer = trainer_step_seconds(work, overrides, args.warmup, args.steps)
    plain, (task, model) = plain_loop(loaded, args.warmup, args.steps)
    generated = generation(task, model, work)
    examples = batch.per_gpu * batch.grad_accum
    figures = {"model": args.model_id, "examples_per_step": examples, "trainer_step_s": trainer, "plain_step_s": plain,
               "plain_over_trainer": plain / trainer, "generation": generated}
    print(table(["loop", "step", "examples/s"],
                [["trainer (DeepSpeed, tracking, prefetch)", f"{trainer * 1000:.1f} ms", f"{examples / trainer:.1f}"],
                 ["plain peft + transformers + AdamW", f"{plain * 1000:.1f} ms", f"{examples / plain:.1f}"]]))
    print(f"plain / trainer step time: {plain / trainer:.2f}")
    print(f"generation: {generated['rows']} rows in {generated['seconds']:.2f} s, {generated['rows_per_s']:.1f} rows/s, "
          f"{generated['new_tokens_per_s']:.0f} new tokens/s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
