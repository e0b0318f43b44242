"""The trainer on one GPU: tokens/s and MFU beside a bare DeepSpeed loop, checkpoint stall, start-up.

    python bench/gpu.py [--recipe baseline] [--hidden 2048 --layers 16 --intermediate 8192 --heads 16
                        --vocab 32000] [--warmup 3] [--steps 8] [--baseline-src DIR] [--json FILE]
                        [--work DIR] [--store DIR] [--skip stall,resume] [--override train.KEY=VALUE ...]
                        [--variant NAME=train.KEY=VALUE[,...] ...]

Writes a Llama-shaped model of the given shape with random weights (bf16 safetensors, with the in-code micro
tokenizer) and JSONL records long enough to fill the recipe's max_length, then runs, each under torchrun on one
GPU with the recipe's own batch, ZeRO stage, precision and heads:
  trainer   `python -m spottrain train`, no checkpoint or evaluation in the measured steps; tokens/s from the
            wall-clock period between steps (MLflow timestamps), so everything the loop does counts
  variants  with --variant: the trainer again with more overrides (a train.performance knob, a micro-batch)
  bare      this file's --worker: the same model, task loss, batches and engine, only forward, backward and
            step (no tracking, checkpoints, progress file or preemption check)
  baseline  with --baseline-src: the trainer of another checkout on the same model and data (for "today's"
            figure: `git worktree add ../before <commit>`), with the --override keys it knows
  stall     the trainer saving a checkpoint every --save-every steps, twice: the loop's stall at each save
            (perf/checkpoint_stall_seconds; the first one also allocates the host buffers the next reuses) and
            the steps trained while the first one's files were written and uploaded
  resume    a restart of that run on an empty local disk (a new node): start-up breakdown beside the fresh start
MFU = tokens/s × FLOPs per token ÷ --peak-tflops, FLOPs per token = 6 × (matmul parameters a token passes
through: trunk layers, n head layers, n output projections) + 12 × layers × hidden × seq (attention scores and
values, forward and backward, without the causal half, as PaLM counts it).
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
from dataclasses import dataclass
from pathlib import Path

from _harness import PROJECT, TrainerRun, median, table

FAR = 10**6  # a step count no measured run reaches
KEYS_SINCE_BASELINE = ("train.performance.", "train.model.init")  # overrides a --baseline-src may not know


# --- what the runs train on --------------------------------------------------------------------------------------

def write_model(directory: Path, args) -> None:
    """A random-weight Llama of the given shape and the micro tokenizer, as a `from_pretrained` directory."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from spottrain.tasks.wmtp.micro import micro_tokenizer

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads, max_position_embeddings=8192, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    micro_tokenizer().save_pretrained(directory)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the measured runs get the whole GPU


def write_records(path: Path, count: int, length: int) -> None:
    """Correct solutions longer than `length` characters (the micro tokenizer is one token per character), so
    every sequence fills max_length and tokens/s counts no padding."""
    body = "    total = total + value * 3 - 1\n"
    with path.open("w") as out:
        for i in range(count):
            output = f"def solve_{i}(values):\n    total = 0\n" + body * (length // len(body) + 1)
            out.write(json.dumps({"instruction": f"Task {i}: sum the values.", "input": "", "output": output,
                                  "task_id": f"t{i}", "is_correct": True}) + "\n")


def flops_per_token(args, n_heads: int, seq: int) -> float:
    h, i, v = args.hidden, args.intermediate, args.vocab
    layer = 4 * h * h + 3 * h * i  # q, k, v, o and the gated MLP (num_key_value_heads = num_attention_heads)
    layers = args.layers - 1 + n_heads  # the trunk, then each head's own layer
    return 6 * (layers * layer + n_heads * v * h) + 12 * layers * h * seq


# --- the runs -----------------------------------------------------------------------------------------------------

@dataclass
class GpuRun(TrainerRun):
    """The trainer (or --worker) under torchrun with the GPUs visible, from this checkout or another."""

    recipe: str = "recipes/baseline.yaml"
    source: Path = PROJECT
    worker: bool = False

    def command(self) -> list[str]:
        overrides = [f"train.checkpoint.uri={self.store}", f"train.checkpoint.local_dir={self.local_dir}",
                     *self.overrides]
        entry = ([str(Path(__file__).resolve()), "--worker", str(self.root / "bare.json")] if self.worker
                 else ["-m", "spottrain", "train"])
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                *entry, "--recipe", self.recipe, *[arg for o in overrides for arg in ("--override", o)]]

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"]
        paths = [str(self.source / "src"), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                              if p and not p.startswith(str(PROJECT))]]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def start(self) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.root / f"{self.run_id}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            return subprocess.Popen(self.command(), cwd=self.source, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def progress(self) -> dict:
        """The trainer's progress file: step, total, and the step this attempt started from."""
        try:
            return json.loads((self.local_dir / self.run_id / "progress.json").read_text())
        except (OSError, ValueError):
            return {}

    def step_reached(self) -> int:
        return self.progress().get("step", 0)

    def periods(self, first: int, last: int) -> list[float]:
        """Seconds between consecutive logged steps first..last (the loop's whole iteration)."""
        points = [p for p in self.metric_points("perf/step_seconds") if first <= p[0] <= last]
        return [(b[2] - a[2]) / 1000 for a, b in zip(points, points[1:])]


