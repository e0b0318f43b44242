"""The node contract for any training script (`task: command`): what the script finds in its environment, and
how it tells the node wrapper (`python -m spottrain command`) what it did. Standard library only: the
integrations (`spottrain.integrations`) write with it inside the script, the wrapper reads with it.

The environment of every rank:
    SPOTTRAIN_RUN_ID           the run, the same across every attempt
    SPOTTRAIN_CONFIG           the script's config file (the recipe's `config`), also what `{config}` became
    SPOTTRAIN_CHECKPOINT_DIR   a local directory: save checkpoints here. Before the script starts, the newest
                               complete checkpoint of the run is restored into it (as the script saved it: a
                               `checkpoint-500/` directory, a `last.ckpt` file), so `resume_from_checkpoint=True`
                               or `ckpt_path="last"` just works; anything else there is removed first.
    SPOTTRAIN_RESUME_DIR       the restored checkpoint's path inside it (unset on a run's first attempt)
    SPOTTRAIN_EXPORT_DIR       a local directory for the final weights: what the script leaves there when it exits
                               0 is published as the run's final export (`<run id>/final-hf/` in the store, where
                               the built-in tasks put theirs: `launch register` and later stages find it)
    SPOTTRAIN_CONTROL_DIR      where the integrations write events and find the stop request
    MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_RUN_ID
                               the run's one MLflow run, the same across attempts: the script's own MLflow
                               logging (autologging included) lands there
The exit codes are the trainer's: 0 done, 75 checkpointed on a notice (start me again), 78 a fault no restart
heals; any other is a crash (restarted within the recipe's budget).

Events (rank 0 only, one JSON object a line in `<control dir>/events.jsonl`, appended and flushed):
    {"event": "attached", "framework": "transformers"}     an integration is in the script: a preemption notice
                                                           is then a stop request, not a SIGTERM to the ranks
    {"event": "progress", "step": 40, "total": 100, "metrics": {"train/loss": 0.5}}
    {"event": "saved", "step": 40, "name": "checkpoint-40", "metric": 0.41}
A `saved` checkpoint was first staged under `<control dir>/staged/step-NNNNNNNN/<name>`, so that what the script
writes afterwards, or deletes (Trainer's `save_total_limit`), cannot change what is uploaded: a directory's files
as hard links (frameworks write each checkpoint directory anew), a single file as a copy (`last.ckpt` is
rewritten in place by the next save).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

CHECKPOINT_DIR_ENV = "SPOTTRAIN_CHECKPOINT_DIR"
RESUME_DIR_ENV = "SPOTTRAIN_RESUME_DIR"
EXPORT_DIR_ENV = "SPOTTRAIN_EXPORT_DIR"
CONFIG_ENV = "SPOTTRAIN_CONFIG"
CONTROL_DIR_ENV = "SPOTTRAIN_CONTROL_DIR"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "stop"  # written by the wrapper on a notice: an attached script saves and returns normally (exit 0)
STAGED_DIR = "staged"
ATTACHED, PROGRESS, SAVED = "attached", "progress", "saved"


def staged_path(control_dir: Path, step: int, name: str) -> Path:
    return Path(control_dir) / STAGED_DIR / f"step-{step:08d}" / name


def append_event(control_dir: Path, event: str, **fields: Any) -> None:
    """One event line, written whole and flushed (the wrapper reads complete lines only)."""
    line = json.dumps({"event": event, **fields}, allow_nan=True) + "\n"
    with open(Path(control_dir) / EVENTS_FILE, "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()


def read_events(control_dir: Path, offset: int) -> tuple[list[dict], int]:
    """The complete event lines after byte `offset`, and the offset after them (a line still being written is
    left for the next read)."""
    try:
        with open(Path(control_dir) / EVENTS_FILE, "rb") as source:
            source.seek(offset)
            data = source.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
    return events, offset + len(complete)


def stage(control_dir: Path, source: Path, step: int) -> Path:
    """Freeze a checkpoint the script just completed for upload: a directory as hard links (copies where the
    filesystem has none), a file as a copy. Returns the staged path."""
    target = staged_path(control_dir, step, Path(source).name)
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(source).is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy)
    else:
        shutil.copy2(source, target)
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stop_requested(control_dir: Optional[Path]) -> bool:
    return control_dir is not None and (Path(control_dir) / STOP_FILE).exists()
