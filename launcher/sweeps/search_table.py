"""`launch sweep status SWEEP`: a searched sweep's header lines and its cells' table, from `SearchSweepView`."""

from __future__ import annotations

from typing import Optional

from launcher.views.search import SearchCellView, SearchSweepView
from launcher.views.tables import Header, render_table

HEADER = Header(("CELL", "RUN", "STATE", "STEP", "METRIC", "JUDGED", "DOLLARS"), drop=("RUN", "DOLLARS"))


def lines(report: SearchSweepView) -> list[str]:
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
    money = ("" if report.dollars_spent is None else f", ${report.dollars_spent:.2f} spent"
             + (f", ${report.dollars_not_spent:.2f} not spent by pruned cells" if report.dollars_not_spent else ""))
    found.append(steps + hours + (money or ", dollars unknown (no price)"))
    if report.best:
        best = next(cell for cell in report.cells if cell.cell == report.best)
        found.append(f"best   {best.cell} ({report.metric} {_number(best.metric)})")
    found.append(render_table(HEADER, [_row(cell) for cell in report.cells], state_column=2))
    return found


def _row(cell: SearchCellView) -> tuple:
    step = f"{cell.step if cell.step is not None else '-'}/{cell.total_steps or '-'}" if cell.run_id else "-"
    judged = ", ".join(f"{j.verdict} at {j.budget:g}" for j in cell.judgements) or "-"
    dollars = (f"${cell.cost.dollars_used:.2f}" if cell.cost and cell.cost.dollars_used is not None
               else "unknown" if cell.run_id else "-")
    return (cell.cell, cell.run_id or "-", str(cell.state or "waiting"), step, _number(cell.metric), judged, dollars)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"