def train_until(run: GpuRun, condition, flush_seconds: float = 3.0) -> None:
    """Train until `condition()` holds, give MLflow's background flush time, then kill (no final save)."""
    deadline: list[float] = []

    def done() -> bool:
        if not deadline and condition():
            deadline.append(time.monotonic() + flush_seconds)
        return bool(deadline) and time.monotonic() >= deadline[0]

    run.run_until(done, timeout=900, poll=0.2)


def run_steps(run: GpuRun, until_step: int) -> None:
    train_until(run, lambda: run.step_reached() >= until_step)


def worker(out: Path, recipe: str, overrides: list[str]) -> None:
    """The bare loop: the trainer's own task, batches and engine; forward, loss, backward, step and nothing else."""
    import torch

    from spottrain import runtime
    from spottrain.batches import StepBatches
    from spottrain.engine import build_engine
    from spottrain.sampler import StepSampler
    from spottrain.tasks import create_task
    from spottrain_contract.recipe import load_recipe

    loaded = load_recipe(recipe, project_dir=PROJECT, overrides=overrides)
    cfg = loaded.recipe.train
    ranks = runtime.init_distributed()
    runtime.seed_everything(cfg.seed)
    task = create_task(loaded.recipe, ranks, files=None)  # a bare loop is no run: nothing kept
    sampler = StepSampler(task.training_indices, per_gpu=cfg.batch.per_gpu, grad_accum=cfg.batch.grad_accum,
                          world_size=ranks.world_size, rank=ranks.rank, seed=cfg.seed)
    total = min(sampler.total_steps(cfg.epochs, cfg.max_steps), int(os.environ["BENCH_STEPS"]))
    engine = build_engine(task.build_model(), cfg, ranks.world_size, total)
    batches = StepBatches(task, sampler, runtime.device(), total, ahead=cfg.performance.prefetch_steps)
    ends = []
    for step in range(total):
        for batch in batches.of_step(step):
            loss, _ = task.loss(engine, batch)
            engine.backward(loss)
            engine.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    batches.close()
    if ranks.is_main:
        out.write_text(json.dumps({"ends": ends,
                                   "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9
                                   if torch.cuda.is_available() else 0.0}))


