"""`launch status` with sweeps: a sweep's cells grouped under one row of its own, and `launch status SWEEP`'s rows.

The sweep's row stands where its first cell was launched; its state is the liveliest of its cells' (any live:
running; else any failed: failed; else any stopped: stopped; else finished), its step the cells finished of
those launched, its restarts their sum, its age its first cell's.
"""

from __future__ import annotations

from typing import Iterable

from launcher.registry import age
from launcher.views import RunView
from spottrain_contract.job import RunState

HEADER = ("RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE")
CELL_HEADER = ("CELL", "RUN", "STATE", "STEP", "RESTARTS", "AGE")
CELL_INDENT = "  "


def sweep_state(states: Iterable[RunState]) -> RunState:
    states = list(states)
    if any(not state.is_terminal for state in states):
        return RunState.RUNNING
    for ended in (RunState.FAILED, RunState.STOPPED):
        if ended in states:
            return ended
    return RunState.FINISHED


def status_rows(views: list[RunView]) -> list[tuple]:
    """The table of `launch status`: a run outside any sweep as itself, a sweep as its row and its cells' rows
    (indented run ids), in launch order."""
    rows, shown = [], set()
    for view in views:
        if view.sweep_id is None:
            rows.append(_row(view.id, view))
        elif view.sweep_id not in shown:
            shown.add(view.sweep_id)
            cells = [v for v in views if v.sweep_id == view.sweep_id]
            rows.append(sweep_row(view.sweep_id, cells))
            rows += [_row(CELL_INDENT + cell.id, cell) for cell in cells]
    return rows


def sweep_row(sweep_id: str, cells: list[RunView]) -> tuple:
    return (sweep_id, cells[0].recipe, cells[0].target, str(sweep_state(cell.state for cell in cells)),
            f"{_finished(cells)}/{len(cells)} cells", sum(cell.restarts for cell in cells),
            age(min(cell.started for cell in cells)))


def sweep_line(sweep_id: str, cells: list[RunView]) -> str:
    """The line above `launch status SWEEP`'s table."""
    return (f"sweep {sweep_id}: recipe {cells[0].recipe} on {cells[0].target}, "
            f"{sweep_state(cell.state for cell in cells)}, {_finished(cells)}/{len(cells)} cells finished")


def _finished(cells: list[RunView]) -> int:
    return sum(cell.state is RunState.FINISHED for cell in cells)


def cell_rows(cells: list[RunView]) -> list[tuple]:
    """`launch status SWEEP`: one row per launched cell, with the run id `logs`, `stop` and `compare` take."""
    return [(cell.cell, cell.id, str(cell.state), cell.step, cell.restarts, age(cell.started)) for cell in cells]


def _row(key: str, view: RunView) -> tuple:
    return (key, view.recipe, view.target, str(view.state), view.step, view.restarts, age(view.started))
