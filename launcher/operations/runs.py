"""The runs as they stand: listing and status, one run's view, logs, stop, and what was recorded of a run (metric
curves, system metrics, checkpoints, the preemption ledger). `launch status`/`logs`/`stop` and the hub's pages,
API and streams all read through here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator, Optional

from launcher import ledger_refresh, runner, usage
from launcher.views import checkpoints as checkpoints_view
from launcher.views import ledger as ledger_view
from launcher.views.console import for_console
from launcher.errors import LaunchError
from launcher.mlflow_runs import finite, mlflow_run, run_histories
from launcher.operations.drafts import override_mapping
from launcher.operations.launching import DraftEntry
from launcher.operations.workspace import Workspace
from launcher.registry import RunRecord
from launcher.views import CheckpointsView, HubRunView, LedgerView, RunView
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState, progress_path
from spottrain_contract.ledger import Ledger

PAGE_SIZE = 200  # the runs a listing shows unless asked for more: the newest
PLATFORM_COUNTS = {"skypilot": "SkyPilot"}  # targets whose status counts the job's recoveries (record.restarts)


@dataclass(frozen=True)
class StatusReport:
    """`launch status [RUN|SWEEP]`: the runs' views (one run's, a sweep's cells, or every run listed)."""

    views: list[RunView]
    sweep_id: Optional[str] = None  # the name asked for was this sweep's: `views` are its cells
    ledger_table: Optional[str] = None  # one run: its attempts and what preemption cost it, as a table
    warnings: list[str] = field(default_factory=list)  # one line each: a run or a ledger that could not be read


def status(ws: Workspace, name: Optional[str] = None) -> StatusReport:
    """Every run of the workspace's listing (a platform's run that ended is shown as recorded), or the run or sweep
    `name` (asked of its target). One run's ledger is read first, so its view carries the goodput and the dollars
    its table says."""
    registry = ws.registry
    cells = registry.cells_of(name) if name and not registry.exists(name) else []
    if name and not cells:
        record = registry.get(name)
        ledger, warnings = _read_ledger(ws, record)
        view = runner.run_view(registry, registry.get(name))
        if ledger is None:
            return StatusReport([view], warnings=warnings)
        record = registry.get(name)  # as its target just told: where the job ran prices it
        cost = ledger_view.cost_model(record, ledger)
        table = ledger_view.ledger_text(ledger, PLATFORM_COUNTS.get(record.target), record.restarts, cost)
        return StatusReport([view.model_copy(update={"cost": cost})], ledger_table=table or None)
    views, warnings = [], []
    for record in cells or registry.all():
        try:
            views.append(runner.run_view(registry, record) if cells else runner.listed_view(registry, record))
        except UserError as exc:  # one platform out of reach must not hide the runs of the others
            views.append(runner.run_view(registry, record, reachable=False))
            warnings.append(f"warning: {record.run_id}: {exc}")
    skipped = [f"warning: {skip}" for skip in registry.skipped]
    return StatusReport(views, sweep_id=name if cells else None, warnings=[*skipped, *warnings])


def _read_ledger(ws: Workspace, record: RunRecord) -> tuple[Optional[Ledger], list[str]]:
    try:
        return ledger_view.run_ledger(ws.registry, record), []
    except Exception as exc:  # no credentials for the store here, or it is out of reach: the row still stands
        return None, [f"warning: ledger of {record.run_id} not read from {record.store}: {exc}"]


def run_names(ws: Workspace) -> list[str]:
    """Run ids and sweep ids, for shell completion."""
    records = ws.registry.all()
    return [r.run_id for r in records] + list(dict.fromkeys(r.sweep_id for r in records if r.sweep_id))


def logs(ws: Workspace, run_id: str, *, follow: bool = False, raw: bool = False) -> Iterator[str]:
    """A run's log (until it ends, with `follow`), less third-party banners and repeated tracebacks unless
    `raw`."""
    lines = runner.logs(ws.registry.get(run_id), follow)
    return lines if raw else for_console(lines)


def stop(ws: Workspace, run_id: str) -> RunState:
    """Ask the run's target to stop it gracefully (it checkpoints, then exits)."""
    return runner.stop(ws.registry, ws.registry.get(run_id))


def wait_for(ws: Workspace, run_id: str) -> None:
    runner.wait_until_finished(ws.registry, run_id)


# --- the hub's views --------------------------------------------------------------------------------------------

_losses: dict[tuple[str, str], tuple[str, Optional[float]]] = {}  # (project, run id) → (step, its loss)


