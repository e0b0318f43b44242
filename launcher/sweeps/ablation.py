"""`launch compare SWEEP`: the sweep's cells × their final metrics, read back from MLflow, as a table, as
`ablation_summary.json` (runs/sweeps/<sweep id>/ in the project unless `--out` says), and with `--plot` as one bar
chart per metric.

The columns: the evaluation metrics the cells logged (`test/*`, then `val/*`: test/exact_match, test/bleu4, … for
the VLM task, val/loss for the WMTP stages), or the metrics `--metric` names instead; then the final `train/loss`;
then `gpu_hours`, the preemption ledger's device-hours (`ledger/device_hours`: wall time × ranks of every attempt,
GPU-hours on GPUs, rank-hours on CPU), and `dollars`, those hours at the price of one of the cell's nodes
(`launcher.pricing`: SkyPilot's catalog or the recipe's `resources.price_per_hour`; None where no price is known,
never 0; no column where no cell has one). A cell's entries and overrides are the ones its run was launched with (the
registry's shipped recipe); cells are listed by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

from launcher import pricing
from launcher.compare import fmt, save_figure
from launcher.mlflow_runs import mlflow_run
from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord
from launcher.sweeps.book import sweep_dir
from launcher.views.tables import render_table
from launcher.views import AblationCell, AblationView
from spottrain_contract.recipe import from_shipped

SUMMARY_FILE = "ablation_summary.json"
EVALUATION_PREFIXES = ("test/", "val/")
TRAIN_LOSS = "train/loss"
GPU_HOURS = "gpu_hours"
DOLLARS = "dollars"
LEDGER_DEVICE_HOURS = "ledger/device_hours"


def ablation_view(registry: Registry, sweep_id: str, metrics: Sequence[str] = ()) -> AblationView:
    records = sorted(registry.cells_of(sweep_id), key=lambda record: record.cell or "")
    if not records:
        known = sorted({r.sweep_id for r in registry.all() if r.sweep_id})
        raise LaunchError(f"no sweep '{sweep_id}' launched from this project"
                          + (f" (sweeps: {', '.join(known)})" if known else ""))
    found = {record.run_id: mlflow_run(record)[1] for record in records}
    final = {run_id: dict(run.data.metrics) if run else {} for run_id, run in found.items()}
    dollars = {record.run_id: _dollars(record, final[record.run_id]) for record in records}
    columns = _columns(metrics or _evaluation_metrics(final.values()), final.values())
    if any(value is not None for value in dollars.values()) and DOLLARS not in columns:
        columns.append(DOLLARS)
    cells = []
    for record in records:
        cell = from_shipped(record.recipe_document, f"run {record.run_id} in the run database").cell
        run, values = found[record.run_id], final[record.run_id]
        cells.append(AblationCell(cell=record.cell, run_id=record.run_id,
                                  mlflow_run_id=run.info.run_id if run else None,
                                  entries=cell.entries if cell else {}, overrides=cell.overrides if cell else {},
                                  metrics={column: dollars[record.run_id] if column == DOLLARS
                                           else values.get(_mlflow_key(column)) for column in columns}))
    return AblationView(sweep_id=sweep_id, recipe=records[0].recipe, metrics=columns, cells=cells)


def _dollars(record: RunRecord, final: dict) -> Optional[float]:
    """The cell's ledger's device-hours at its node's price; None where either is unknown (never 0)."""
    hours = final.get(LEDGER_DEVICE_HOURS)
    price = pricing.run_price(record) if hours is not None else None
    return pricing.cost_of_hours(price, hours).dollars_used if price is not None else None


def _mlflow_key(column: str) -> str:
    return LEDGER_DEVICE_HOURS if column == GPU_HOURS else column


def _evaluation_metrics(finals: Iterable[dict]) -> list[str]:
    logged = set().union(*finals)
    return [key for prefix in EVALUATION_PREFIXES for key in sorted(logged) if key.startswith(prefix)]


def _columns(chosen: Sequence[str], finals: Iterable[dict]) -> list[str]:
    logged = set().union(*finals)
    columns = list(dict.fromkeys(chosen))
    columns += [TRAIN_LOSS] if TRAIN_LOSS in logged and TRAIN_LOSS not in columns else []
    return columns + ([GPU_HOURS] if LEDGER_DEVICE_HOURS in logged else [])


def ablation_table(view: AblationView) -> str:
    return render_table(["CELL", *view.metrics],
                        [[cell.cell, *(fmt(cell.metrics[column]) for column in view.metrics)] for cell in view.cells])


def default_summary_path(project_dir: Path, sweep_id: str) -> Path:
    """runs/sweeps/<sweep id>/ablation_summary.json: under runs/, which the project's .gitignore leaves out."""
    return sweep_dir(project_dir, sweep_id) / SUMMARY_FILE


def write_summary(view: AblationView, out: Path, *, make_dirs: bool = False) -> Path:
    """`ablation_summary.json` (in `out` if it is a directory, else `out` itself; with `make_dirs` its directory
    is made first, as the default's is); the file written."""
    path = out / SUMMARY_FILE if out.is_dir() else out
    try:
        if make_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(view.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n")
    except OSError as exc:
        option = "compare" if make_dirs else "--out"
        raise LaunchError(f"{option}: cannot write {path}: {exc.strerror or exc}") from None
    return path


def plot_metrics(view: AblationView, path: Path) -> Path:
    """One bar chart per column, a bar per cell (a cell without the metric has none); the file written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not view.metrics:
        raise LaunchError(f"--plot: sweep {view.sweep_id} has no metrics in MLflow yet")
    names = [cell.cell for cell in view.cells]
    size = (max(6.0, 0.9 * len(names) + 2), 2.8 * len(view.metrics))
    figure, axes = plt.subplots(len(view.metrics), 1, figsize=size, squeeze=False)
    for axis, column in zip(axes[:, 0], view.metrics):
        values = [cell.metrics[column] for cell in view.cells]
        bars = axis.bar(range(len(names)), [v if v is not None else 0.0 for v in values],
                        color=["tab:blue" if v is not None else "none" for v in values])
        axis.bar_label(bars, labels=[fmt(v) if v is not None else "" for v in values], fontsize=7)
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(column)
    return save_figure(figure, path)
