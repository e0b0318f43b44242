"""A command recipe's cost to its script: step time and checkpoint stall under spottrain's node wrapper vs. the
same script run bare.

    .venv/bin/python bench/command_overhead.py [--steps 200] [--every 20] [--hidden 4096] [--batch 512]
                                               [--repeats 3] [--nproc 2] [--idle-wait 120]

Runs the plain DDP example (examples/ddp/train.py, recipe ddp_example) with one config, `--repeats` times each,
alternating:
  bare       python -m torch.distributed.run --standalone --nproc_per_node=2 examples/ddp/train.py --config
             cfg.yaml, without any SPOTTRAIN_* or MLFLOW_* variable: the integrations do nothing
  spottrain  .venv/bin/launch recipe ddp_example --target local --override config.…=… (the same config) in a
             scratch project (a copy of recipes/, runs/ of its own, a temporary HOME): the local supervisor, the
             wrapper (`python -m spottrain command`), its events → MLflow (SQLite), the progress file and ledger
             beats, and an upload of each checkpoint to the local profile's store (a local directory, by a
             background thread of the wrapper)
Both run the script through this file (`timed` mode, under torchrun): it loads the example as a module, wraps its
`save` and the integration's `report` and `checkpoint_saved` with clocks, and calls its main(); the script itself
is unchanged (it emits no timings of its own). Rank 0's clocks give:
  step     time between consecutive report() calls (the whole loop iteration: forward, backward, optimizer step,
           report, the should_stop all-reduce), over steps after `--warmup`, excluding the iterations that
           saved a checkpoint; "after ckpt" is the iteration right after one (its upload runs meanwhile)
  stall    per checkpoint, from save() entering to checkpoint_saved() returning: the script's save (rank 0's
           train.pt, every rank's RNG file, two barriers) plus, under spottrain, staging (hard links) and the
           `saved` event; bare, checkpoint_saved does nothing
  cpu      rank 0's CPU time (process_time, its gloo threads included) over the same iterations as `step`, and
           the CPU seconds of every process of the run (launch, supervisor, wrapper, torchrun, ranks): on a
           machine others share, the wall times above move with their load and these barely do
  start    from starting the command (torchrun, or `launch`) to the first step's report, and from the last
           step's report to the command's exit
Each run waits for an idle machine and is repeated (up to 3 times) if other processes used more than
--max-other-cores cores on average while it ran (the CPU of every process the run started is counted as its own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXAMPLE = "examples/ddp/train.py"
RECIPE = "ddp_example"


# --- `timed` mode: one rank of the example, under torchrun -------------------------------------------------------

def timed(timings: str, script: str, args: list[str]) -> None:
    """Run `script`'s main() with clocks around its save() and the integration's report() and
    checkpoint_saved(); rank 0 writes them to `timings` (JSON) when main() returns."""
    import importlib.util

    from spottrain.integrations import script as integration

    spec = importlib.util.spec_from_file_location("timed_example", script)
    module = importlib.util.module_from_spec(spec)
    sys.argv = [script, *args]
    spec.loader.exec_module(module)
    reports: dict[int, float] = {}
    cpu: dict[int, float] = {}  # this rank's CPU seconds (its gloo threads included) at each report
    first_wall: list[float] = []
    saves: list[dict] = []
    report, checkpoint_saved, save = integration.report, integration.checkpoint_saved, module.save

    def timed_report(step, *positional, **metrics):
        reports[int(step)] = time.perf_counter()
        cpu[int(step)] = time.process_time()
        if not first_wall:
            first_wall.append(time.time())
        return report(step, *positional, **metrics)

    def timed_save(path, model, optimizer, step):
        saves.append({"step": int(step), "started": time.perf_counter()})
        return save(path, model, optimizer, step)

    def timed_checkpoint_saved(path, step, *positional, **named):
        announced = time.perf_counter()
        try:
            return checkpoint_saved(path, step, *positional, **named)
        finally:
            ended = time.perf_counter()
            if saves and saves[-1]["step"] == int(step):
                saves[-1].update(save=announced - saves[-1]["started"], saved=ended - announced,
                                 stall=ended - saves[-1]["started"])

    integration.report, integration.checkpoint_saved, module.save = timed_report, timed_checkpoint_saved, timed_save
    module.main()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(timings).write_text(json.dumps({"reports": reports, "cpu": cpu, "saves": saves, "first_report": first_wall[0],
                                             "last_report": time.time(), "integrated": bool(
                                                 os.environ.get("SPOTTRAIN_RUN_ID"))}), encoding="utf-8")


# --- the benchmark -----------------------------------------------------------------------------------------------

def config_of(args) -> dict:
    """The script's config: the recipe's own model shape (256 → hidden → 1), sized so a step is ~0.1 s here."""
    return {"seed": 42, "model": {"inputs": 256, "hidden": args.hidden, "dropout": 0.1},
            "train": {"steps": args.steps, "batch_size": args.batch, "lr": 1.0e-3, "save_every": args.every}}


def overrides_of(config: dict, prefix: str = "config") -> list[str]:
    """config.model.hidden=4096 … : each leaf as a dotted override."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += overrides_of(value, f"{prefix}.{key}")
        else:
            out.append(f"{prefix}.{key}={value}")
    return out


