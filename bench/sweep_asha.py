"""ASHA against the full grid on the same sweep: steps, device-hours and dollars, and the controller's decision
latency (a pruned cell's metric logged → its stop handed to the target).

    .venv/bin/python bench/sweep_asha.py [--steps 60] [--eval-every 3] [--price 4.10]

The sweep is the tests' `lr_asha` (tests/launcher/recipes/lr_asha.yaml): the baseline stage's micro model at eight
learning rates from 1e-5 to 1e-1, one rank per cell, `--steps` steps, evaluated (val/loss) and checkpointed every
`--eval-every` steps, rungs at min_budget = eval-every × 3^k. Both run here in a scratch project (a copy of
recipes/, its own runs/ and HOME), priced at `--price` dollars an hour a node (`resources.price_per_hour`):
  asha   `launch recipe lr_asha --target local`: the detached controller, two cells at once, polling every
         second (SPOTTRAIN_SWEEP_POLL_SECONDS=1); read back with `launch sweep status --json`
  grid   the same with `--override search.method=grid`: every cell to the end, one after another
Steps are the ledgers' computed steps (each attempt's, so a stopped cell's steps past its rung count), device-hours
the ledgers' (rank-hours here), dollars = device-hours × the price per device-hour (launcher.pricing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LAUNCH = Path(sys.executable).parent / "launch"
RECIPE = PROJECT / "tests" / "launcher" / "recipes" / "lr_asha.yaml"


def launch(project: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(project), "MLFLOW_DISABLE_TELEMETRY": "true",
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "SPOTTRAIN_SWEEP_POLL_SECONDS": "1",
           "OMP_NUM_THREADS": "1"}  # one-rank cells side by side: a thread each, as torchrun gives several ranks
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(LAUNCH), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout, check=True)


def options(args) -> list[str]:
    return ["--target", "local", "--gpus", "1", "--override", f"train.max_steps={args.steps}",
            "--override", f"train.epochs={args.steps}", "--override", f"train.eval.every_steps={args.eval_every}",
            "--override", f"train.checkpoint.every_steps={args.eval_every}",
            "--override", f"search.min_budget={args.eval_every}",
            "--override", f"resources.price_per_hour={args.price}"]


def cells_of(project: Path, sweep_id: str) -> dict:
    """Each cell's final val/loss, computed steps, device-hours and dollars, read as `launch compare` would."""
    from launcher import pricing
    from launcher.mlflow_runs import first_points, mlflow_run
    from launcher.registry import Registry
    from launcher.run_store import run_store
    from spottrain_contract.ledger import read_ledger

    found = {}
    for record in Registry(project).cells_of(sweep_id):
        ledger = read_ledger(run_store(record), record.run_id)
        client, run = mlflow_run(record)
        points = first_points(client, run.info.run_id, "val/loss") if run is not None else []
        cost = pricing.run_cost(record, ledger)
        found[record.cell] = {"state": str(record.state), "computed": ledger.computed,
                              "device_hours": ledger.device_hours, "dollars": cost.dollars_used if cost else None,
                              "val_loss": points[-1][1] if points else None, "step": points[-1][0] if points else 0}
    return found


def asha(project: Path, args) -> dict:
    started = time.monotonic()
    done = launch(project, "recipe", "lr_asha", *options(args))
    sweep_id = next(line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("sweep "))
    while True:
        report = json.loads(launch(project, "sweep", "status", sweep_id, "--json").stdout)
        if report["state"] == "finished":
            break
        time.sleep(5)
    latencies = [j["latency_seconds"] for cell in report["cells"] for j in cell["judgements"]
                 if j["latency_seconds"] is not None]
    return {"wall": time.monotonic() - started, "cells": cells_of(project, sweep_id), "best": report["best"],
            "latency": latencies}


def grid(project: Path, args) -> dict:
    started = time.monotonic()
    done = launch(project, "recipe", "lr_asha", *options(args), "--override", "search.method=grid")
    sweep_id = next(line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("sweep "))
    cells = cells_of(project, sweep_id)
    best = min((cell for cell in cells if cells[cell]["val_loss"] is not None), key=lambda c: cells[c]["val_loss"])
    return {"wall": time.monotonic() - started, "cells": cells, "best": best, "latency": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=3)
    parser.add_argument("--price", type=float, default=4.10, help="dollars an hour a node (one A100 on demand)")
    args = parser.parse_args()
    print(f"{'search':<6} {'steps':>6} {'pruned':>7} {'rank-h':>8} {'dollars':>9} {'best':<8} {'wall s':>7} "
          f"{'latency s (median, max)':>24}")
    for name, run in (("asha", asha), ("grid", grid)):
        project = Path(tempfile.mkdtemp(prefix=f"bench-sweep-{name}-"))
        shutil.copytree(PROJECT / "recipes", project / "recipes")
        shutil.copy(RECIPE, project / "recipes")
        try:
            result = run(project, args)
        finally:
            shutil.rmtree(project, ignore_errors=True)
        cells = result["cells"].values()
        dollars = [cell["dollars"] for cell in cells if cell["dollars"] is not None]
        latency = (f"{statistics.median(result['latency']):.1f}, {max(result['latency']):.1f}"
                   if result["latency"] else "-")
        print(f"{name:<6} {sum(c['computed'] for c in cells):>6} {sum(c['state'] == 'pruned' for c in cells):>7} "
              f"{sum(c['device_hours'] for c in cells):>8.4f} {sum(dollars):>9.4f} {result['best']:<8} "
              f"{result['wall']:>7.0f} {latency:>24}", flush=True)


if __name__ == "__main__":
    main()
