"""Run the real trainer under torchrun through the local target's run script, and read back what it left.

Every run gets its own store, local disk and MLflow database under a temporary directory, so runs can be
compared file by file and metric by metric.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from launcher.targets.local import processes
from launcher.plan import plan_launch
from launcher.requests import LaunchRequest
from launcher.render import with_ranks
from launcher.targets import local

PROJECT = Path(__file__).resolve().parents[2]
LAUNCH = str(Path(os.environ.get("VIRTUAL_ENV", PROJECT / ".venv")) / "bin" / "launch")


def launch(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `launch` CLI as a user runs it in `project` (its own HOME, no MLflow server)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "HOME": str(project)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([LAUNCH, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def launched_to_the_end(project: Path, recipe: str, run_id: str) -> Path:
    """`project` with the real recipes, and `recipe`'s local profile launched there as run `run_id`, finished."""
    import shutil

    shutil.copytree(PROJECT / "recipes", project / "recipes")
    done = launch(project, "recipe", recipe, "--target", "local", "--run-id", run_id)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return project


def adapter_answers(project: Path, adapter: Path, rows: list[dict]) -> list[str]:
    """What a user gets from a VLM run's LoRA adapter outside spottrain: `adapter` loaded with peft on the tiny
    base model the run in `project` built, its processor from beside the adapter, greedy answers to `rows`
    (predictions.jsonl's image and query) with the local profile's max_new_tokens."""
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from spottrain.tasks.vlm import prompts

    [base_dir] = (project / "runs" / "local" / "tiny-models").iterdir()
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), str(adapter)).eval()
    processor = AutoProcessor.from_pretrained(adapter)
    images = [Image.open(row["image"]).convert("RGB") for row in rows]
    family = prompts.resolve_family("auto", model.config.model_type)
    inputs = prompts.generation_batch(processor, family, images, [row["query"] for row in rows], None)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return prompts.decode_new_tokens(processor, output, inputs["input_ids"].shape[1])