class TreeCpu:
    """CPU seconds used by every process this one started (sampled every 0.2 s in a thread, by (pid, start
    time), so that processes in sessions of their own, or reaped by init, count too) and the machine's busy
    seconds: `foreign_cores` is what other processes used meanwhile, in cores on average."""

    def __enter__(self):
        import threading

        import psutil

        self.psutil, self.seen, self.done = psutil, {}, threading.Event()
        self.busy0, self.started, self.me0 = self._busy(), time.monotonic(), self._mine()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _mine(self) -> float:
        t = self.psutil.Process().cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        while not self.done.wait(0.2):
            self.sample()

    def sample(self) -> None:
        try:
            children = self.psutil.Process().children(recursive=True)
        except self.psutil.Error:
            return
        for proc in children:
            try:
                t = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = t.user + t.system
            except self.psutil.Error:
                pass

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        ours = sum(self.seen.values()) + self._mine() - self.me0
        self.cores = max(0.0, self._busy() - self.busy0 - ours) / (time.monotonic() - self.started)
        self.ours = ours


def run_once(kind: str, index: int, root: Path, project: Path, config: dict, args) -> dict:
    """One run of the example, bare or under spottrain; its rank-0 timings, wall times and the foreign load."""
    import subprocess

    import yaml

    from _harness import PROJECT, kill_tree, wait_until_idle

    name = f"{kind}-{index}"
    base = root / name
    base.mkdir(parents=True)
    timings = base / "timings.json"
    entry = [str(Path(__file__).resolve()), "timed", str(timings), str(PROJECT / EXAMPLE)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTTRAIN_", "MLFLOW_"))}
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HOME": str(root / "home"),
                "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})
    if kind == "bare":
        config_file = base / "cfg.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={args.nproc}", *entry, "--config", str(config_file)]
        cwd = base
    else:
        env["LAUNCH_PROJECT_DIR"] = str(project)
        script = " ".join([*entry, "--config", "{config}"])
        command = [str(Path(sys.executable).parent / "launch"), "recipe", RECIPE, "--target", "local",
                   "--override", f"resources.gpus={args.nproc}", "--override", f"command={script}",
                   *[arg for o in overrides_of(config) for arg in ("--override", o)]]
        cwd = project
    log = base / "output.log"
    wait_until_idle(max_wait=args.idle_wait)
    with TreeCpu() as load, open(log, "w") as out:
        started = time.time()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=args.timeout)
        finally:
            load.sample()
            kill_tree(process)
        ended = time.time()
    if code != 0 or not timings.is_file():
        raise RuntimeError(f"{name} exited {code}:\n{log.read_text()[-3000:]}")
    data = json.loads(timings.read_text())
    if data["integrated"] != (kind == "spottrain"):
        raise RuntimeError(f"{name}: the script {'did not see' if kind == 'spottrain' else 'saw'} SPOTTRAIN_RUN_ID")
    if kind == "spottrain":  # the config the wrapper wrote for the script is the bare run's
        written = list((project / "runs" / "local").glob(f"*/{'config.yaml'}"))
        newest = max(written, key=lambda p: p.stat().st_mtime)
        if yaml.safe_load(newest.read_text()) != config:
            raise RuntimeError(f"{name}: the wrapper's config differs: {newest.read_text()}")
    reports = {int(step): t for step, t in data["reports"].items()}
    saved_steps = {s["step"] for s in data["saves"]}
    cpu = {int(step): t for step, t in data["cpu"].items()}
    steps, after, step_cpu = [], [], []
    for step in sorted(reports):
        if step + 1 not in reports or step < args.warmup:
            continue
        duration = reports[step + 1] - reports[step]  # the iteration of step+1, and the save of `step` if due
        if step in saved_steps:
            continue
        (after if step - 1 in saved_steps else steps).append(duration)
        if step - 1 not in saved_steps:
            step_cpu.append(cpu[step + 1] - cpu[step])
    return {"kind": kind, "steps": steps, "after": after, "step_cpu": step_cpu, "saves": [s for s in data["saves"] if "stall" in s],
            "start": data["first_report"] - started, "end": ended - data["last_report"], "wall": ended - started,
            "foreign_cores": load.cores, "cpu": load.ours}