# --- main ---------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="baseline", help="recipe name or file (its production settings)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="more recipe overrides for every run of this checkout")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of every figure")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per run")
    parser.add_argument("--nproc", type=int, default=1, help="GPUs (torchrun --nproc_per_node)")
    parser.add_argument("--save-every", type=int, default=25,
                        help="the stall run's checkpoint interval (two saves: the first allocates host memory)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--baseline-src", type=Path, help="another checkout whose trainer to measure alike")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="also measure the trainer with these overrides, e.g. "
                             "compiled=train.performance.compile=true")
    parser.add_argument("--skip", default="", help="comma-separated: baseline, trainer, bare, stall, resume")
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    parser.add_argument("--store", type=Path, help="checkpoint store directory (default: under --work)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker), args.recipe, args.override)

    from spottrain_contract.recipe import load_recipe

    recipe = args.recipe if args.recipe.endswith(".yaml") else f"recipes/{args.recipe}.yaml"
    # The recipe's batch on the GPUs measured: without this the trainer would keep the recipe's global batch on
    # fewer GPUs (grad_accum × 4 for a 4-GPU recipe on one), which the bare loop and the figures do not do.
    args.override = [f"resources.gpus={args.nproc}", *args.override]
    cfg = load_recipe(recipe, project_dir=PROJECT, overrides=args.override).recipe.train
    seq, n_heads = cfg.data.max_length, cfg.model.n_future_tokens
    tokens_per_step = cfg.batch.per_gpu * cfg.batch.grad_accum * args.nproc * seq
    flops = flops_per_token(args, n_heads, seq)
    skip = set(filter(None, args.skip.split(",")))

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    store = args.store or work / "store"
    model_dir, data = work / "model", work / "records.jsonl"
    started = time.perf_counter()
    write_model(model_dir, args)
    write_records(data, count=cfg.batch.per_gpu * cfg.batch.grad_accum * args.nproc * 64, length=seq + 64)
    print(f"model and data written in {time.perf_counter() - started:.0f} s", flush=True)
    measured_to = args.warmup + args.steps
    common = [f"train.model.path={model_dir}", f"train.data.train={data}", f"train.data.val={data}",
              f"train.max_steps={FAR}", "train.epochs=1000", "train.log_every_steps=1",
              f"train.eval.every_steps={FAR}"]
    figures: dict = {"device": _device(), "versions": _versions(),
                     "shape": vars(args) | {"seq": seq, "heads_mtp": n_heads},
                     "tokens_per_step": tokens_per_step, "flops_per_token": flops}

    def throughput(period: float, overrides: list[str]) -> dict:
        """tokens/s and MFU of a run, from its own batch and sequence length (a variant may change them)."""
        run_cfg = load_recipe(recipe, project_dir=PROJECT, overrides=overrides).recipe.train
        tokens = run_cfg.batch.per_gpu * run_cfg.batch.grad_accum * args.nproc * run_cfg.data.max_length / period
        mfu = tokens * flops_per_token(args, n_heads, run_cfg.data.max_length) / (args.peak_tflops * 1e12)
        return {"step_period_s": period, "tokens_per_s": tokens, "mfu": mfu}

    def trainer_run(name: str, overrides: list[str], source: Path = PROJECT, worker: bool = False) -> GpuRun:
        return GpuRun(run_id=name, root=work / name, store=str(store), local_dir=work / name / "local",
                      overrides=overrides, nproc=args.nproc, mlflow_db=work / f"{name}.db", recipe=recipe,
                      source=source, worker=worker)

    runs = [] if "trainer" in skip else [("trainer", PROJECT, [*common, *args.override,
                                                               f"train.checkpoint.every_steps={FAR}"])]
    if args.baseline_src and "baseline" not in skip:
        known = [o for o in args.override if not o.startswith(KEYS_SINCE_BASELINE)]
        runs.insert(0, ("baseline", args.baseline_src.resolve(),
                        [*common, *known, f"train.checkpoint.every_steps={FAR}"]))
    for variant in args.variant:  # the trainer again with more overrides, e.g. a train.performance knob
        name, _, settings = variant.partition("=")
        runs.append((name, PROJECT, [*common, *args.override, *settings.split(","),
                                     f"train.checkpoint.every_steps={FAR}"]))
    for name, source, overrides in runs:
        run = trainer_run(name, overrides, source)
        run_steps(run, measured_to + 1)
        figures[name] = throughput(median(run.periods(args.warmup + 1, measured_to + 1)), overrides)
        figures[name]["start_to_first_step_s"] = run.metric("perf/start_to_first_step_seconds").get(1)
        print(f"{name}: {figures[name]}", flush=True)

    if "bare" not in skip:
        bare = trainer_run("bare", [*common, *args.override], worker=True)
        os.environ["BENCH_STEPS"] = str(measured_to + 1)
        bare.run(timeout=900)
        result = json.loads((bare.root / "bare.json").read_text())
        ends = result["ends"][args.warmup:]
        figures["bare"] = throughput(median([b - a for a, b in zip(ends, ends[1:])]), bare.overrides)
        figures["bare"]["peak_memory_gb"] = result["peak_memory_gb"]
        print(f"bare: {figures['bare']}", flush=True)

    if "stall" not in skip:
        every = args.save_every
        stall = trainer_run("stall", [*common, *args.override, f"train.checkpoint.every_steps={every}",
                                      "train.checkpoint.keep=1"])
        uploaded_at, manifest = {}, {}

        def saved_twice_and_trained_on() -> bool:
            for step in (every, 2 * every):
                if step not in uploaded_at and (written := stall.manifest(step)) is not None:  # manifest is last
                    uploaded_at[step], manifest[step] = time.time(), written
            return 2 * every in uploaded_at and stall.step_reached() >= 2 * every + 2

        train_until(stall, saved_twice_and_trained_on)
        points = stall.metric_points("perf/step_seconds")
        during = [value for step, value, stamp in points if every < step and stamp / 1000 <= uploaded_at[every]]
        stalls = stall.metric("perf/checkpoint_stall_seconds")
        figures["stall"] = {
            "checkpoint_gb": sum(f["size"] for f in manifest[every]["files"]) / 1e9,
            "stall_first_s": stalls[every], "stall_next_s": stalls[2 * every],
            "steps_before_s": median([value for step, value, _ in points if args.warmup < step < every]),
            "steps_while_writing_s": median(during), "steps_while_writing": len(during),
            "fresh_startup": _startup(stall, 1)}
        print(f"stall: {figures['stall']}", flush=True)

        if "resume" not in skip:
            shutil.rmtree(stall.local_dir)  # a new node: nothing on its local disk
            resumed = trainer_run("stall", stall.overrides)
            train_until(resumed, lambda: resumed.step_reached() > resumed.progress().get("attempt_start", FAR))
            figures["resume"] = {"resumed_startup": _startup(resumed, resumed.progress()["attempt_start"] + 1)}
            print(f"resume: {figures['resume']}", flush=True)

    print(report(figures, args), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))


