"""Step-time overhead of the whole spottrain runtime vs. a bare DeepSpeed loop on the same model and batches.

    .venv/bin/python bench/runtime_overhead.py [--steps 60] [--warmup 5] [--repeats 4] [--nproc 2]

Alternates, `--repeats` times, two torchrun jobs with the same ranks, recipe (baseline, `local` profile, micro
model) and DeepSpeed config (spottrain.engine.build_engine):
  bare     this file with --worker: the same model, the same batches (spottrain.data + StepSampler) and per
           optimizer step only forward + backward + engine.step over grad_accum micro-batches; no
           checkpointing, logging, evaluation, progress file or preemption check
  trainer  `python -m spottrain train` with checkpoint.every_steps and eval.every_steps past max_steps, so
           both do the same training work until the last step
Each run waits for an idle machine and is repeated (up to 3 times) if other processes used more than
--max-other-cores cores on average while it ran. Compares, over steps after `--warmup`:
  step    median of the trainer's perf/step_seconds (rank 0: the step, the progress file and the metric
          all-reduce; the preemption-flag all-reduce comes after it) vs. the bare loop's step time
  period  median time between consecutive steps (the trainer's from its MLflow metric timestamps, ms: the
          whole loop iteration, preemption all-reduce included) vs. the bare loop's
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _harness import PROJECT, TrainerRun, add_run_options, median, table, until_quiet


def worker(out: Path, overrides: list[str]) -> None:
    """The bare loop, one process per rank under torchrun."""
    import deepspeed
    import torch.distributed as dist

    from spottrain import runtime
    from spottrain.engine import build_engine
    from spottrain.sampler import StepSampler
    from spottrain.tasks import create_task
    from spottrain_contract.recipe import load_recipe

    loaded = load_recipe("baseline", project_dir=PROJECT, profile="local", overrides=overrides)
    cfg = loaded.recipe.train
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    runtime.seed_everything(cfg.seed)
    task = create_task(loaded.recipe, runtime.Ranks(rank, rank, world), files=None)  # baseline: no run files
    sampler = StepSampler(task.training_indices, per_gpu=cfg.batch.per_gpu, grad_accum=cfg.batch.grad_accum,
                          world_size=world, rank=rank, seed=cfg.seed)
    total = sampler.total_steps(cfg.epochs, cfg.max_steps)
    engine = build_engine(task.build_model(), cfg, world, total)

    durations, ends = [], []
    for step in range(total):
        started = time.perf_counter()
        for indices in sampler.micro_batches(step):
            loss, _ = task.loss(engine, task.batch(indices))
            engine.backward(loss)
            engine.step()
        ends.append(time.perf_counter())
        durations.append(ends[-1] - started)
    if rank == 0:
        out.write_text(json.dumps({"step_seconds": durations, "ends": ends}))


class BareRun(TrainerRun):
    """This file's --worker under torchrun, in the trainer's environment."""

    def command(self) -> list[str]:
        overrides = [f"train.checkpoint.uri={self.store}", f"train.checkpoint.local_dir={self.local_dir}",
                     *self.overrides]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                str(Path(__file__).resolve()), "--worker", str(self.root / "bare.json"),
                *[arg for o in overrides for arg in ("--override", o)]]

    def times(self, warmup: int) -> tuple[list[float], list[float]]:
        data = json.loads((self.root / "bare.json").read_text())
        ends = data["ends"]
        return data["step_seconds"][warmup:], [b - a for a, b in zip(ends[warmup:], ends[warmup + 1:])]


def trainer_times(run: TrainerRun, warmup: int) -> tuple[list[float], list[float]]:
    points = [p for p in run.metric_points("perf/step_seconds") if p[0] > warmup]
    periods = [(b[2] - a[2]) / 1000 for a, b in zip(points, points[1:])]
    return [value for _, value, _ in points], periods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (train.max_steps)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the statistics")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each loop, alternating")
    add_run_options(parser)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker), args.override)

    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    never = args.steps + 1000
    overrides = [f"train.max_steps={args.steps}", "train.epochs=1000", "train.log_every_steps=1",
                 f"train.checkpoint.every_steps={never}", f"train.eval.every_steps={never}"]
    steps = {"bare": [], "trainer": []}
    periods = {"bare": [], "trainer": []}
    pairs = []  # per repeat: overhead of the trainer's median step over the bare loop's, %
    try:
        for i in range(args.repeats):
            medians = {}
            for kind, cls in (("bare", BareRun), ("trainer", TrainerRun)):
                def measure(attempt: int) -> TrainerRun:
                    name = f"overhead-{kind}-{i}-{attempt}"
                    run = cls(run_id=name, root=root / name, store=str(root / name / "store"),
                              local_dir=root / name / "local", overrides=overrides, nproc=args.nproc)
                    run.run()
                    return run

                run = until_quiet(measure, args.max_other_cores)
                step, period = run.times(args.warmup) if kind == "bare" else trainer_times(run, args.warmup)
                steps[kind] += step
                periods[kind] += period
                medians[kind] = median(step)
                print(f"  {run.run_id}: median step {median(step):.4f} s, period {median(period):.4f} s "
                      f"(other processes used {run.foreign_cores:.2f} cores meanwhile)", flush=True)
            pairs.append(100 * (medians["trainer"] / medians["bare"] - 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nruntime overhead: {args.repeats} run(s) each x {args.steps} steps (first {args.warmup} left out), "
          f"{args.nproc} ranks, cpus={os.cpu_count()}\n")
    rows = [[kind, len(steps[kind]), median(steps[kind]), median(periods[kind])] for kind in ("bare", "trainer")]
    rows.append(["overhead", "", f"{100 * (median(steps['trainer']) / median(steps['bare']) - 1):+.1f}%",
                 f"{100 * (median(periods['trainer']) / median(periods['bare']) - 1):+.1f}%"])
    print(table(["loop", "steps", "median step s", "median period s"], rows))
    print(f"\nper repeat (trainer vs. the bare run just before it): "
          f"{', '.join(f'{p:+.1f}%' for p in pairs)}; median {median(pairs):+.1f}%   (goal: overhead <= 3%)")


if __name__ == "__main__":
    main()