class Result(dict):
    @property
    def foreign_cores(self) -> float:
        return self["foreign_cores"]


def main() -> None:
    import shutil
    import tempfile

    from _harness import PROJECT, add_run_options, median, percentile, table, until_quiet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="train.steps of the script's config")
    parser.add_argument("--every", type=int, default=20, help="train.save_every: a checkpoint every N steps")
    parser.add_argument("--hidden", type=int, default=4096, help="model.hidden (inputs 256, as the recipe)")
    parser.add_argument("--batch", type=int, default=512, help="train.batch_size per rank")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of step times")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating bare/spottrain")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take")
    parser.add_argument("--idle-wait", type=float, default=120, help="at most this long waiting for an idle machine")
    add_run_options(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    config = config_of(args)
    root = Path(tempfile.mkdtemp(prefix="bench-command-"))
    project = root / "project"  # recipes/ only: the scripts are named by absolute path
    shutil.copytree(PROJECT / "recipes", project / "recipes")
    runs: dict[str, list[dict]] = {"bare": [], "spottrain": []}
    try:
        for i in range(args.repeats):
            for kind in ("bare", "spottrain"):
                result = until_quiet(lambda attempt: Result(run_once(kind, i * 10 + attempt, root, project, config,
                                                                     args)), args.max_other_cores)
                runs[kind].append(result)
                print(f"  {kind:9s} #{i}: step {median(result['steps']) * 1e3:6.1f} ms, stall "
                      f"{median([s['stall'] for s in result['saves']]) * 1e3:6.1f} ms, start {result['start']:5.1f} s, "
                      f"end {result['end']:4.1f} s, wall {result['wall']:5.1f} s, CPU {result['cpu']:5.1f} s, "
                      f"other processes {result['foreign_cores']:.2f} cores", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    def pooled(kind: str, key: str) -> list[float]:
        return [v for r in runs[kind] for v in r[key]]

    def stalls(kind: str, part: str = "stall") -> list[float]:
        return [s[part] for r in runs[kind] for s in r["saves"]]

    print(f"\n{EXAMPLE}: model 256 → {args.hidden} → 1, batch {args.batch} per rank, {args.steps} steps, a checkpoint "
          f"every {args.every}; {args.nproc} ranks, cpus={os.cpu_count()}, {args.repeats} runs each\n")
    rows = []
    for kind in ("bare", "spottrain"):
        rows.append([kind, f"{median(pooled(kind, 'steps')) * 1e3:.1f}", f"{percentile(pooled(kind, 'steps'), 90) * 1e3:.1f}",
                     f"{median(pooled(kind, 'after')) * 1e3:.1f}", len(stalls(kind)),
                     f"{median(stalls(kind)) * 1e3:.1f}", f"{median(stalls(kind, 'save')) * 1e3:.1f}",
                     f"{median(stalls(kind, 'saved')) * 1e3:.2f}", f"{median([r['start'] for r in runs[kind]]):.1f}",
                     f"{median([r['end'] for r in runs[kind]]):.1f}", f"{median([r['wall'] for r in runs[kind]]):.1f}",
                     f"{median(pooled(kind, 'step_cpu')) * 1e3:.1f}", f"{median([r['cpu'] for r in runs[kind]]):.1f}",
                     f"{median([r['foreign_cores'] for r in runs[kind]]):.2f}"])
    print(table(["run", "step ms", "step p90 ms", "after ckpt ms", "ckpts", "stall ms", "save ms",
                 "checkpoint_saved ms", "start s", "end s", "wall s", "rank-0 CPU ms/step", "CPU s, all processes",
                 "other cores"], rows))
    paired = [median(s["steps"]) / median(b["steps"]) - 1 for b, s in zip(runs["bare"], runs["spottrain"])]
    step_ratio = median(pooled("spottrain", "steps")) / median(pooled("bare", "steps"))
    print(f"\nstep time under spottrain: {100 * (step_ratio - 1):+.1f}% (pooled medians); per pair "
          f"{', '.join(f'{100 * p:+.1f}%' for p in paired)}")
    print(f"stall per checkpoint: {median(stalls('spottrain')) / median(stalls('bare')):.2f}x the bare save")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "timed":
        timed(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main()
