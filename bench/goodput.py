"""Goodput under preemption: useful steps / steps computed, with a preemption every N seconds of training.

    .venv/bin/python bench/goodput.py [--every 8] [--kills 4] [--steps 300]

Runs the baseline recipe's local profile through `launch recipe --target local --chaos ...`: with a SIGTERM
notice N seconds into each attempt's training (the trainer checkpoints the step it is in, so nothing is
recomputed) and with SIGKILL instead (the work since the last checkpoint is lost), each on the recipe's 2 ranks
throughout and with the capacity changing at every restart (2 → 1 → 2 → 1 → 2 ranks: the checkpoint resharded,
grad_accum recomputed). The supervisor counts the steps each attempt computed; goodput = final steps / steps
computed. Start-up time of each attempt is not a step and is reported separately as wall time. Checkpoints
every 10 steps, as in the local profile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LAUNCH = Path(sys.executable).parent / "launch"


def run(project: Path, run_id: str, signals: str, every: float, kills: int, steps: int, ranks: str) -> dict:
    env = {**os.environ, "HOME": str(project),
           "MLFLOW_DISABLE_TELEMETRY": "true", "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    args = [str(LAUNCH), "recipe", "baseline", "--target", "local", "--run-id", run_id,
            "--override", f"train.max_steps={steps}", "--override", f"train.epochs={steps}",
            "--override", "train.checkpoint.every_steps=10", "--override", f"train.eval.every_steps={steps}"]
    if kills:
        args += ["--chaos", f"kills={kills},signals={signals},every={every}:{every},seed=1"
                 + (f",ranks={ranks}" if ranks else "")]
    started = time.monotonic()
    subprocess.run(args, cwd=project, env=env, capture_output=True, check=True)
    record = json.loads((project / "runs" / "registry" / f"{run_id}.json").read_text())
    handle = record["handle"]
    return {"wall": time.monotonic() - started, "final": handle["final_step"], "computed": handle["steps_computed"],
            "kills": handle["chaos_kills"], "restarts": record["restarts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=8.0, help="seconds of training before each preemption")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="bench-goodput-"))
    shutil.copytree(PROJECT / "recipes", project / "recipes")
    try:
        print(f"{'preemption':<22} {'ranks':<10} {'kills':>5} {'steps':>6} {'computed':>9} {'goodput':>8} "
              f"{'wall s':>7}")
        for label, signals, kills, ranks in (("none", "TERM", 0, ""), ("SIGTERM notice", "TERM", args.kills, ""),
                                             ("SIGKILL, no notice", "KILL", args.kills, ""),
                                             ("SIGTERM notice", "TERM", args.kills, "1+2"),
                                             ("SIGKILL, no notice", "KILL", args.kills, "1+2")):
            run_id = label.split()[0].lower() + ("-elastic" if ranks else "")
            r = run(project, run_id, signals, args.every, kills, args.steps, ranks)
            goodput = r["final"] / r["computed"] if r["computed"] else float("nan")
            shape = "2→1→2…" if ranks else "2"
            print(f"{label:<22} {shape:<10} {r['kills']:>5} {r['final']:>6} {r['computed']:>9} {goodput:>8.1%} "
                  f"{r['wall']:>7.0f}", flush=True)
    finally:
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