def _startup(run: GpuRun, first_step: int) -> dict[str, float]:
    """The start-up breakdown the attempt whose first step was `first_step` logged."""
    phases = ("imports", "setup", "model", "engine", "tracking", "restore", "first_step", "total")
    return {phase: run.metric(f"perf/startup/{phase}_seconds").get(first_step) for phase in phases}


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _versions() -> dict[str, str]:
    import deepspeed
    import torch
    import transformers

    return {"torch": torch.__version__, "cuda": str(torch.version.cuda), "deepspeed": deepspeed.__version__,
            "transformers": transformers.__version__}


def report(figures: dict, args) -> str:
    rows = []
    loops = ["baseline", "trainer", *(v.partition("=")[0] for v in args.variant), "bare"]
    for name in loops:
        if name in figures:
            f = figures[name]
            rows.append([name, f"{f['tokens_per_s'] / 1e3:.1f} k", f"{100 * f['mfu']:.1f}%",
                         f"{f['step_period_s']:.3f}"])
    lines = [f"{figures['device']}, {figures['versions']}; model {args.hidden}h × {args.layers} layers, "
             f"{args.intermediate} MLP, vocab {args.vocab}, {figures['shape']['heads_mtp']} MTP heads, seq "
             f"{figures['shape']['seq']}, {figures['tokens_per_step']} tokens/step, "
             f"{figures['flops_per_token'] / 1e9:.2f} GFLOP/token", "",
             table(["loop", "tokens/s", "MFU", "step s"], rows)]
    if "trainer" in figures and "bare" in figures:
        lines.append(f"trainer / bare loop: {figures['trainer']['tokens_per_s'] / figures['bare']['tokens_per_s']:.3f}")
    if "trainer" in figures and "baseline" in figures:
        ratio = figures["trainer"]["tokens_per_s"] / figures["baseline"]["tokens_per_s"]
        lines.append(f"trainer / baseline: {ratio:.2f}x")
    if "stall" in figures:
        s = figures["stall"]
        lines.append(f"checkpoint {s['checkpoint_gb']:.2f} GB: loop stall {s['stall_first_s']:.2f} s at the first "
                     f"save, {s['stall_next_s']:.2f} s at the next; step "
                     f"{s['steps_before_s']:.3f} s before, {s['steps_while_writing_s']:.3f} s while written and "
                     f"uploaded ({s['steps_while_writing']} steps)")
        lines.append("start-up fresh:   " + _phases(s["fresh_startup"]))
    if "resume" in figures:
        lines.append("start-up resumed: " + _phases(figures["resume"]["resumed_startup"]))
    return "\n".join(lines)


def _phases(phases: dict) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in phases.items() if v is not None)


if __name__ == "__main__":
    main()
