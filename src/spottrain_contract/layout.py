"""Names of things in the store, in one place.

    <run id>/step-00000500/<files written by DeepSpeed and the trainer>
    <run id>/step-00000500/_parts/rank-00003.json   what rank 3 uploaded (sizes, checksums)
    <run id>/step-00000500/MANIFEST.json            written last, alone marks the checkpoint complete
    <run id>/step-00000500/_spottrain/…             a command script's step: what the wrapper keeps beside it
    <run id>/BEST.json                              which complete step holds the best metric
    <run id>/final-hf/                              the final weights as a from_pretrained directory
    <run id>/COMPLETE.json                          written last of all: export published, metrics sent
    <run id>/recipe.resolved.yaml                   the settings the run was launched with (a resume must match)
    <run id>/task/<name>                            what a task keeps with its run (the ranker's data split)
    <run id>/eval/<checkpoint>.json                 `launch eval`'s results, one file per checkpoint evaluated
    <run id>/ledger/attempt-NNNN.json               what each attempt did: the preemption ledger (`ledger`)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MANIFEST = "MANIFEST.json"
PARTS = "_parts"
BEST_POINTER = "BEST.json"
FINAL_EXPORT = "final-hf"
RUN_COMPLETE = "COMPLETE.json"
LAUNCHED_RECIPE = "recipe.resolved.yaml"
TASK_FILES = "task"
EVALUATIONS = "eval"
LEDGER = "ledger"
TRAINER_STATE = "trainer_state.json"
UNSENT_METRICS = "_spottrain/unsent-metrics.json"  # in a command script's step: metrics MLflow had not confirmed
STOP_REQUESTED = "stop-requested"  # a person's stop of a platform's run, asked before its SIGTERM (not a spot notice)
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_RANK_FILE = re.compile(r"(?:zero_pp_rank_|rank-)(\d+)")


def step_tag(step: int) -> str:
    return f"step-{step:08d}"


def step_prefix(run_id: str, step: int) -> str:
    return f"{run_id}/{step_tag(step)}/"


def step_of(tag: str) -> Optional[int]:
    match = _STEP_DIR.match(tag)
    return int(match.group(1)) if match else None


def owner_rank(relative_path: str) -> Optional[int]:
    """The rank a file belongs to (ZeRO shards, per-rank RNG), or None for files every rank reads."""
    match = _RANK_FILE.search(Path(relative_path).name)
    return int(match.group(1)) if match else None


def sha256_of(path: Path, chunk: int = 8 * 2**20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class FileEntry:
    path: str  # relative to the step directory
    size: int
    sha256: str


@dataclass
class Manifest:
    step: int
    world_size: int
    final: bool
    files: list[FileEntry] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        raw = json.loads(data)
        return cls(step=raw["step"], world_size=raw["world_size"], final=raw["final"],
                   files=[FileEntry(**f) for f in raw["files"]], metrics=raw.get("metrics", {}))
