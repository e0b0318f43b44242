"""What was launched from this project: one small JSON file per run under `runs/registry/`.

`launch status`, `logs`, `stop` and `compare` read it, so they work after the launching shell is gone. Each
target keeps what it needs to find its run again (a process group here, a job id on SkyPilot, a run id on
VESSL) in `handle`; the trainer's progress and the checkpoints are found through `local_dir` and `store`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError
from spottrain_contract.job import RunState

REGISTRY_DIR = "runs/registry"
LOG_DIR = "runs/logs"


@dataclass
class RunRecord:
    run_id: str
    recipe: str
    target: str
    state: RunState
    started: float
    store: str
    local_dir: str
    tracking_uri: str
    handle: dict = field(default_factory=dict)
    restarts: int = 0
    ended: Optional[float] = None
    log: Optional[str] = None
    project: str = ""  # the project directory it was launched from (its registry, its working copy)
    recipe_document: str = ""  # the resolved recipe the latest launch shipped: a resume reuses it
    sweep_id: Optional[str] = None  # a sweep's cell: the sweep (`launch status SWEEP`, `launch compare SWEEP`)
    cell: Optional[str] = None  # a sweep's cell: its name


class Registry:
    def __init__(self, project_dir: Path):
        self.dir = project_dir / REGISTRY_DIR
        self.project_dir = project_dir
        self.skipped: list[str] = []  # what `all` could not read, one line each

    def save(self, record: RunRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.dir / f".{record.run_id}.json.partial-{os.getpid()}"
        partial.write_text(json.dumps(asdict(record), indent=1, sort_keys=True))
        os.replace(partial, self.dir / f"{record.run_id}.json")

    def update(self, run_id: str, *, handle: Optional[dict] = None, **changes) -> RunRecord:
        """Change fields of a record; `handle` entries are merged into the record's handle, so the launcher and
        a supervisor each adding their own entries never erase the other's."""
        record = self.get(run_id)
        for key, value in changes.items():
            setattr(record, key, value)
        if handle:
            record.handle = {**record.handle, **handle}
        self.save(record)
        return record

    def delete(self, run_id: str) -> None:
        (self.dir / f"{run_id}.json").unlink(missing_ok=True)

    def exists(self, run_id: str) -> bool:
        return (self.dir / f"{run_id}.json").is_file()

    def get(self, run_id: str) -> RunRecord:
        path = self.dir / f"{run_id}.json"
        if not path.is_file():
            known = [r.run_id for r in self.all()[-5:]]
            raise LaunchError(f"no run '{run_id}' launched from this project"
                              + (f" (recent: {', '.join(known)})" if known else ""))
        return _record(json.loads(path.read_text()))

    def all(self) -> list[RunRecord]:
        """Every readable record, oldest first; a file that is not one (cut short, edited by hand) is skipped and
        named in `skipped`, so one bad file never hides the other runs."""
        if not self.dir.is_dir():
            return []
        records, self.skipped = [], []
        for path in sorted(self.dir.glob("*.json")):
            try:
                records.append(_record(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                self.skipped.append(f"{path.relative_to(self.project_dir)}: not a run record "
                                    f"({type(exc).__name__}): skipped")
        return sorted(records, key=lambda r: r.started)

    def cells_of(self, sweep_id: str) -> list[RunRecord]:
        """The launched cells of a sweep, oldest first (empty: no such sweep)."""
        return [record for record in self.all() if record.sweep_id == sweep_id]

    def log_path(self, run_id: str) -> Path:
        path = self.project_dir / LOG_DIR / f"{run_id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _record(fields: dict) -> RunRecord:
    return RunRecord(**{**fields, "state": RunState(fields["state"])})


def age(seconds_since: float) -> str:
    elapsed = max(0, int(time.time() - seconds_since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if elapsed >= size:
            return f"{elapsed // size}{unit}"
    return f"{elapsed}s"
