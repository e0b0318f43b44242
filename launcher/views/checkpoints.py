"""A run's checkpoints as its store holds them (the hub's Run page lists them): each step, its size, whether it is
complete, best or final, and the final export. Read through the contract's lookup, as the trainer resumes and
the launcher finds a stage's best checkpoint, so the page shows what they would take."""

from __future__ import annotations

from launcher.registry import RunRecord
from launcher.run_store import read_from_store
from launcher.views import CheckpointsView, CheckpointView
from spottrain_contract import layout
from spottrain_contract.job import RunState
from spottrain_contract.layout import Manifest
from spottrain_contract.lookup import StoredRun, steps_in
from spottrain_contract.store import CheckpointStore


def run_checkpoints(record: RunRecord) -> CheckpointsView:
    """The run's checkpoints (a draft has none), a store out of reach one line of error."""
    if record.state is RunState.DRAFT:
        return CheckpointsView(checkpoints=[])
    return read_from_store(record, "checkpoints", lambda store: checkpoints_in(store, record.run_id))


def checkpoints_in(store: CheckpointStore, run_id: str) -> CheckpointsView:
    """One listing of the run's keys, then each complete step's manifest (its sizes, whether final) and the best
    pointer. A step without a manifest is an upload under way, or one an attempt died in: no size yet."""
    keys = store.list(f"{run_id}/")
    complete, by_step = steps_in(keys)
    best = StoredRun(store, run_id).best_step() if complete else None
    rows = []
    for step in sorted(by_step):
        manifest = None
        if step in complete:
            data = store.get_bytes(layout.step_prefix(run_id, step) + layout.MANIFEST)
            if data is None:
                continue  # retention deleted it since the listing
            manifest = Manifest.from_json(data)
        rows.append(CheckpointView(step=step, bytes=sum(f.size for f in manifest.files) if manifest else None,
                                   complete=manifest is not None, best=step == best,
                                   final=bool(manifest and manifest.final)))
    export = f"{run_id}/{layout.FINAL_EXPORT}/"
    return CheckpointsView(checkpoints=rows, export_files=sum(key.startswith(export) for key in keys),
                           completed=f"{run_id}/{layout.RUN_COMPLETE}" in keys)
