"""Two or more runs side by side: what differs in their settings, where their metrics ended, and (`--plot`) their
loss curves. One rule for both faces: a run's settings are the recipe its launch shipped (a draft's, its recipe
with its overrides as they load now), so the CLI and the hub show the same differences, and a run MLflow never
saw (a draft) compares too. Only a run recorded before launches shipped their recipe falls back to its MLflow
params (`launch.*` bookkeeping left out). The ledger's device-hours are priced beside them (`launcher.pricing`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Optional

from launcher import pricing
from launcher.errors import LaunchError
from launcher.mlflow_runs import final_metrics, mlflow_run, tracking_uri_of
from launcher.registry import RunRecord
from launcher.views.tables import render_table
from launcher.views import CompareView
from spottrain_contract.recipe import from_shipped, settings_of

CURVES = ("train/loss", "val/loss", "train/value_loss", "train/weighted_ce_loss")
# bookkeeping, not results: shown by `launch compare --all` and the Compare page's toggle
BOOKKEEPING_PREFIXES = ("perf/", "transfer/", "checkpoint/", "ledger/", "system/")
BOOKKEEPING_NAMES = ("epoch", "global_step", "learning_rate", "lr")  # a key's last part (train/epoch, learning_rate)


def is_bookkeeping(key: str) -> bool:
    """Whether a metric keeps the books (speed, transfers, checkpoints, the ledger, system, epoch, learning rate)
    rather than saying how well the run did."""
    return key.startswith(BOOKKEEPING_PREFIXES) or key.rsplit("/", 1)[-1] in BOOKKEEPING_NAMES


def metric_order(keys: Iterable[str]) -> list[str]:
    """The one order both faces list metrics in: the training losses (train/*loss*), then val/* (and eval/*), then
    test/*, then the other results, then the bookkeeping; losses first within each group, then by name."""
    def rank(key: str) -> tuple:
        group = (4 if is_bookkeeping(key) else 0 if key.startswith("train/") and "loss" in key
                 else 1 if key.startswith(("val/", "eval/")) else 2 if key.startswith("test/") else 3)
        return group, "loss" not in key.rsplit("/", 1)[-1], key
    return sorted(keys, key=rank)


def run_settings(record: RunRecord, draft_settings: Callable[[RunRecord], Optional[dict[str, str]]]) -> dict[str, str]:
    """Every setting of the run, flattened; `draft_settings` gives a draft's (None: the record is no draft)."""
    if record.recipe_document:
        return settings_of(from_shipped(record.recipe_document, record.run_id).recipe)
    drafted = draft_settings(record)
    if drafted is not None:
        return drafted
    _, run = mlflow_run(record)
    if run is None:
        raise LaunchError(f"run {record.run_id}: no recipe recorded and nothing logged to MLflow at "
                          f"{tracking_uri_of(record) or 'no tracking URI (set MLFLOW_TRACKING_URI)'}")
    return {key: value for key, value in run.data.params.items() if not key.startswith("launch.")}


def compare_view(records: list[RunRecord],
                 draft_settings: Callable[[RunRecord], Optional[dict[str, str]]]) -> CompareView:
    """Each setting that differs between the runs (its value in each, None where one lacks it) and each metric's
    final value in each."""
    settings = [run_settings(record, draft_settings) for record in records]
    keys = sorted(set().union(*settings))
    diff = {key: [s.get(key) for s in settings] for key in keys if len({s.get(key) for s in settings}) > 1}
    finals = final_metrics(records)
    finals.update(dollar_rows(records, finals))
    return CompareView(runs=[r.run_id for r in records], config_diff=diff,
                       metrics={key: finals[key] for key in metric_order(finals)})


DOLLARS_USED, DOLLARS_LOST = "ledger/dollars_used", "ledger/dollars_lost"


def dollar_rows(records: list[RunRecord], finals: dict[str, list[Optional[float]]]) -> dict[str, list[Optional[float]]]:
    """The runs' dollars used and lost to preemption beside the ledger's device-hours they price
    (`launcher.pricing`), bookkeeping like them; None where a run has no price or no hours, and no rows where no
    run has both."""
    hours = finals.get("ledger/device_hours") or [None] * len(records)
    lost = finals.get("ledger/device_hours_lost") or [None] * len(records)
    costs = []
    for record, used, wasted in zip(records, hours, lost):
        price = pricing.run_price(record) if used is not None else None
        costs.append(pricing.cost_of_hours(price, used, wasted or 0.0) if price else None)
    if not any(costs):
        return {}
    return {DOLLARS_USED: [c.dollars_used if c else None for c in costs],
            DOLLARS_LOST: [c.dollars_lost if c else None for c in costs]}


def metric_rows(view: CompareView) -> list[tuple[str, list[str], bool]]:
    """Each metric in `metric_order`: (its key, its readable final value in each run, whether it is bookkeeping)."""
    return [(key, [fmt(v) for v in view.metrics[key]], is_bookkeeping(key)) for key in metric_order(view.metrics)]


def compare_text(view: CompareView, every_metric: bool = False) -> str:
    """The comparison as two tables; the bookkeeping metrics only with `every_metric` (else a line says how many
    were left out)."""
    lines = [render_table(["PARAM", *view.runs], [[k, *(v if v is not None else "-" for v in values)]
                                                  for k, values in view.config_diff.items()])
             if view.config_diff else "same configuration"]
    rows = metric_rows(view)
    shown = [[key, *values] for key, values, bookkeeping in rows if every_metric or not bookkeeping]
    hidden = len(rows) - len(shown)
    lines += ["", render_table(["METRIC (final)", *view.runs], shown) if shown else "no results logged yet"]
    if hidden:
        lines += [f"({hidden} bookkeeping metrics left out: perf/*, transfer/*, checkpoint/*, ledger/*, epoch, "
                  f"learning rate; --all shows them)"]
    return "\n".join(lines)


def plot_curves(records: list[RunRecord], path: Path) -> tuple[Path, list[str]]:
    """Overlay the runs' loss curves in `path`; (the file written, the curves drawn)."""
    found = {}
    for record in records:
        client, run = mlflow_run(record)
        if run is None:
            raise LaunchError(f"run {record.run_id}: nothing logged to MLflow at {tracking_uri_of(record)} yet")
        found[record.run_id] = (client, run)
    curves = [k for k in CURVES if any(k in run.data.metrics for _, run in found.values())]
    return _plot(path, curves, found), curves


def _plot(path: Path, curves: list[str], runs: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(curves), 1, figsize=(8, 3 * len(curves)), squeeze=False)
    for axis, key in zip(axes[:, 0], curves):
        for name, (client, run) in runs.items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
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


def fmt(value: Optional[float]) -> str:
    """A metric's value as a person reads it: up to 4 significant digits without an exponent (0.1235, 2.5, 812.4),
    a thousand or more as a whole number with separators (9,159,110); "-" for none. Only below 0.0001 or from
    10¹⁵ on does an exponent remain (3e-05)."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if 1000 <= abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:.4g}"