def attempt_env(run_id: str, marker: str) -> dict[str, str]:
    """What a node gives the run script here: CPU only, one thread per rank, the venv's torchrun, the attempt
    marker (to find every process of it) and no MLflow server (SQLite beside)."""
    env = {**os.environ, "SPOTTRAIN_RUN_ID": run_id, "CUDA_VISIBLE_DEVICES": "", "MLFLOW_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": "1", processes.ATTEMPT_ENV: marker,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@dataclass
class TrainingRun:
    run_id: str
    root: Path
    overrides: tuple[str, ...]
    recipe: str = "baseline"
    changes: tuple[str, ...] = ()  # settings a resume was allowed to change (launch --allow-changes)
    ranks: Optional[int] = None  # ranks the platform gave this attempt, when not the recipe's GPUs (spot capacity)

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def local(self) -> Path:
        return self.root / "local"

    def script(self) -> str:
        overrides = (f"train.checkpoint.uri={self.store}", f"train.checkpoint.local_dir={self.local}",
                     *self.overrides)
        plan = plan_launch(LaunchRequest(self.recipe, "local", profile="local", overrides=overrides,
                                         run_id=self.run_id), PROJECT)
        plan = dataclasses.replace(plan, loaded=dataclasses.replace(plan.loaded, changes=self.changes))
        script = local.render(plan, None)
        return with_ranks(script, self.ranks) if self.ranks is not None else script

    def start(self) -> subprocess.Popen:
        self.marker = processes.new_marker()
        log = open(self.root / f"attempt-{time.monotonic_ns()}.log", "w")
        return subprocess.Popen(["bash", "-c", self.script()], cwd=PROJECT, env=attempt_env(self.run_id, self.marker),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, timeout: float = 300) -> int:
        process = self.start()
        try:
            return process.wait(timeout=timeout)
        finally:
            self._reap(process)

    def run_until(self, condition: Callable[["TrainingRun"], bool], sig: int, *, delay: float = 0.0,
                  timeout: float = 300) -> int:
        """Start, wait for `condition` (then `delay` s), then signal: SIGKILL to every process of the attempt at
        once (a spot VM vanishing), SIGTERM to the script (a preemption notice). Returns the exit code once
        no process of the attempt is left."""
        process = self.start()
        try:
            deadline = time.monotonic() + timeout
            while not condition(self):
                if process.poll() is not None:
                    raise AssertionError(f"run ended (exit {process.returncode}) before the condition held:\n"
                                         + self.last_log())
                if time.monotonic() > deadline:
                    raise AssertionError("condition never held:\n" + self.last_log())
                time.sleep(0.02)
            time.sleep(delay)
            if sig == signal.SIGKILL:
                processes.signal_marked(self.marker, signal.SIGKILL)
            else:
                process.send_signal(sig)
            code = process.wait(timeout=timeout)
            processes.wait_marked_gone(self.marker, grace=timeout)
            return code
        finally:
            self._reap(process)

    def _reap(self, process: subprocess.Popen) -> None:
        """Nothing of this attempt outlives the call, whatever happened."""
        if process.poll() is None:
            process.kill()
            process.wait()
        processes.signal_marked(self.marker, signal.SIGKILL)

    def last_log(self, whole: bool = False) -> str:
        """The newest attempt's log: its last 4000 characters (for assertion messages), or all of it."""
        logs = sorted(self.root.glob("attempt-*.log"))
        text = logs[-1].read_text() if logs else ""
        return text if whole else text[-4000:]

    # --- what the run left -----------------------------------------------------------------------------------

    def complete_steps(self) -> list[int]:
        run_dir = self.store / self.run_id
        return sorted(int(m.parent.name.split("-")[1]) for m in run_dir.glob("step-*/MANIFEST.json"))

    def local_step_started(self, step: int) -> bool:
        return (self.local / self.run_id / f"step-{step:08d}").exists()

    def final_step(self) -> int:
        steps = [s for s in self.complete_steps()
                 if json.loads((self.store / self.run_id / f"step-{s:08d}" / "MANIFEST.json").read_text())["final"]]
        assert steps, "no final checkpoint"
        return steps[-1]

    def checkpoint_tensors(self, step: int) -> dict[str, object]:
        """Every file of a stored checkpoint, loaded (weights, optimizer, scheduler, RNG, trainer state)."""
        from safetensors.torch import load_file

        step_dir = self.store / self.run_id / f"step-{step:08d}"
        loaded = {}
        for path in sorted(step_dir.glob("*.pt")):
            loaded[path.name] = torch.load(path, map_location="cpu", weights_only=False)
        for path in sorted(step_dir.glob("*.safetensors")):
            loaded[path.name] = load_file(str(path))
        loaded["trainer_state.json"] = json.loads((step_dir / "trainer_state.json").read_text())
        return loaded

    def _mlflow_run(self):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{self.local}/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`spottrain.run_id` = '{self.run_id}'")
        assert len(runs) == 1, f"expected one MLflow run for {self.run_id}, found {len(runs)}"
        return client, runs[0]

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        client, run = self._mlflow_run()
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    def training_metrics(self) -> set[str]:
        """What the task logs (timings, transfers, system metrics and the ledger differ between runs by nature)."""
        _, run = self._mlflow_run()
        return {key for key in run.data.metrics if not key.startswith(("perf/", "system/", "transfer/", "ledger/"))}


STEPS = 12  # the resume tests' run: long enough for three checkpoints, an eval and a kill between them


def resume_overrides(zero_stage: int) -> tuple[str, ...]:
    return (f"train.max_steps={STEPS}", "train.checkpoint.every_steps=4", "train.eval.every_steps=6",
            "train.log_every_steps=1", f"train.deepspeed.zero_stage={zero_stage}")


RUN_SPECIFIC_STATE = ("run_id", "tracker")  # ids, and the MLflow run with what it had not yet received


def assert_runs_match(run: TrainingRun, reference: TrainingRun, steps: int,
                      lr_metric: str = "train/learning_rate") -> None:
    """Same final checkpoint bit for bit (minus the run's own ids) and the same metrics, each step once."""
    assert run.final_step() == reference.final_step() == steps
    ours, theirs = run.checkpoint_tensors(steps), reference.checkpoint_tensors(steps)
    for state in (ours["trainer_state.json"], theirs["trainer_state.json"]):
        for key in RUN_SPECIFIC_STATE:
            state.pop(key)
    assert_same(ours, theirs)
    keys = reference.training_metrics()
    assert run.training_metrics() == keys
    for key in keys:
        assert run.metric_history(key) == reference.metric_history(key), key
    assert [step for step, _ in run.metric_history(lr_metric)] == list(range(1, steps + 1))


def assert_same(a, b, path: str = "") -> None:
    """Recursive bitwise equality over tensors, arrays, dicts, lists and scalars."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"tensor differs at {path}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"keys differ at {path}: {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"length differs at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif hasattr(a, "__array__") and not isinstance(a, (str, bytes)):
        import numpy as np

        assert np.array_equal(np.asarray(a), np.asarray(b)), f"array differs at {path}"
    elif hasattr(a, "__dict__") and type(a).__eq__ is object.__eq__:
        assert type(a) is type(b), f"type differs at {path}"
        assert_same(vars(a), vars(b), path)
    else:
        assert a == b, f"value differs at {path}: {a!r} != {b!r}"
