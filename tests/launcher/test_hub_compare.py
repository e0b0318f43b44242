"""The hub's Compare page lists the final metrics as `launch compare` does: losses and evaluation metrics first, in
readable numbers, the bookkeeping metrics behind a toggle (`?all=true`, as `launch compare --all`)."""

from __future__ import annotations

import re
import time

import pytest

from hub_helpers import client_for, hub_project
from launcher.registry import Registry, RunRecord

FINALS = {"train/loss": (2.0, 1.5), "val/loss": (2.1, 1.6), "test/accuracy": (0.123456, 0.5),
          "perf/step_seconds": (0.5, 0.25), "transfer/upload_bytes": (9159110.0, 12345678.0),
          "ledger/device_hours": (1.5, 2.0), "train/epoch": (3.0, 3.0), "train/learning_rate": (1e-05, 5e-05)}
RESULTS = [["train/loss", "2", "1.5"], ["val/loss", "2.1", "1.6"], ["test/accuracy", "0.1235", "0.5"]]
BOOKKEEPING = [["ledger/device_hours", "1.5", "2"], ["perf/step_seconds", "0.5", "0.25"],
               ["train/epoch", "3", "3"], ["train/learning_rate", "1e-05", "5e-05"],
               ["transfer/upload_bytes", "9,159,110", "12,345,678"]]


@pytest.fixture
def client(tmp_path, mlflow_sqlite):
    from mlflow.tracking import MlflowClient

    project = hub_project(tmp_path / "project")
    uri = mlflow_sqlite(tmp_path / "mlflow.db")
    mlflow = MlflowClient(uri)
    experiment = mlflow.create_experiment("weighted-mtp/test")
    registry = Registry(project)
    for index, run_id in enumerate(("run-a", "run-b")):
        run = mlflow.create_run(experiment, tags={"spottrain.run_id": run_id}).info.run_id
        mlflow.log_param(run, "train.optim.lr", ("1e-05", "5e-05")[index])
        for key, values in FINALS.items():
            mlflow.log_metric(run, key, values[index], step=3)
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state="finished",
                                started=time.time(), store="s", local_dir=str(tmp_path), tracking_uri=uri,
                                project=str(project)))
    with client_for(project) as client:
        yield client


def finals(html: str) -> list[tuple[bool, list[str]]]:
    """The final-metrics rows: (hidden, [key, value in each run])."""
    table = html[html.index('id="finals"'):].split("</table>")[0]
    return [("hidden" in attributes, re.findall(r"<td[^>]*>([^<]*)</td>", cells))
            for attributes, cells in re.findall(r"<tr([^>]*)>(.*?)</tr>", table)[1:]]


def test_the_results_come_first_and_the_bookkeeping_is_hidden_behind_the_toggle(client):
    html = client.get("/compare?run=run-a&run=run-b").text
    assert finals(html) == [(False, row) for row in RESULTS] + [(True, row) for row in BOOKKEEPING]
    toggle = re.search(r'<input type="checkbox" id="show-all"[^>]*>', html).group(0)
    assert "checked" not in toggle and "Show 5 bookkeeping metrics" in html
    assert "e+" not in html[html.index('id="finals"'):]


def test_all_shows_the_bookkeeping(client):
    html = client.get("/compare?run=run-a&run=run-b&all=true").text
    assert finals(html) == [(False, row) for row in RESULTS + BOOKKEEPING]
    assert "checked" in re.search(r'<input type="checkbox" id="show-all"[^>]*>', html).group(0)


def test_the_api_lists_the_metrics_in_the_same_order_and_names_the_bookkeeping(client):
    body = client.get("/api/compare", params={"run": ["run-a", "run-b"]}).json()
    assert list(body["metrics"]) == [row[0] for row in RESULTS + BOOKKEEPING]
    assert body["bookkeeping"] == [row[0] for row in BOOKKEEPING]
    assert body["metrics"]["transfer/upload_bytes"] == [9159110.0, 12345678.0]
