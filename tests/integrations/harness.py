"""Runs an example script under torchrun (2 CPU ranks) with the node contract's environment pointing at a test
directory, as the wrapper would, and reads back what it reported. Without the wrapper: a test does the wrapper's
part (the stop file, restoring a staged checkpoint) itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import psutil
import yaml

from spottrain_contract.job import RUN_ID_ENV
from spottrain_contract.recipe import load_recipe
from spottrain_contract.script import (CHECKPOINT_DIR_ENV, CONFIG_ENV, CONTROL_DIR_ENV, EXPORT_DIR_ENV, PROGRESS,
                                       RESUME_DIR_ENV, SAVED, STOP_FILE, read_events, staged_path)

PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class Attempt:
    """One run of a script: its directories, exit code, output and events."""

    root: Path
    returncode: int = -1
    output: str = ""
    events: list[dict] = field(default_factory=list)

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def control_dir(self) -> Path:
        return self.root / "control"

    def of(self, kind: str) -> list[dict]:
        return [event for event in self.events if event["event"] == kind]

    def progress_steps(self) -> list[int]:
        return [event["step"] for event in self.of(PROGRESS)]

    def staged(self, saved: dict) -> Path:
        return staged_path(self.control_dir, saved["step"], saved["name"])

    def last_staged(self) -> Path:
        return self.staged(self.of(SAVED)[-1])


def local_config(recipe: str) -> dict:
    """The script's config as the recipe's local profile makes it (the tests run what `--target local` runs)."""
    return load_recipe(recipe, project_dir=PROJECT, profile="local").recipe.config


def run_example(script: str, config: dict, root: Path, stop_at: Optional[int] = None,
                resume_from: Optional[Path] = None, sigterm: bool = False) -> Attempt:
    """Run `script` to its end. `stop_at`: write the stop file once progress reaches that step (the wrapper on a
    notice), or with `sigterm` send SIGTERM to the ranks instead. `resume_from`: a staged checkpoint copied into the
    fresh checkpoint directory (the wrapper's restore) and named by SPOTTRAIN_RESUME_DIR."""
    attempt = Attempt(root)
    attempt.checkpoint_dir.mkdir(parents=True)
    attempt.control_dir.mkdir()
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "SPOTTRAIN_"))}
    env.update({RUN_ID_ENV: "test-run", CONFIG_ENV: str(config_file), CHECKPOINT_DIR_ENV: str(attempt.checkpoint_dir),
                CONTROL_DIR_ENV: str(attempt.control_dir),
                EXPORT_DIR_ENV: str(attempt.export_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1"})
    if resume_from is not None:
        restored = attempt.checkpoint_dir / resume_from.name
        (shutil.copytree if resume_from.is_dir() else shutil.copy2)(resume_from, restored)
        env[RESUME_DIR_ENV] = str(restored)
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                str(PROJECT / script), "--config", str(config_file)], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = None
    if stop_at is not None:
        watcher = threading.Thread(target=_stop_when, args=(attempt.control_dir, stop_at, process, sigterm),
                                   daemon=True)
        watcher.start()
    attempt.output, _ = process.communicate(timeout=300)
    attempt.returncode = process.returncode
    if watcher is not None:
        watcher.join()
    attempt.events, _ = read_events(attempt.control_dir, 0)
    return attempt


def _stop_when(control_dir: Path, step: int, process: subprocess.Popen, sigterm: bool) -> None:
    offset = 0
    while process.poll() is None:
        events, offset = read_events(control_dir, offset)
        if any(event["event"] == PROGRESS and event["step"] >= step for event in events):
            if not sigterm:
                (control_dir / STOP_FILE).touch()
                return
            for rank in psutil.Process(process.pid).children():  # torchrun's workers, not torchrun itself
                rank.send_signal(signal.SIGTERM)
            return
        threading.Event().wait(0.005)
