"""Compare runs (the CLI's `launch compare RUN_A RUN_B` and the hub's Compare page: one config diff, from the
recipes the runs shipped) and a sweep's cells × metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
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


def compare_text(view: CompareView, every_metric: bool = False) -> str:
    """The CLI's tables: the results first; the bookkeeping metrics only with `every_metric` (`--all`)."""
    return compare.compare_text(view, every_metric)


def plot_runs(ws: Workspace, run_ids: Sequence[str], path: Path) -> str:
    """Overlay the runs' loss curves in `path`; the line saying what was written."""
    written, curves = compare.plot_curves([ws.registry.get(run_id) for run_id in run_ids], path)
    return f"wrote {written} ({', '.join(curves)})"


@dataclass(frozen=True)
class MetricRow:
    """A final-metrics row as both faces show it: the key, each run's value readable, whether it is bookkeeping
    (perf/*, transfer/*, …: behind `--all` and the Compare page's toggle)."""

    key: str
    values: list[str]
    bookkeeping: bool


@dataclass(frozen=True)
class ComparePage:
    """The hub's Compare page: each run's name, the comparison, and side by side what each used."""

    names: list[str]
    view: CompareView
    usage: dict[str, list[Optional[float]]]
    rows: list[MetricRow] = field(default_factory=list)  # view.metrics in the faces' order, readable

    @property
    def bookkeeping(self) -> list[str]:
        return [row.key for row in self.rows if row.bookkeeping]


def compare_page(ws: Workspace, run_ids: Sequence[str]) -> ComparePage:
    view = compare_runs(ws, run_ids)
    records = [ws.registry.get(run_id) for run_id in run_ids]
    return ComparePage([display_name(r) for r in records], view, usage.compare_usage(ws.registry, records),
                       [MetricRow(*row) for row in compare.metric_rows(view)])


def is_sweep(ws: Workspace, name: str) -> bool:
    """Whether `name` names a sweep (launched cells), not a run."""
    return not (ws.registry.exists(name) and not ws.registry.cells_of(name))


def sweep_view(ws: Workspace, sweep_id: str, metrics: Sequence[str] = ()) -> AblationView:
    """The sweep's cells × final metrics (`launch compare SWEEP`'s, the hub's Compare sweep page's); writes nothing."""
    if not is_sweep(ws, sweep_id):
        raise LaunchError(f"compare: {sweep_id} is a run, not a sweep: name two runs (launch compare RUN_A RUN_B)")
    return ablation.ablation_view(ws.registry, sweep_id, metrics)


def summary_path(ws: Workspace, sweep_id: str) -> Path:
    """Where `launch compare SWEEP` writes its summary unless `--out` says: under the project's runs/ (which git
    ignores), so a comparison leaves the working tree clean."""
    return ablation.default_summary_path(ws.project_dir, sweep_id)


@dataclass(frozen=True)
class SweepPage:
    """The hub's Compare sweep page: the view, and each cell's values readable (`rows[i]` for `view.cells[i]`)."""

    view: AblationView
    rows: list[list[str]]


def sweep_page(ws: Workspace, sweep_id: str, metrics: Sequence[str] = ()) -> SweepPage:
    view = sweep_view(ws, sweep_id, metrics)
    return SweepPage(view, [[compare.fmt(cell.metrics[column]) for column in view.metrics] for cell in view.cells])


@dataclass(frozen=True)
class SweepComparison:
    view: AblationView
    table: str
    written: Path  # where the summary went
    plotted: Optional[str] = None  # the line saying what `--plot` drew


def compare_sweep(ws: Workspace, sweep_id: str, *, metrics: Sequence[str] = (), out: Optional[Path] = None,
                  plot: Optional[Path] = None) -> SweepComparison:
    """The sweep's cells × final metrics, written to its summary file (`out`: a file, or a directory for
    ablation_summary.json; default runs/sweeps/<sweep id>/ablation_summary.json in the project), and drawn with
    `plot`."""
    view = sweep_view(ws, sweep_id, metrics)
    written = ablation.write_summary(view, out or summary_path(ws, sweep_id), make_dirs=out is None)
    plotted = None
    if plot:
        plotted = f"wrote {ablation.plot_metrics(view, plot)} ({', '.join(view.metrics)})"
    return SweepComparison(view, ablation.ablation_table(view), written, plotted)
