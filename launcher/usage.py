"""What a run used: its system metrics per node, as the trainer's per-node MLflow monitors logged them
(`system/node1/gpu_0_utilization_percentage`), for the Run page's charts; and the figures the Compare page sets
side by side (goodput and device-hours from the ledger, mean and peak use from the system metrics).

Only the use the pages show is read (GPU utilisation and memory, CPU, RAM): MLflow also logs disk, network and
power, which its own UI charts. A run logged before metrics were named per node has `system/<metric>`: rank 0's
monitor, on node 0, so read as `node0`.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from launcher.errors import LaunchError
from launcher.mlflow_runs import mlflow_run
from launcher.views.ledger import run_ledger_view
from launcher.registry import Registry, RunRecord

PREFIX = "system/"
OLD_NODE = "node0"  # where un-prefixed system metrics come from
# what the pages show of each node, by MLflow's names (one series per GPU: gpu_0_..., gpu_1_...)
SERIES = {"gpu_utilization_percentage": re.compile(r"gpu_\d+_utilization_percentage"),
          "gpu_memory_usage_megabytes": re.compile(r"gpu_\d+_memory_usage_megabytes"),
          "cpu_utilization_percentage": re.compile(r"cpu_utilization_percentage"),
          "system_memory_usage_megabytes": re.compile(r"system_memory_usage_megabytes")}


def shown(name: str) -> bool:
    return any(pattern.fullmatch(name) for pattern in SERIES.values())


def node_and_metric(key: str) -> Optional[tuple[str, str]]:
    """`system/node1/cpu_utilization_percentage` → (node1, cpu_utilization_percentage); `system/cpu_...` → node0;
    None for a key that is not a system metric."""
    if not key.startswith(PREFIX):
        return None
    node, _, name = key[len(PREFIX):].rpartition("/")
    return node or OLD_NODE, name


def system_histories(record: RunRecord) -> dict[str, dict[str, list[list[float]]]]:
    """{node: {metric: [[time, value], ...]}}, time in seconds since the epoch (MLflow's timestamps: the monitor's
    steps only count its samples, and restart at every attempt's node)."""
    client, run = mlflow_run(record)
    if run is None:
        return {}
    nodes: dict[str, dict[str, list[list[float]]]] = {}
    for key in sorted(run.data.metrics):
        where = node_and_metric(key)
        if where is None or not shown(where[1]):
            continue
        node, name = where
        points = nodes.setdefault(node, {}).setdefault(name, [])
        points.extend([m.timestamp / 1000, m.value] for m in client.get_metric_history(run.info.run_id, key))
        points.sort()
    return nodes


def run_usage(registry: Registry, record: RunRecord) -> dict[str, float]:
    """A run's figures for the Compare page: goodput and GPU- or rank-hours (none where its store cannot be read
    from here), and for each shown series its mean over every node's (and GPU's) samples and its peak."""
    figures: dict[str, float] = {}
    try:
        ledger = run_ledger_view(registry, record)
    except LaunchError:
        ledger = None
    if ledger is not None and ledger.attempts:
        figures["goodput"] = ledger.goodput
        figures[ledger.hours] = ledger.device_hours
    histories = system_histories(record)
    for series, pattern in SERIES.items():
        values = [value for metrics in histories.values() for name, points in metrics.items()
                  if pattern.fullmatch(name) for _, value in points]
        if values:
            figures[f"{series} mean"] = sum(values) / len(values)
            figures[f"{series} peak"] = max(values)
    return figures


ROWS = ("goodput", "GPU-hours", "rank-hours", *(f"{s} {stat}" for s in SERIES for stat in ("mean", "peak")))


def compare_usage(registry: Registry, records: Iterable[RunRecord]) -> dict[str, list[Optional[float]]]:
    """Each figure (in ROWS order) with each run's value, None where a run has none; rows no run has are left
    out."""
    columns = [run_usage(registry, record) for record in records]
    return {row: [column.get(row) for column in columns] for row in ROWS if any(row in c for c in columns)}
