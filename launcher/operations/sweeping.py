"""A sweep that a search explores (`search.method` asha, hyperband or median): start it, see it, stop and resume
it. The launch records the sweep and hands it to a controller (`launcher.sweeps.controller`) that runs without
the user's terminal: a detached process of its own, or a thread of `launch hub`, which adopts every running
sweep of its projects whose controller is gone. Both faces go through here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher import runner
from launcher.errors import LaunchError
from launcher.mlflow_runs import first_points, mlflow_run, steps_per_epoch
from launcher.operations.launching import PlannedSweep, resume
from launcher.operations.workspace import Workspace
from launcher.sweeps.book import CONTROLLER_LOG, SweepBook, SweepRecord, SweepState, Verdict, request_of, sweep_dir
from launcher.sweeps.parent import open_parent_run
from launcher.views.ledger import cost_model, device_unit, stored_ledger
from launcher.views import JudgementView, SearchCellView, SearchSweepView
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped, load_recipe
from spottrain_contract.search import budget_value
from spottrain_contract.sweep import cells


@dataclass(frozen=True)
class SearchStarted:
    sweep_id: str
    state: SweepState
    controller: str  # `pid N` of the detached controller, or who holds it already
    log: Path
    relaunched: bool  # the sweep was recorded before: its decisions stand, its controller resumes it


def start_search(ws: Workspace, planned: PlannedSweep) -> SearchStarted:
    """Record the sweep (a relaunch finds it as it was) and start its controller unless a live one holds it."""
    relaunched = record_search(ws, planned)
    sweep_id = planned.sweep.sweep_id
    return SearchStarted(sweep_id, SweepState.RUNNING, start_controller(ws, sweep_id), controller_log(ws, sweep_id),
                         relaunched)


def record_search(ws: Workspace, planned: PlannedSweep) -> bool:
    """The sweep in the run database with what its launch asked (each cell is planned from it) and its MLflow
    parent run (found or made); a sweep recorded before is set running again, its decisions kept. True if it
    was recorded before."""
    book = SweepBook(ws.registry)
    plan = planned.sweep
    if book.exists(plan.sweep_id):
        if book.get(plan.sweep_id).state is not SweepState.RUNNING:
            book.update(plan.sweep_id, state=SweepState.RUNNING, ended=None)
        return True
    parent, _ = open_parent_run(plan, ws.project_dir) if planned.cells else (None, "")
    loaded = plan.loaded
    asked = {"recipe": loaded.name, "target": plan.target, "profile": loaded.profile,
             "overrides": list(loaded.overrides), "max_parallel": planned.max_parallel,
             "chaos": planned.cells[0].plan.chaos if planned.cells else None}
    book.create(SweepRecord(sweep_id=plan.sweep_id, recipe=loaded.name, target=plan.target,
                            method=loaded.recipe.search.method, request=asked,
                            search=loaded.recipe.search.model_dump(mode="json"), state=SweepState.RUNNING,
                            started=time.time(), ended=None, controller=None, heartbeat=None, parent_run=parent))
    return False


def controller_log(ws: Workspace, sweep_id: str) -> Path:
    return sweep_dir(ws.project_dir, sweep_id) / CONTROLLER_LOG


def start_controller(ws: Workspace, sweep_id: str) -> str:
    """A detached controller for the sweep (its log beside the sweep's summary), unless a live one holds it."""
    book = SweepBook(ws.registry)
    record = book.get(sweep_id)
    if book.controller_alive(record):
        return f"held by {record.controller}"
    log_path = controller_log(ws, sweep_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if ws.registry.url:
        env["SPOTTRAIN_DB"] = ws.registry.url
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "launcher.sweeps.controller", "--project",
                                    str(ws.project_dir), "--sweep-id", sweep_id], cwd=ws.project_dir, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return f"pid {process.pid}"


def adopt_orphans(ws: Workspace, stop: threading.Event) -> list[threading.Thread]:
    """`launch hub`: a controller thread for every running (or stopping) sweep whose controller is gone."""
    book = SweepBook(ws.registry)
    threads = []
    for record in book.all():
        if record.state in (SweepState.RUNNING, SweepState.STOPPING) and not book.controller_alive(record):
            home = home_of(ws, record.sweep_id)
            thread = threading.Thread(target=_run_in_thread, args=(home, record.sweep_id, stop), daemon=True,
                                      name=f"sweep-{record.sweep_id}")
            thread.start()
            threads.append(thread)
    return threads


def keep_sweeps_controlled(ws: Workspace, stop: threading.Event, every: float = 30.0) -> threading.Thread:
    """`launch hub`: adopt the orphaned sweeps now and every `every` seconds until `stop` (a controller that dies
    while the hub runs is replaced within that)."""
    def keep() -> None:
        while not stop.is_set():
            try:
                adopt_orphans(ws, stop)
            except Exception as exc:  # the database out of reach for a moment: said, tried again
                print(f"hub: sweeps not adopted ({exc})", file=sys.stderr, flush=True)
            stop.wait(every)

    thread = threading.Thread(target=keep, daemon=True, name="sweep-keeper")
    thread.start()
    return thread


def searched_sweeps(ws: Workspace) -> list[SweepRecord]:
    """The sweeps a search explores, oldest first (a plain grid sweep is not among them)."""
    return SweepBook(ws.registry).all()


def home_of(ws: Workspace, sweep_id: str) -> Workspace:
    """The workspace of the project the sweep was launched from (a hub serves every project's): its recipe is
    read and its controller started there. SweepNotFound (404) where no search explores the sweep."""
    SweepBook(ws.registry).get(sweep_id)
    cells_ = ws.registry.cells_of(sweep_id)
    return ws.of_run(cells_[0].project) if cells_ else ws


def _run_in_thread(ws: Workspace, sweep_id: str, stop: threading.Event) -> None:
    from launcher.sweeps.book import ControllerBusy
    from launcher.sweeps.controller import Controller  # it plans cells through operations.launching

    try:
        log = controller_log(ws, sweep_id)
        log.parent.mkdir(parents=True, exist_ok=True)

        def say(line: str) -> None:  # the hub's controllers write where a detached one would
            with open(log, "a") as out:
                out.write(f"{line} (in the hub)\n")

        Controller(ws, sweep_id, say=say, stop_requested=stop).run()
    except (ControllerBusy, LaunchError):
        pass


def stop_search(ws: Workspace, sweep_id: str) -> SweepState:
    """Ask the sweep to stop: its controller stops every live cell gracefully (checkpoints kept), then marks it
    stopped; a controller is started to do it where none lives."""
    ws = home_of(ws, sweep_id)
    book = SweepBook(ws.registry)
    record = book.get(sweep_id)
    if record.state in (SweepState.FINISHED, SweepState.STOPPED):
        return record.state
    book.update(sweep_id, state=SweepState.STOPPING)
    start_controller(ws, sweep_id)
    return SweepState.STOPPING


def resume_search(ws: Workspace, sweep_id: str) -> SearchStarted:
    """Go on with a stopped sweep, or one whose controller died: cells a person stopped are resumed (pruned ones
    stay pruned), and a controller takes it up where its decisions left it."""
    ws = home_of(ws, sweep_id)
    book = SweepBook(ws.registry)
    record = book.get(sweep_id)
    if record.state is SweepState.FINISHED and not _stopped_cells(ws, sweep_id):
        raise LaunchError(f"sweep {sweep_id} finished: nothing to resume")
    if record.state is not SweepState.RUNNING:
        book.update(sweep_id, state=SweepState.RUNNING, ended=None)
    for run_id in _stopped_cells(ws, sweep_id):
        resume(ws, run_id)
    return SearchStarted(sweep_id, SweepState.RUNNING, start_controller(ws, sweep_id), controller_log(ws, sweep_id),
                         True)


def _stopped_cells(ws: Workspace, sweep_id: str) -> list[str]:
    return [record.run_id for record in ws.registry.cells_of(sweep_id) if record.state is RunState.STOPPED]


def search_report(ws: Workspace, sweep_id: str) -> SearchSweepView:
    """The sweep as its page and `launch sweep status` show it: each cell's metric against its budget, the
    decisions, the best cell, steps against the full grid, and the money."""
    ws = home_of(ws, sweep_id)
    book = SweepBook(ws.registry)
    record = book.get(sweep_id)
    request = request_of(record)
    bare = load_recipe(request.recipe, project_dir=ws.project_dir, profile=request.profile,
                       overrides=request.overrides)
    search = bare.recipe.search
    full = budget_value(bare.resolved, search.budget)
    decisions = book.decisions(sweep_id)
    runs = {r.cell: r for r in ws.registry.cells_of(sweep_id)}
    waiting = [] if search.trials else [c.name for c in cells(bare.recipe.sweep) if c.name not in runs]
    views = [_cell_view(ws, runs[name], search, decisions) for name in runs]
    views += [SearchCellView(cell=name) for name in waiting]
    launched = [view for view in views if view.run_id is not None]
    per_cell = max((view.total_steps or 0 for view in launched), default=0)
    units = {view.device_unit for view in launched if view.device_hours is not None}
    hours = [view.device_hours for view in launched if view.device_hours is not None]
    spent = [view.cost.dollars_used for view in launched if view.cost and view.cost.dollars_used is not None]
    unspent = [view.dollars_not_spent for view in launched if view.dollars_not_spent is not None]
    return SearchSweepView(
        sweep_id=sweep_id, recipe=record.recipe, target=record.target, method=search.method, metric=search.metric,
        mode=search.mode, budget=search.budget, full_budget=full, rungs=search.rungs(full or 0),
        state=str(record.state), controller=record.controller, controller_alive=book.controller_alive(record),
        cells=views, best=_best(views, search.mode),
        steps_computed=sum(view.steps_computed or 0 for view in launched),
        steps_full_grid=per_cell * (search.trials or len(views)) if per_cell else None,
        device_hours=sum(hours) if hours and len(units) == 1 else None,
        device_unit=next(iter(units)) if len(units) == 1 else None,
        dollars_spent=sum(spent) if spent else None, dollars_not_spent=sum(unspent) if unspent else None)


def _cell_view(ws: Workspace, record, search, decisions) -> SearchCellView:
    """One launched cell: where it is, its metric against its budget, its judgements, its ledger and dollars (a
    pruned one: what the steps it did not train would have cost at its dollars per step)."""
    shipped = from_shipped(record.recipe_document, f"run {record.run_id}") if record.recipe_document else None
    status = runner.refresh(ws.registry, record)
    full = budget_value(shipped.resolved, search.budget) if shipped is not None else None
    client, run = mlflow_run(record)
    steps_per_unit = 1.0
    if search.budget.endswith("epochs") and run is not None:
        steps_per_unit = steps_per_epoch(client, run.info.run_id) or 1.0
    total = status.total or (round(full * steps_per_unit) if full is not None else None)
    ledger = _ledger(ws, record)
    attempts = ledger is not None and bool(ledger.attempts)
    cost = cost_model(record, ledger) if attempts else None
    not_spent = None
    if (record.state is RunState.PRUNED and cost is not None and cost.dollars_per_step is not None and total
            and attempts):
        not_spent = max(0, total - ledger.useful) * cost.dollars_per_step
    points = ([[step / steps_per_unit, value] for step, value, _ in first_points(client, run.info.run_id,
                                                                                  search.metric)]
              if run is not None else [])
    return SearchCellView(
        cell=record.cell, run_id=record.run_id, state=status.state, step=status.step, total_steps=total,
        overrides=dict(shipped.cell.overrides) if shipped and shipped.cell else {},
        metric=points[-1][1] if points else None, points=points,
        judgements=[_judgement(d) for d in decisions if d.cell == record.cell],
        steps_computed=ledger.computed if attempts else None, device_hours=ledger.device_hours if attempts else None,
        device_unit=device_unit(ledger) if attempts else None, cost=cost, dollars_not_spent=not_spent)


def _judgement(decision) -> JudgementView:
    latency = (decision.acted - decision.reported if decision.verdict is Verdict.PRUNED and decision.acted
               and decision.reported else None)
    return JudgementView(rung=decision.rung, budget=decision.budget, value=decision.value,
                         verdict=str(decision.verdict), decided=decision.decided, latency_seconds=latency)


def _ledger(ws: Workspace, record):
    """The cell's ledger (its summary cached for the run lists), None where its store is out of reach: the sweep's
    page still shows the rest."""
    try:
        return stored_ledger(ws.registry, record)
    except LaunchError:
        return None


def _best(views: list[SearchCellView], mode: str) -> Optional[str]:
    """The best last metric among finished cells (else among every cell that logged one)."""
    finished = [v for v in views if v.metric is not None and v.state is RunState.FINISHED]
    pool = finished or [v for v in views if v.metric is not None]
    if not pool:
        return None
    return (min if mode == "min" else max)(pool, key=lambda v: v.metric).cell
