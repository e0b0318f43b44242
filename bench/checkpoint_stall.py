"""Loop stall per checkpoint with S3 sync on vs. local save only.

    .venv/bin/python bench/checkpoint_stall.py [--steps 64] [--every 8] [--repeats 3] [--nproc 2]

Runs the real trainer (baseline recipe, `local` profile, micro model) twice per repeat, alternating:
  s3     checkpoint.uri = s3://bench/<prefix> on moto's HTTP server (127.0.0.1, in this process)
  local  checkpoint.uri = a local directory: the background "upload" is then a local file copy
and reads `perf/checkpoint_stall_seconds` (time the loop spent in Checkpointer.save: the local DeepSpeed save,
the RNG/trainer-state files and the barrier; the upload runs in a background thread) and `perf/step_seconds`
from MLflow. Step times are split into the step right after a checkpoint (its upload runs concurrently) and
all other steps (the first 3 warm-up steps excluded). Evaluation runs only at the last step.

moto runs in this process, on the same CPUs as the trainer: its request handling is counted against the s3
side. Each run waits for an idle machine and is repeated (up to 3 times) if other processes used more than
--max-other-cores cores on average while it ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from _harness import TrainerRun, add_run_options, median, moto_s3, percentile, table, until_quiet

WARMUP_STEPS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="train.max_steps of each run")
    parser.add_argument("--every", type=int, default=8, help="train.checkpoint.every_steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs per store, alternating s3/local")
    add_run_options(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    overrides = [f"train.max_steps={args.steps}", "train.epochs=1000", f"train.checkpoint.every_steps={args.every}",
                 f"train.eval.every_steps={args.steps + 1000}", "train.log_every_steps=1"]
    stalls: dict[str, list[float]] = {"s3": [], "local": []}
    after: dict[str, list[float]] = {"s3": [], "local": []}
    other: dict[str, list[float]] = {"s3": [], "local": []}
    try:
        with moto_s3() as s3:
            for i in range(args.repeats):
                for kind in ("s3", "local"):
                    def measure(attempt: int) -> TrainerRun:
                        name = f"stall-{kind}-{i}-{attempt}"
                        base = root / name
                        run = TrainerRun(run_id=name, root=base, local_dir=base / "local", overrides=overrides,
                                         store=f"s3://{s3.bucket}/{name}" if kind == "s3" else str(base / "store"),
                                         s3=s3 if kind == "s3" else None, nproc=args.nproc)
                        run.run()
                        return run

                    run = until_quiet(measure, args.max_other_cores)
                    run_stalls = list(run.metric("perf/checkpoint_stall_seconds").values())
                    stalls[kind] += run_stalls
                    for step, seconds in run.metric("perf/step_seconds").items():
                        if step > WARMUP_STEPS:
                            (after if (step - 1) % args.every == 0 else other)[kind].append(seconds)
                    print(f"  {run.run_id}: median stall {median(run_stalls):.4f} s "
                          f"(other processes used {run.foreign_cores:.2f} cores meanwhile)", flush=True)
    finally:
        if args.keep:
            print(f"scratch directory: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\ncheckpoint stall: {args.repeats} run(s) per store x {args.steps} steps, checkpoint every "
          f"{args.every} steps, {args.nproc} ranks, cpus={os.cpu_count()}")
    print("(local = background upload is a local file copy; s3 = background upload to moto over HTTP)\n")
    rows = [[kind, len(stalls[kind]), median(stalls[kind]), percentile(stalls[kind], 90), max(stalls[kind]),
             median(after[kind]), median(other[kind])] for kind in ("s3", "local")]
    print(table(["store", "ckpts", "stall median s", "stall p90 s", "stall max s", "step after ckpt s",
                 "step other s"], rows))
    print(f"\nstall ratio s3/local: median {median(stalls['s3']) / median(stalls['local']):.2f}x, "
          f"p90 {percentile(stalls['s3'], 90) / percentile(stalls['local'], 90):.2f}x  (goal <= 1.1x)")


if __name__ == "__main__":
    main()
