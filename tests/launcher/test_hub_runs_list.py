"""The Runs page's data: who and task, each sweep's summary beside its cells, the ledger's goodput and
device-hours cached in each run's row and refreshed in the background (once per step while live, once after the
end; a failed read keeps the cache)."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from hub_helpers import client_for, hub_project
from launcher.views import ledger as ledger_view
from launcher import ledger_refresh as ledgers
from launcher.hub import stream
from launcher.operations import RunWatch, Workspace
from launcher.registry import LedgerSummary, Registry, RunRecord, this_user
from spottrain_contract.job import RunState, progress_path
from spottrain_contract.ledger import FINISHED, Attempt
from spottrain_contract.store import open_store


@pytest.fixture
def project(tmp_path):
    return hub_project(tmp_path / "project")


@pytest.fixture
def client(project):
    with client_for(project) as client:
        yield client


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The run ids whose ledger the hub read, in order."""
    read, seen = ledger_view.run_ledger, []

    def counted(registry, record):
        seen.append(record.run_id)
        return read(registry, record)

    monkeypatch.setattr(ledger_view, "run_ledger", counted)
    return seen


def save(project, run_id: str, state=RunState.FINISHED, **fields) -> RunRecord:
    record = RunRecord(**{"run_id": run_id, "recipe": "baseline", "target": "local", "state": state,
                          "started": time.time(), "store": str(project / "store"), "local_dir": str(project / "out"),
                          "tracking_uri": "", "project": str(project), "ended": time.time(), **fields})
    Registry(project).save(record)
    return record


def write_ledger(project, run_id: str, last_step: int, data: bytes = b"") -> None:
    attempt = Attempt(number=1, started=0.0, start_step=0, world_size=2, device="NVIDIA A100", gpus=2,
                      last_step=last_step, last_seen=1800.0, ended=1800.0, cause=FINISHED)
    open_store(str(project / "store")).put_bytes(data or attempt.to_json(), f"{run_id}/ledger/{attempt.key_name}")


def listed(client) -> dict[str, dict]:
    return {run["id"]: run for run in client.get("/api/runs").json()}


def test_a_draft_says_who_saved_it_and_what_its_recipe_trains(client):
    run_id = client.post("/api/runs", json={"recipe": "baseline"}).json()["id"]
    run = listed(client)[run_id]
    assert (run["task"], run["launched_by"], run["project"]) == ("baseline", this_user(), "project")


def test_the_page_carries_each_sweeps_summary_and_every_name_as_data_only(client, project):
    for cell, state in (("x", RunState.FINISHED), ("y", RunState.FAILED), ("z", RunState.FINISHED)):
        save(project, f"abl-{cell}", state, sweep_id="abl", cell=cell, launched_by="ana@box", task="baseline")
    client.post("/api/runs", json={"recipe": "baseline", "name": "</script><script>alert(1)</script>"})
    html = client.get("/").text
    assert "<script>alert(1)" not in html
    runs = json.loads(re.search(r'id="initial-runs">(.*?)</script>', html).group(1))
    assert "</script><script>alert(1)</script>" in [run["name"] for run in runs]
    sweeps = json.loads(re.search(r'id="initial-sweeps">(.*?)</script>', html).group(1))
    assert sweeps == {"abl": {
        "sweep_id": "abl", "recipe": "baseline", "task": "baseline", "target": "local", "state": "failed",
        "finished": 2, "cells": ["abl-x", "abl-y", "abl-z"], "states": {"finished": 2, "failed": 1}, "restarts": 0,
        "started": sweeps["abl"]["started"], "launched_by": ["ana@box"], "device_hours": None, "device_unit": None}}


def test_the_list_stream_sends_the_sweeps_then_the_runs(project):
    save(project, "abl-x", sweep_id="abl", cell="x")
    events = stream.list_events(Workspace.open(project, every_project=True), poll_seconds=0.01)
    assert next(events).startswith("retry:")
    kinds = [next(events).split("\n")[0] for _ in range(2)]
    assert kinds == ["event: sweeps", "event: runs"]


def test_an_ended_runs_ledger_is_read_once_in_the_background_and_shown(client, project, reads):
    save(project, "done")
    write_ledger(project, "done", last_step=90)
    assert listed(client)["done"]["goodput"] is None  # the page does not wait for the store
    ledgers.wait()
    run = listed(client)["done"]
    assert (run["goodput"], run["device_hours"], run["device_unit"]) == (1.0, 1.0, "GPU")
    client.get("/")
    ledgers.wait()
    assert reads == ["done"]


