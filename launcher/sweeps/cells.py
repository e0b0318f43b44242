"""A sweep recipe's cells, planned and launched: every cell validated and rendered before anything starts, then
one run per cell, finished cells skipped and unfinished ones resumed when the same sweep is launched again.

A sweep's id is `<recipe>-<8 hex>`, a digest of what the launch asked for (target, profile, overrides, the axes),
or what `--sweep-id` says; a cell's run id is `<sweep id>-<cell>`, the same at every launch of the sweep, so a
relaunch finds each cell's run in the registry and its checkpoints in the store (the trainer resumes a run id
from its newest complete checkpoint). On a platform at most `max_parallel` cells are live at once: the launch
submits that many, then waits for one to end before it submits the next. The syntax is `spottrain_contract.sweep`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from launcher import runner
from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.registry import Registry
from launcher.requests import LaunchRequest
from launcher.sweeps.parent import close_parent_run, open_parent_run
from spottrain_contract.job import RunState
from spottrain_contract.recipe import LoadedRecipe
from spottrain_contract.search import Search, cell_from
from spottrain_contract.sweep import Cell, cells, check_name


@dataclass(frozen=True)
class SweepPlan:
    sweep_id: str
    loaded: LoadedRecipe  # the recipe as written (profile and overrides applied, no cell)
    target: str
    cells: tuple[LaunchPlan, ...] = ()  # one run per cell, in grid order, once planned

    @property
    def axes(self) -> dict:
        return self.loaded.recipe.sweep


def plan_sweep(request: LaunchRequest, bare: LoadedRecipe) -> SweepPlan:
    """The sweep of `bare` (the recipe of `request`, loaded without a cell), its cells still to plan
    (`cell_requests`); `--sweep-id` checked."""
    if request.sweep_id is not None:
        try:
            check_name(request.sweep_id)
        except ValueError as exc:
            raise LaunchError(f"--sweep-id: {exc}") from None
    return SweepPlan(sweep_id=request.sweep_id or default_sweep_id(bare, request.target), loaded=bare,
                     target=request.target)


def cell_requests(sweep: SweepPlan, request: LaunchRequest) -> list[LaunchRequest]:
    """One request per cell, in grid order: the sweep's request for that cell, under its stable run id (a cell
    launched before resumes, with the settings it was launched with unless `allow_changes`). A search that
    samples its trials has no cells before it draws them: its two corner cells (every axis's first entry and each
    space key's lowest value; the last entries and highest values) stand in for them, so the ends of its space
    are validated and rendered before anything starts."""
    search = sweep.loaded.recipe.search
    chosen = corner_cells(sweep.axes, search) if search is not None and search.trials else cells(sweep.axes)
    return [request.but(run_id=cell_run_id(sweep.sweep_id, cell.name), cell=cell, sweep_id=sweep.sweep_id,
                        max_parallel=None)
            for cell in chosen]


def corner_cells(axes: dict, search: Search) -> list[Cell]:
    """The lowest and the highest cell a search's trials can draw (choices: the first and the last)."""
    return [cell_from({**{axis: list(entries)[pick] for axis, entries in axes.items()},
                       **{key: d.values[pick] for key, d in search.space.items()}}, axes, search, name)
            for name, pick in (("corner-low", 0), ("corner-high", -1))]


def default_sweep_id(loaded: LoadedRecipe, target: str) -> str:
    """`<recipe>-<8 hex>`: the same for the same ask (target, profile, overrides, axes), so a relaunch finds its
    cells; another target, profile, override or axis is another sweep."""
    asked = {"target": target, "profile": loaded.profile, "overrides": list(loaded.overrides),
             "sweep": loaded.recipe.sweep}
    if loaded.recipe.search is not None:  # another search of the same axes is another sweep
        asked["search"] = loaded.recipe.search.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(asked, default=str).encode()).hexdigest()[:8]
    return f"{loaded.name}-{digest}"


def cell_run_id(sweep_id: str, cell: str) -> str:
    return f"{sweep_id}-{cell}"


def launch_sweep(sweep: SweepPlan, registry: Registry, *, submit: Callable[[LaunchPlan], Optional[RunState]],
                 say: Callable[[str], None], max_parallel: Optional[int] = None,
                 poll_seconds: float = 30.0) -> dict[str, Optional[RunState]]:
    """Each cell in grid order: skipped if finished, left alone if live, else submitted (resumed if it ran
    before) through `submit`, which returns the run's final state when it follows the run to its end (here) and
    None when the run goes on without it (a platform). Every cell nests under the sweep's parent MLflow run.
    Returns each cell's state as this launch left it."""
    project_dir = registry.project_dir
    parent, note = open_parent_run(sweep, project_dir)
    say(note)
    live: list[str] = []
    states: dict[str, Optional[RunState]] = {}
    for cell_plan in sweep.cells:
        plan = dataclasses.replace(cell_plan, mlflow_parent=parent)
        cell = plan.loaded.cell
        before = _state_before(registry, plan, project_dir)
        if before is RunState.FINISHED:
            say(f"cell {cell.name}: finished, skipped (run {plan.run_id})")
            states[cell.name] = before
            continue
        if before is not None and not before.is_terminal:
            say(f"cell {cell.name}: live on {plan.target} ({before}), not launched again (run {plan.run_id})")
            live.append(plan.run_id)
            states[cell.name] = before
            continue
        if max_parallel is not None:
            _wait_for_a_slot(registry, live, max_parallel, poll_seconds, say)
        say(f"== {sweep.sweep_id}: cell {cell.name}"
            + (f", resuming run {plan.run_id} ({before})" if before is not None else ""))
        states[cell.name] = submit(plan)
        live.append(plan.run_id)
    if parent and all(state is not None and state.is_terminal for state in states.values()):
        close_parent_run(sweep, project_dir, parent, finished=all(s is RunState.FINISHED for s in states.values()))
    return states


def _state_before(registry: Registry, plan: LaunchPlan, project_dir: Path) -> Optional[RunState]:
    """Where the cell's run is now: None if it never ran; FINISHED too for a run here whose store holds its final
    checkpoint even though the registry does not know it."""
    if runner.completed_here(plan, project_dir) is not None:
        return RunState.FINISHED
    if not registry.exists(plan.run_id):
        return None
    return runner.refresh(registry, registry.get(plan.run_id)).state


def _wait_for_a_slot(registry: Registry, live: list[str], max_parallel: int, poll_seconds: float,
                     say: Callable[[str], None]) -> None:
    """Until fewer than `max_parallel` of the `live` runs are live (those that ended are dropped from it)."""
    waiting = False
    while True:
        live[:] = [run_id for run_id in live if not runner.refresh(registry, registry.get(run_id)).state.is_terminal]
        if len(live) < max_parallel:
            return
        if not waiting:
            say(f"waiting for one of {len(live)} live cells to end (--max-parallel {max_parallel})")
            waiting = True
        time.sleep(poll_seconds)
