"""Compare runs (the CLI's `launch compare RUN_A RUN_B` and the hub's Compare page: one config diff, from the
recipes the runs shipped) and a sweep's cells × metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from launcher import compare, usage
from launcher.sweeps import ablation
from launcher.errors import LaunchError
from launcher.operations.drafts import display_name, draft_settings
from launcher.operations.workspace import Workspace
from launcher.views import AblationView, CompareView


def compare_runs(ws: Workspace, run_ids: Sequence[str]) -> CompareView:
    """What differs in the runs' settings and where their metrics ended (at least two runs)."""
    if len(run_ids) < 2:
        raise LaunchError(f"compare: name at least two runs, got {len(run_ids)}")
    records = [ws.registry.get(run_id) for run_id in run_ids]
    return compare.compare_view(records, lambda record: draft_settings(ws, record))


def compare_text(view: CompareView) -> str:
    return compare.compare_text(view)


def plot_runs(ws: Workspace, run_ids: Sequence[str], path: Path) -> str:
    """Overlay the runs' loss curves in `path`; the line saying what was written."""
    written, curves = compare.plot_curves([ws.registry.get(run_id) for run_id in run_ids], path)
    return f"wrote {written} ({', '.join(curves)})"


@dataclass(frozen=True)
class ComparePage:
    """The hub's Compare page: each run's name, the comparison, and side by side what each used."""

    names: list[str]
    view: CompareView
    usage: dict[str, list[Optional[float]]]


def compare_page(ws: Workspace, run_ids: Sequence[str]) -> ComparePage:
    view = compare_runs(ws, run_ids)
    records = [ws.registry.get(run_id) for run_id in run_ids]
    return ComparePage([display_name(r) for r in records], view, usage.compare_usage(ws.registry, records))


def is_sweep(ws: Workspace, name: str) -> bool:
    """Whether `name` names a sweep (launched cells), not a run."""
    return not (ws.registry.exists(name) and not ws.registry.cells_of(name))


@dataclass(frozen=True)
class SweepComparison:
    view: AblationView
    table: str
    written: Path  # where the summary went
    plotted: Optional[str] = None  # the line saying what `--plot` drew


def compare_sweep(ws: Workspace, sweep_id: str, *, metrics: Sequence[str] = (), out: Optional[Path] = None,
                  plot: Optional[Path] = None) -> SweepComparison:
    """The sweep's cells × final metrics, written to its summary file (`out`: a file, or a directory for
    ablation_summary.json; default ./ablation_summary.json), and drawn with `plot`."""
    if not is_sweep(ws, sweep_id):
        raise LaunchError(f"compare: {sweep_id} is a run, not a sweep: name two runs (launch compare RUN_A RUN_B)")
    view = ablation.ablation_view(ws.registry, sweep_id, metrics)
    written = ablation.write_summary(view, out or Path(ablation.SUMMARY_FILE))
    plotted = None
    if plot:
        plotted = f"wrote {ablation.plot_metrics(view, plot)} ({', '.join(view.metrics)})"
    return SweepComparison(view, ablation.ablation_table(view), written, plotted)
