"""The read side of the checkpoint store: which checkpoints of a run are complete, which is best, which final.

The trainer resumes from what this finds; the launcher resolves stage dependencies with it (the verifiable stage
starts from a critic run's best checkpoint) without importing the trainer. Only a manifest marks a checkpoint
complete (`layout`), so a reader never takes a half-uploaded step.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

from spottrain_contract import layout
from spottrain_contract.layout import Manifest
from spottrain_contract.store import CheckpointStore


def steps_in(keys: Iterable[str]) -> tuple[list[int], dict[int, list[str]]]:
    """(complete steps, sorted; every step's keys) from a listing of one run's prefix (`<run id>/...`)."""
    complete, by_step = [], {}
    for key in keys:
        parts = key.split("/")
        if len(parts) < 3 or (step := layout.step_of(parts[1])) is None:
            continue
        by_step.setdefault(step, []).append(key)
        if len(parts) == 3 and parts[2] == layout.MANIFEST:
            complete.append(step)
    return sorted(complete), by_step


class StoredRun:
    """One run's checkpoints in a store, read only."""

    def __init__(self, store: CheckpointStore, run_id: str):
        self.store, self.run_id = store, run_id

    def complete_steps(self) -> list[int]:
        return steps_in(self.store.list(f"{self.run_id}/"))[0]

    def manifest(self, step: int) -> Manifest:
        return Manifest.from_json(self.store.get_bytes(layout.step_prefix(self.run_id, step) + layout.MANIFEST))

    def newest(self) -> Optional[Manifest]:
        complete = self.complete_steps()
        return self.manifest(complete[-1]) if complete else None

    def best_step(self) -> Optional[int]:
        pointer = self.store.get_bytes(f"{self.run_id}/{layout.BEST_POINTER}")
        return json.loads(pointer)["step"] if pointer else None

    def finished(self) -> bool:
        """The run wrote its final checkpoint (its newest complete one says so)."""
        newest = self.newest()
        return newest is not None and newest.final

    def completed(self) -> Optional[int]:
        """The final step, once everything after the final checkpoint is done too (export published, metrics
        and status sent): a run killed in between is finished by its next attempt."""
        marker = self.store.get_bytes(f"{self.run_id}/{layout.RUN_COMPLETE}")
        return json.loads(marker)["step"] if marker else None

    def uri_of(self, step: int) -> str:
        return f"{self.store.uri.rstrip('/')}/{self.run_id}/{layout.step_tag(step)}"


def finished_runs(store: CheckpointStore, *, run_prefix: str = "", only_run: Optional[str] = None) -> list[StoredRun]:
    """Runs in the store whose final checkpoint is complete, newest first (run ids sort by their UTC launch
    time): those whose id starts with `run_prefix`, or `only_run` alone."""
    run_ids = set()
    for key in store.list(f"{only_run}/" if only_run else run_prefix):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == layout.MANIFEST and (only_run is None or parts[0] == only_run):
            run_ids.add(parts[0])
    runs = [StoredRun(store, run_id) for run_id in sorted(run_ids, reverse=True)]
    return [run for run in runs if run.finished()]
