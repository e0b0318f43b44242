"""`launch status` with sweeps: a sweep's cells grouped under one row of its own, and `launch status SWEEP`'s rows.
The hub's Runs page groups its list the same way, with the same summary of each sweep (`sweep_view`).

The sweep's row stands where its first cell was launched; its state is the liveliest of its cells' (any live:
running; else any failed: failed; else any stopped: stopped; else finished), its step the cells finished of
those launched, its restarts their sum, its age its first cell's.

On a database several people launch into (a team's `SPOTTRAIN_DB`) the table ends in a WHO column, and
`--all-projects` adds a PROJECT column after the run's id.

`launch sweep status SWEEP` (a sweep a search explores): its search, steps against the full grid and money, its
best cell, and a row per cell with its judgements (`search_lines`).

On a narrow terminal the tables drop columns (`DROP`, least important first) and keep the run id, state and step
whole: restarts and age first, then the recipe (a run id starts with its recipe's name), the target, who launched
it, and last the project `--all-projects` asked for.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional

from launcher.registry import age
from launcher.views import RunView, SearchCellView, SearchSweepView, SweepView
from launcher.views.tables import Header, dollars, render_table
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


# --- a sweep a search explores --------------------------------------------------------------------------------

SEARCH_HEADER = Header(("CELL", "RUN", "STATE", "STEP", "METRIC", "JUDGED", "DOLLARS"), drop=("RUN", "DOLLARS"))


def search_lines(report: SearchSweepView) -> list[str]:
    """`launch sweep status SWEEP`: the sweep, its search, its steps and money, its best cell, then its cells."""
    controller = (f"controller {report.controller}" if report.controller_alive
                  else "no controller (launch sweep resume starts one)" if report.state in ("running", "stopping")
                  else "")
    rungs = f", rungs at {', '.join(f'{r:g}' for r in report.rungs)}" if report.rungs else ""
    found = [f"sweep {report.sweep_id} ({report.recipe} on {report.target}): {report.state}"
             + (f", {controller}" if controller else ""),
             f"search {report.method} on {report.metric} ({report.mode}), budget {report.budget}"
             f" = {_number(report.full_budget)}{rungs}"]
    steps = f"steps {report.steps_computed}" + (f" of {report.steps_full_grid} for the full grid"
                                                if report.steps_full_grid else "")
    hours = (f", {report.device_hours:.3g} {report.device_unit}-hours" if report.device_hours is not None else "")
    money = ("" if report.dollars_spent is None else f", {dollars(report.dollars_spent)} spent"
             + (f", {dollars(report.dollars_not_spent)} not spent by pruned cells" if report.dollars_not_spent
                else ""))
    found.append(steps + hours + (money or ", dollars unknown (no price)"))
    if report.best:
        best = next(cell for cell in report.cells if cell.cell == report.best)
        found.append(f"best   {best.cell} ({report.metric} {_number(best.metric)})")
    found.append(render_table(SEARCH_HEADER, [_search_row(cell) for cell in report.cells], state_column=2))
    return found


def _search_row(cell: SearchCellView) -> tuple:
    step = f"{cell.step if cell.step is not None else '-'}/{cell.total_steps or '-'}" if cell.run_id else "-"
    judged = ", ".join(f"{j.verdict} at {j.budget:g}" for j in cell.judgements) or "-"
    spent = (dollars(cell.cost.dollars_used) if cell.cost and cell.cost.dollars_used is not None
             else "unknown" if cell.run_id else "-")
    return (cell.cell, cell.run_id or "-", str(cell.state or "waiting"), step, _number(cell.metric), judged, spent)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"
