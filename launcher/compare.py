"""`launch compare RUN_A RUN_B`: what differs in their configuration, and where their metrics ended.

Both come from MLflow (flattened params, final metric values, metric histories), found through the run
registry's tracking URI and the `spottrain.run_id` tag the trainer sets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord
from launcher.tables import render_table
from launcher.views import CompareView
from spottrain_contract.job import MLFLOW_RUN_ID_TAG
CURVES = ("train/loss", "val/loss", "train/value_loss", "train/weighted_ce_loss")


def _mlflow_run(registry: Registry, run_id: str):
    record = registry.get(run_id)
    found = find_mlflow_run(record)
    if found is None:
        raise LaunchError(f"run {run_id}: nothing logged to MLflow at {tracking_uri_of(record)} yet")
    return found


def tracking_uri_of(record: RunRecord) -> str:
    uri = record.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise LaunchError(f"run {record.run_id}: no MLflow tracking URI recorded; set MLFLOW_TRACKING_URI")
    return uri


def find_mlflow_run(record: RunRecord):
    """(an MlflowClient, the run's MLflow run), found by the trainer's run-id tag; None if nothing is logged yet."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri_of(record))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{MLFLOW_RUN_ID_TAG}` = '{record.run_id}'",
                              max_results=1)
    return (client, runs[0]) if runs else None


def compare(registry: Registry, run_a: str, run_b: str, plot: Optional[Path] = None) -> str:
    """The comparison as text (two tables; `--plot` also draws the curves)."""
    view, runs = compare_view(registry, run_a, run_b)
    lines = [render_table(["PARAM", run_a, run_b], [[k, *(v if v is not None else "-" for v in values)]
                                                    for k, values in view.config_diff.items()])
             if view.config_diff else "same configuration"]
    lines += ["", render_table(["METRIC (final)", run_a, run_b],
                               [[k, *map(fmt, values)] for k, values in view.metrics.items()])]
    if plot is not None:
        (client_a, a), (client_b, b) = runs
        curves = [k for k in CURVES if k in a.data.metrics or k in b.data.metrics]
        written = _plot(plot, curves, {run_a: (client_a, a.info.run_id), run_b: (client_b, b.info.run_id)})
        lines += ["", f"wrote {written} ({', '.join(curves)})"]
    return "\n".join(lines)


def compare_view(registry: Registry, run_a: str, run_b: str):
    """(what differs and where the metrics ended, the two MLflow runs)."""
    (client_a, a), (client_b, b) = runs = _mlflow_run(registry, run_a), _mlflow_run(registry, run_b)
    changed = sorted(k for k in set(a.data.params) | set(b.data.params)
                     if a.data.params.get(k) != b.data.params.get(k) and not k.startswith("launch.run"))
    metrics = sorted(k for k in set(a.data.metrics) | set(b.data.metrics) if not k.startswith("system/"))
    view = CompareView(runs=[run_a, run_b],
                       config_diff={k: [a.data.params.get(k), b.data.params.get(k)] for k in changed},
                       metrics={k: [a.data.metrics.get(k), b.data.metrics.get(k)] for k in metrics})
    return view, runs


def _plot(path: Path, curves: list[str], runs: dict) -> Path:
    """Draw the curves into `path`; the file written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(curves), 1, figsize=(8, 3 * len(curves)), squeeze=False)
    for axis, key in zip(axes[:, 0], curves):
        for name, (client, mlflow_id) in runs.items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(mlflow_id, key))
            if history:
                axis.plot(*zip(*history), label=name)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.legend()
    return save_figure(figure, path)


def save_figure(figure, path: Path) -> Path:
    """Write and close a matplotlib figure (`.png` added when `path` names no format matplotlib writes); the file
    written."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    formats = figure.canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        path = path.with_name(path.name + ".png")
    try:
        figure.savefig(path)
    except OSError as exc:
        raise LaunchError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return path


def fmt(value) -> str:
    return "-" if value is None else f"{value:.6g}"