def latest_loss(ws: Workspace, record: RunRecord, step: str) -> Optional[float]:
    """`train/loss` as last logged; asked of MLflow once per step the run reports, remembered for the newest
    PAGE_SIZE runs' ids only (the list's window)."""
    key = (ws.registry.project_key, record.run_id)
    cached = _losses.get(key)
    if cached is None or cached[0] != step:
        try:
            _, run = mlflow_run(record)
        except Exception:  # an MLflow store out of reach must not break the list
            run = None
        cached = (step, finite(run.data.metrics.get("train/loss")) if run is not None else None)
        if len(_losses) >= 4 * PAGE_SIZE:
            _losses.clear()
        _losses[key] = cached
    return cached[1]


def hub_view(ws: Workspace, record: RunRecord, *, with_loss: bool = True) -> HubRunView:
    """The run as `launch status` lists it, plus what the hub adds (display name, profile, loss); `overrides` as
    `{dotted key: value}`, the shape a new run is posted with."""
    registry = ws.registry
    try:
        view = runner.listed_view(registry, record)
    except UserError:
        view = runner.run_view(registry, record, reachable=False)
    entry = DraftEntry.of(record)
    overrides = dict(entry.overrides) if record.state is RunState.DRAFT and entry else override_mapping(
        view.overrides)
    if view.step is None and record.local_dir:  # the trainer's progress file, where the target did not report it
        try:
            progress = json.loads(progress_path(record.local_dir, record.run_id).read_text())
            view = view.model_copy(update={"step": int(progress["step"]), "total_steps": int(progress["total"])})
        except (OSError, ValueError, KeyError, TypeError):
            pass
    step = view.progress
    ledger_refresh.refresh_soon(registry, record, view.state, step)
    return HubRunView(**{**view.model_dump(exclude={"overrides"}), "name": entry and entry.name or view.name},
                      overrides=overrides, profile=entry.profile if entry else None,
                      loss=latest_loss(ws, record, step) if with_loss and record.state is not RunState.DRAFT else None,
                      log=record.log is not None)


def run(ws: Workspace, run_id: str) -> HubRunView:
    return hub_view(ws, ws.registry.get(run_id))


@dataclass(frozen=True)
class Listing:
    """A window of the run list (the newest `limit` after the `offset` newest, oldest first), each sweep's summary
    over its cells in the window, and where the window stands among all runs."""

    views: list[HubRunView]
    sweeps: dict
    window: dict


def listing(ws: Workspace, limit: int = PAGE_SIZE, offset: int = 0) -> Listing:
    from launcher.sweeps import status as sweep_status

    views = [hub_view(ws, record) for record in ws.registry.all(limit=limit, offset=offset)]
    sweeps = {sweep_id: sweep.model_dump(mode="json") for sweep_id, sweep in sweep_status.sweep_views(views).items()}
    return Listing(views, sweeps, window(ws.registry.count(), offset, limit))


def window(total: int, offset: int, size: int = PAGE_SIZE) -> dict:
    """Where a page of the list stands among all runs: its first and last (counted from the newest) and the
    offsets of the newer and older pages (None at either end)."""
    return {"total": total, "first": min(offset + 1, total), "last": min(offset + size, total), "offset": offset,
            "newer": max(0, offset - size) if offset else None,
            "older": offset + size if offset + size < total else None}


def metric_histories(ws: Workspace, run_id: str) -> dict[str, list[list[float]]]:
    """Every metric's history `[[step, value], ...]` (system metrics left out), for the curves."""
    return run_histories(ws.registry.get(run_id))


def system_histories(ws: Workspace, run_id: str) -> dict:
    """{node: {metric: [[time, value], ...]}}: GPU, CPU and memory use per node."""
    return usage.system_histories(ws.registry.get(run_id))


def checkpoints(ws: Workspace, run_id: str) -> CheckpointsView:
    return checkpoints_view.run_checkpoints(ws.registry.get(run_id))


def ledger(ws: Workspace, run_id: str) -> LedgerView:
    return ledger_view.run_ledger_view(ws.registry, ws.registry.get(run_id))


def wait_for_ledger_reads() -> None:
    """Until every background ledger read asked for so far is done (tests)."""
    ledger_refresh.wait()


__all__ = ["Listing", "LaunchError", "PAGE_SIZE", "StatusReport", "checkpoints", "hub_view", "ledger", "listing",
           "logs", "metric_histories", "run", "run_names", "status", "stop", "system_histories",
           "wait_for", "wait_for_ledger_reads", "window"]