def test_a_live_runs_ledger_is_read_again_only_when_its_step_changes(client, project, reads):
    record = save(project, "live", RunState.RUNNING, ended=None, handle={"supervisor_pid": os.getpid()})
    progress = progress_path(record.local_dir, "live")
    progress.parent.mkdir(parents=True)
    for step in (3, 3, 4):
        progress.write_text(json.dumps({"step": step, "total": 10}))
        write_ledger(project, "live", last_step=step)
        listed(client)
        ledgers.wait()
    assert reads == ["live", "live"]
    assert Registry(project).get("live").ledger.goodput == 1.0


def test_a_failed_read_keeps_the_cache_as_it_was(client, project, reads):
    save(project, "cut")
    kept = LedgerSummary(goodput=0.5, device_hours=2.0, device_unit="rank", read=1.0)
    Registry(project).cache_ledger("cut", kept)
    write_ledger(project, "cut", last_step=5, data=b'{"number": 1, "star')
    listed(client)
    ledgers.wait()
    assert reads == ["cut"] and Registry(project).get("cut").ledger == kept
    assert (listed(client)["cut"]["goodput"], listed(client)["cut"]["device_unit"]) == (0.5, "rank")


def test_a_diverged_runs_nan_loss_is_no_value_in_the_list_and_in_the_run_pages_data(client, project, mlflow_sqlite):
    from mlflow.tracking import MlflowClient

    from spottrain_contract.job import MLFLOW_RUN_ID_TAG

    uri = mlflow_sqlite(project / "mlflow.db")
    mlflow = MlflowClient(tracking_uri=uri)
    run = mlflow.create_run(mlflow.create_experiment("diverged"), tags={MLFLOW_RUN_ID_TAG: "diverged-1"})
    mlflow.log_metric(run.info.run_id, "train/loss", float("nan"), step=3)
    save(project, "diverged-1", tracking_uri=uri)
    assert listed(client)["diverged-1"]["loss"] is None
    html = client.get("/runs/diverged-1").text
    data = json.loads(re.search(r'id="run-data">(.*?)</script>', html).group(1))  # JSON.parse would refuse a NaN
    assert data["loss"] is None and "NaN" not in html


def test_the_run_stream_says_when_new_metrics_are_logged_without_waiting_for_the_next_step(project, mlflow_sqlite):
    """The page redraws its curves on `metrics`: a step's points reach MLflow after the step was reported."""
    from mlflow.tracking import MlflowClient

    from spottrain_contract.job import MLFLOW_RUN_ID_TAG

    uri = mlflow_sqlite(project / "mlflow.db")
    mlflow = MlflowClient(tracking_uri=uri)
    run = mlflow.create_run(mlflow.create_experiment("live"), tags={MLFLOW_RUN_ID_TAG: "live-1"})
    mlflow.log_metric(run.info.run_id, "train/loss", 2.0, step=1)
    # live: its supervisor is this process; the step it reports stays 1 throughout
    save(project, "live-1", RunState.RUNNING, tracking_uri=uri, ended=None, handle={"supervisor_pid": os.getpid()})
    progress = progress_path(str(project / "out"), "live-1")
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text(json.dumps({"step": 1, "total": 9}))
    ws = Workspace.open(project)
    registry = ws.registry
    events = stream.run_events(RunWatch(ws, "live-1"), poll_seconds=0.01)
    assert next(events).startswith("retry: ")
    assert next(events).startswith("event: run")  # the first poll: the view; no metrics, which the page drew
    mlflow.log_metric(run.info.run_id, "train/loss", 1.5, step=2)
    assert next(events).startswith("event: metrics")
    registry.update("live-1", state=RunState.FINISHED, ended=time.time())
    assert [next(events).split("\n", 1)[0] for _ in range(2)] == ["event: run", "event: end"]


def test_past_one_window_the_page_says_which_runs_it_shows_and_links_the_older_ones(client, project):
    from launcher.operations import PAGE_SIZE

    for n in range(PAGE_SIZE + 3):
        save(project, f"run-{n:04d}", started=1000.0 + n)
    first = client.get("/").text
    assert f"Runs 1–{PAGE_SIZE} of {PAGE_SIZE + 3}, newest first" in first
    assert f'href="/?offset={PAGE_SIZE}">older' in first and ">newer<" not in first
    older = client.get(f"/?offset={PAGE_SIZE}").text
    runs = json.loads(re.search(r'id="initial-runs">(.*?)</script>', older).group(1))
    assert [run["id"] for run in runs] == ["run-0000", "run-0001", "run-0002"]  # the oldest, oldest first
    assert 'href="/?offset=0">newer' in older and ">older<" not in older
    events = stream.list_events(Workspace.open(project, every_project=True), offset=PAGE_SIZE)  # /api/events?offset=
    data = next(json.loads(event.split("data: ", 1)[1]) for event in events if event.startswith("event: runs"))
    assert [run["id"] for run in data] == ["run-0000", "run-0001", "run-0002"]  # the page's live list: its window
