"""`launch status` with sweeps: a sweep's cells grouped under one row of its own, and `launch status SWEEP`'s rows.
The hub's Runs page groups its list the same way, with the same summary of each sweep (`sweep_view`).

The sweep's row stands where its first cell was launched; its state is the liveliest of its cells' (any live:
running; else any failed: failed; else any stopped: stopped; else finished), its step the cells finished of
those launched, its restarts their sum, its age its first cell's.

On a database several people launch into (a team's `SPOTTRAIN_DB`) the table ends in a WHO column, and
`--all-projects` adds a PROJECT column after the run's id.

On a narrow terminal the tables drop columns (`DROP`, least important first) and keep the run id, state and step
whole: restarts and age first, then the recipe (a run id starts with its recipe's name), the target, who launched
it, and last the project `--all-projects` asked for.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional

from launcher.registry import age
from launcher.views import RunView, SweepView
from launcher.views.tables import Header
from spottrain_contract.job import RunState

HEADER = ("RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE")
DROP = ("RESTARTS", "AGE", "RECIPE", "TARGET", "WHO", "PROJECT")  # on a narrow terminal, in this order
CELL_HEADER = Header(("CELL", "RUN", "STATE", "STEP", "RESTARTS", "AGE"), drop=("RESTARTS", "AGE"))
CELL_INDENT = "  "


def sweep_state(states: Iterable[RunState]) -> RunState:
    states = list(states)
    if any(not state.is_terminal for state in states):
        return RunState.RUNNING
    for ended in (RunState.FAILED, RunState.STOPPED):
        if ended in states:
            return ended
    return RunState.FINISHED


def groups(views: list[RunView]) -> list[tuple[Optional[str], list[RunView]]]:
    """The runs in launch order, a sweep's cells together where its first cell was launched: `(None, [run])` for
    a run outside any sweep, `(sweep id, cells)` for a sweep."""
    grouped: dict[str, list[RunView]] = {}
    listed: list[tuple[Optional[str], list[RunView]]] = []
    for view in views:
        if view.sweep_id is None:
            listed.append((None, [view]))
        elif view.sweep_id in grouped:
            grouped[view.sweep_id].append(view)
        else:
            grouped[view.sweep_id] = [view]
            listed.append((view.sweep_id, grouped[view.sweep_id]))
    return listed


def sweep_view(sweep_id: str, cells: list[RunView]) -> SweepView:
    units = {cell.device_unit for cell in cells if cell.device_hours is not None}
    hours = sum(cell.device_hours for cell in cells if cell.device_hours is not None) if len(units) == 1 else None
    return SweepView(sweep_id=sweep_id, recipe=cells[0].recipe, task=cells[0].task, target=cells[0].target,
                     state=sweep_state(cell.state for cell in cells),
                     finished=sum(cell.state is RunState.FINISHED for cell in cells), cells=[c.id for c in cells],
                     states=dict(Counter(str(cell.state) for cell in cells)),
                     restarts=sum(cell.restarts for cell in cells), started=min(cell.started for cell in cells),
                     launched_by=_distinct(cell.launched_by for cell in cells), device_hours=hours,
                     device_unit=units.pop() if hours is not None else None)


def sweep_views(views: list[RunView]) -> dict[str, SweepView]:
    """Each sweep among `views`, by its id."""
    return {sweep_id: sweep_view(sweep_id, cells) for sweep_id, cells in groups(views) if sweep_id is not None}


def several_launchers(views: list[RunView]) -> bool:
    """Whether the runs were launched by more than one person: then `launch status` says who launched each."""
    return len(_distinct(view.launched_by for view in views)) > 1


def status_header(*, projects: bool = False, who: bool = False) -> Header:
    """The columns of `status_rows`, with those a narrow terminal drops (`DROP`)."""
    names = (HEADER[0], *(("PROJECT",) if projects else ()), *HEADER[1:], *(("WHO",) if who else ()))
    return Header(names, drop=[name for name in DROP if name in names])


def status_rows(views: list[RunView], *, projects: bool = False, who: bool = False) -> list[tuple]:
    """The table of `launch status`: a run outside any sweep as itself, a sweep as its row and its cells' rows
    (indented run ids), in launch order, each run's eval and predict jobs indented under it; with `projects` and
    `who`, the columns `status_header` names."""
    def framed(row: tuple, members: list[RunView]) -> tuple:
        key, *rest = row
        project = (_joined(view.project for view in members),) if projects else ()
        launcher = (_joined(view.launched_by for view in members),) if who else ()
        return (key, *project, *rest, *launcher)

    listed, jobs = _jobs_apart(views)

    def with_jobs(row: tuple, view: RunView) -> list[tuple]:
        return [row, *(framed(_row(CELL_INDENT + job.id, job, job.job), [job]) for job in jobs.get(view.id, ()))]

    rows = []
    for sweep_id, members in groups(listed):
        if sweep_id is None:
            rows += with_jobs(framed(_row(members[0].id, members[0]), members), members[0])
            continue
        rows.append(framed(sweep_row(sweep_id, members), members))
        for cell in members:
            rows += with_jobs(framed(_row(CELL_INDENT + cell.id, cell), [cell]), cell)
    return rows


def _jobs_apart(views: list[RunView]) -> tuple[list[RunView], dict[str, list[RunView]]]:
    """The runs listed on their own, and the eval and predict jobs of each run among them (listed under it, the
    job's kind where the recipe would be); a job whose run is not listed stands on its own."""
    ids = {view.id for view in views}
    jobs: dict[str, list[RunView]] = {}
    for view in views:
        if view.job_of in ids:
            jobs.setdefault(view.job_of, []).append(view)
    return [view for view in views if view.job_of not in ids], jobs


def sweep_row(sweep_id: str, cells: list[RunView]) -> tuple:
    sweep = sweep_view(sweep_id, cells)
    return (sweep_id, sweep.recipe, sweep.target, str(sweep.state), f"{sweep.finished}/{len(cells)} cells",
            sweep.restarts, age(sweep.started))


def sweep_line(sweep_id: str, cells: list[RunView]) -> str:
    """The line above `launch status SWEEP`'s table."""
    sweep = sweep_view(sweep_id, cells)
    return (f"sweep {sweep_id}: recipe {sweep.recipe} on {sweep.target}, {sweep.state}, "
            f"{sweep.finished}/{len(cells)} cells finished")


def cell_rows(cells: list[RunView]) -> list[tuple]:
    """`launch status SWEEP`: one row per launched cell, with the run id `logs`, `stop` and `compare` take."""
    return [(cell.cell, cell.id, str(cell.state), cell.progress, cell.restarts, age(cell.started)) for cell in cells]


def _row(key: str, view: RunView, what: Optional[str] = None) -> tuple:
    return (key, what or view.recipe, view.target, str(view.state), view.progress, view.restarts, age(view.started))


def _distinct(values: Iterable[Optional[str]]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))


def _joined(values: Iterable[Optional[str]]) -> str:
    return ",".join(_distinct(values)) or "-"
