"""A launched run's MLflow run, found by the `spottrain.run_id` tag the trainer sets, and what is read from it:
final metric values and metric histories. Every reader (`launch compare`, the hub's curves, usage and list)
finds it here, one way."""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional

from launcher.registry import RunRecord
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState, sqlite_store_absent


def tracking_uri_of(record: RunRecord) -> Optional[str]:
    """Where the run logs as this machine reaches it: its record's URI, else MLFLOW_TRACKING_URI; None: nowhere
    known (a platform's run logging on its own node)."""
    return record.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def mlflow_run(record: RunRecord):
    """(an MlflowClient, the run's MLflow run), or (None, None) while nothing is logged: a draft, no tracking URI,
    a local store not made yet (reading must not create one), or no run tagged with its id."""
    uri = tracking_uri_of(record)
    if not uri or record.state is RunState.DRAFT or sqlite_store_absent(uri):
        return None, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None, None
    found = client.search_runs(experiments, filter_string=f"tags.`{MLFLOW_RUN_ID_TAG}` = '{record.run_id}'",
                               max_results=1)
    return (client, found[0]) if found else (None, None)


def finite(value: Optional[float]) -> Optional[float]:
    """A metric value as JSON can carry it: NaN and infinities (a diverged run) are None (no value to show)."""
    return value if value is not None and math.isfinite(value) else None


def histories(client, run) -> dict[str, list[list[float]]]:
    """Every metric's history `[[step, value], ...]` of an MLflow run, ours or logged elsewhere, system metrics
    left out; a NaN or infinite value is None (the chart leaves a gap)."""
    found = {}
    for key in sorted(run.data.metrics):
        if key.startswith("system/"):
            continue
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        found[key] = [[step, finite(value)] for step, value in points]
    return found


def first_points(client, mlflow_run_id: str, key: str) -> list[tuple[int, float, float]]:
    """(step, value, when logged in seconds) of one metric in step order, the first value logged at each step: a
    resumed attempt that recomputes steps logs their evaluations again, and a step is counted once."""
    first: dict[int, tuple[int, float, float]] = {}
    for m in sorted(client.get_metric_history(mlflow_run_id, key), key=lambda m: (m.step, m.timestamp)):
        first.setdefault(m.step, (m.step, m.value, m.timestamp / 1000))
    return [first[step] for step in sorted(first)]


EPOCH_METRIC = "train/epoch"  # logged with the step by the trainer (and by Hugging Face Trainer's integration)


def steps_per_epoch(client, mlflow_run_id: str) -> Optional[float]:
    """A run's optimizer steps per epoch, from its latest `train/epoch` point (None before it logs one)."""
    for step, epoch, _ in reversed(first_points(client, mlflow_run_id, EPOCH_METRIC)):
        if step and epoch:
            return step / epoch
    return None


def run_histories(record: RunRecord) -> dict[str, list[list[float]]]:
    client, run = mlflow_run(record)
    return {} if run is None else histories(client, run)


def final_metrics(records: Iterable[RunRecord]) -> dict[str, list[Optional[float]]]:
    """Each metric (system metrics aside) with each run's last value, None where a run has none."""
    finals = []
    for record in records:
        _, run = mlflow_run(record)
        finals.append(dict(run.data.metrics) if run is not None else {})
    keys = sorted(k for k in set().union(*finals) if not k.startswith("system/"))
    return {key: [finite(f.get(key)) for f in finals] for key in keys}
