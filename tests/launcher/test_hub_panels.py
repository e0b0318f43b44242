"""The Run page's panels and the Compare page's usage, through the JSON API: system metrics per node read from a
real MLflow store, checkpoints and the ledger from a run's store as the contract writes them, Resume as `launch
recipe RECIPE --run-id RUN` resumes, and a store out of reach as one line of error."""

from __future__ import annotations

import json
import time

import pytest

from hub_helpers import client_for, hub_project
from launcher.registry import Registry, RunRecord
from spottrain_contract import layout
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState
from spottrain_contract.layout import FileEntry, Manifest
from spottrain_contract.ledger import PREEMPTED, RUNNING, Attempt, prefix
from spottrain_contract.store import LocalDirStore

STOPPED_RUN = "baseline-20260101-000000-aaaa"  # two nodes' system metrics; stopped while uploading step 12
OLD_RUN = "baseline-20251201-000000-bbbb"  # system metrics from before they were named per node; finished
T0 = 1_767_225_600  # the first sample, in seconds since the epoch
HUB_ENTRY = {"recipe": "baseline", "target": "local", "profile": "local", "overrides": {}}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory, mlflow_sqlite) -> str:
    """One MLflow SQLite store for the module: the system metrics as MLflow 3's monitor names them, two samples
    ten seconds apart, and one training metric (not a system metric)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = mlflow_sqlite(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("hub-panels")
    metrics = []
    for sample in (0, 1):
        stamp = (T0 + 10 * sample) * 1000
        for node, base in (("node0", 10.0), ("node1", 20.0)):
            values = {"cpu_utilization_percentage": base + sample, "system_memory_usage_megabytes": 1000 * base,
                      "gpu_0_utilization_percentage": 90.0 + sample, "gpu_1_utilization_percentage": 80.0,
                      "gpu_0_memory_usage_megabytes": 4000.0, "gpu_1_memory_usage_megabytes": 6000.0 + sample,
                      "disk_usage_percentage": 5.0}  # logged by MLflow, not shown by the hub
            metrics += [Metric(f"system/{node}/{key}", value, stamp, sample) for key, value in values.items()]
    run = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: STOPPED_RUN}).info.run_id
    client.log_batch(run, metrics=metrics + [Metric("train/loss", 2.0, T0 * 1000, 1)])
    old = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: OLD_RUN}).info.run_id
    client.log_batch(old, metrics=[Metric("system/cpu_utilization_percentage", 50.0 + 20 * s, (T0 + 10 * s) * 1000, s)
                                   for s in (0, 1)])
    return uri


def write_checkpoint(store: LocalDirStore, run_id: str, step: int, sizes: dict[str, int], *, final: bool = False,
                     complete: bool = True) -> None:
    """The files of a step, then (complete) its manifest last, as the checkpointer uploads them."""
    base = layout.step_prefix(run_id, step)
    for name, size in sizes.items():
        store.put_bytes(b"x" * size, base + name)
    if complete:
        files = [FileEntry(name, size, "0" * 64) for name, size in sizes.items()]
        store.put_bytes(Manifest(step=step, world_size=2, final=final, files=files).to_json(), base + layout.MANIFEST)


def write_attempt(store: LocalDirStore, run_id: str, attempt: Attempt) -> None:
    store.put_bytes(attempt.to_json(), prefix(run_id) + attempt.key_name)


@pytest.fixture
def project(tmp_path, tracking_uri):
    """STOPPED_RUN: checkpoints 4 and 8 (best) complete, 12 uploading; two attempts, the first killed after step
    10 and resumed from 8. OLD_RUN: finished, its final checkpoint exported; no ledger (an older trainer)."""
    project = hub_project(tmp_path / "project")
    store = LocalDirStore(str(project / "runs/store"))
    for step in (4, 8):
        write_checkpoint(store, STOPPED_RUN, step, {"model.pt": 1000, "zero_pp_rank_1_optim.pt": 234 + step})
    write_checkpoint(store, STOPPED_RUN, 12, {"model.pt": 1000}, complete=False)
    best = json.dumps({"step": 8, "metrics": {"val/loss": 1.5}}).encode()  # as the checkpointer writes it
    store.put_bytes(best, f"{STOPPED_RUN}/{layout.BEST_POINTER}")
    write_attempt(store, STOPPED_RUN, Attempt(number=1, started=T0, start_step=0, world_size=2, device="cpu", gpus=0,
                                              last_step=10, last_seen=T0 + 100, cause=RUNNING, startup_seconds=5.0))
    write_attempt(store, STOPPED_RUN, Attempt(number=2, started=T0 + 200, start_step=8, world_size=2, device="cpu",
                                              gpus=0, last_step=12, last_seen=T0 + 260, ended=T0 + 260,
                                              cause=PREEMPTED, startup_seconds=6.0))
    write_checkpoint(store, OLD_RUN, 6, {"model.pt": 10}, final=True)
    for name in ("config.json", "model.safetensors"):
        store.put_bytes(b"{}", f"{OLD_RUN}/{layout.FINAL_EXPORT}/{name}")
    store.put_bytes(json.dumps({"step": 6}).encode(), f"{OLD_RUN}/{layout.RUN_COMPLETE}")
    registry = Registry(project)
    for run_id, state, name in ((STOPPED_RUN, RunState.STOPPED, "stopped run"), (OLD_RUN, RunState.FINISHED, "old")):
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=state, started=time.time(),
                                store=str(project / "runs/store"), local_dir=str(project / "runs/local"),
                                tracking_uri=tracking_uri, project=str(project),
                                handle={"hub": {**HUB_ENTRY, "name": name}}))
    return project


@pytest.fixture
def client(project):
    with client_for(project) as client:
        yield client


def test_system_metrics_come_per_node_against_time_and_old_runs_are_node0(client):
    nodes = client.get(f"/api/runs/{STOPPED_RUN}/system").json()
    assert sorted(nodes) == ["node0", "node1"]
    assert sorted(nodes["node1"]) == ["cpu_utilization_percentage", "gpu_0_memory_usage_megabytes",
                                      "gpu_0_utilization_percentage", "gpu_1_memory_usage_megabytes",
                                      "gpu_1_utilization_percentage", "system_memory_usage_megabytes"]
    assert nodes["node0"]["cpu_utilization_percentage"] == [[T0, 10.0], [T0 + 10, 11.0]]
    assert nodes["node1"]["gpu_1_memory_usage_megabytes"] == [[T0, 6000.0], [T0 + 10, 6001.0]]
    assert client.get(f"/api/runs/{OLD_RUN}/system").json() == {
        "node0": {"cpu_utilization_percentage": [[T0, 50.0], [T0 + 10, 70.0]]}}
    draft = client.post("/api/runs", json={"recipe": "baseline"}).json()["id"]
    assert client.get(f"/api/runs/{draft}/system").json() == {}


def test_checkpoints_list_sizes_best_final_and_the_export(client):
    stopped = client.get(f"/api/runs/{STOPPED_RUN}/checkpoints").json()
    assert stopped == {"checkpoints": [
        {"step": 4, "bytes": 1238, "complete": True, "best": False, "final": False},
        {"step": 8, "bytes": 1242, "complete": True, "best": True, "final": False},
        {"step": 12, "bytes": None, "complete": False, "best": False, "final": False}],
        "export_files": 0, "completed": False}
    old = client.get(f"/api/runs/{OLD_RUN}/checkpoints").json()
    assert old == {"checkpoints": [{"step": 6, "bytes": 10, "complete": True, "best": False, "final": True}],
                   "export_files": 2, "completed": True}


def test_the_ledger_has_each_attempt_and_the_totals(client):
    ledger = client.get(f"/api/runs/{STOPPED_RUN}/ledger").json()
    first, second = ledger.pop("attempts")
    assert ledger.pop("summary").startswith("2 attempts, 2 preempted or killed; goodput 85.7% (12 useful of 14 ")
    assert ledger.pop("cost")["summary"] == "unknown: no recipe recorded with the run to price it by"
    assert first == {"number": 1, "started": T0, "wall_seconds": 100.0, "ended_as": "killed", "ranks": 2,
                     "device": "cpu", "gpus": 0, "start_step": 0, "last_step": 10, "computed": 10, "recomputed": 2,
                     "startup_seconds": 5.0}
    assert (second["ended_as"], second["computed"], second["recomputed"]) == ("preempted", 4, 0)
    # lost: attempt 1's two recomputed steps at (100 - 5) / 10 s each, attempt 2's start-up; × 2 ranks
    assert ledger == pytest.approx({"preemptions": 2, "goodput": 12 / 14, "useful": 12, "computed": 14,
                                    "recomputed": 2, "device_hours": (100 + 60) * 2 / 3600,
                                    "device_hours_lost": (2 * 9.5 + 6.0) * 2 / 3600, "hours": "rank-hours"})
    assert client.get(f"/api/runs/{OLD_RUN}/ledger").json()["attempts"] == []


def test_compare_sets_goodput_hours_and_mean_and_peak_use_side_by_side(client):
    usage = client.get("/api/compare", params={"run": [STOPPED_RUN, OLD_RUN]}).json()["usage"]
    expected = {
        "goodput": [12 / 14, None], "rank-hours": [320 / 3600, None],
        "gpu_utilization_percentage mean": [85.25, None], "gpu_utilization_percentage peak": [91.0, None],
        "gpu_memory_usage_megabytes mean": [5000.25, None], "gpu_memory_usage_megabytes peak": [6001.0, None],
        "cpu_utilization_percentage mean": [15.5, 60.0], "cpu_utilization_percentage peak": [21.0, 70.0],
        "system_memory_usage_megabytes mean": [15000.0, None], "system_memory_usage_megabytes peak": [20000.0, None]}
    assert list(usage) == list(expected)  # in the order the page shows them
    for row, values in expected.items():
        assert usage[row] == pytest.approx(values), row
    page = client.get("/compare", params={"run": [STOPPED_RUN, OLD_RUN]}).text
    assert "<td>85.7%</td>" in page and "<td>15.5</td>" in page


def test_the_run_page_offers_resume_only_to_a_stopped_or_failed_run(client):
    assert '<button id="resume" >Resume</button>' in client.get(f"/runs/{STOPPED_RUN}").text
    assert '<button id="resume" disabled>Resume</button>' in client.get(f"/runs/{OLD_RUN}").text
    refused = client.post(f"/api/runs/{OLD_RUN}/resume")
    assert refused.status_code == 400
    assert refused.json() == {"error": f"run {OLD_RUN} is finished: only a stopped, pruned or failed run resumes"}


def test_resume_submits_the_runs_own_settings_under_its_id(project, monkeypatch):
    from launcher import runner
    from launch_helpers import plan_launch

    launched = plan_launch("baseline", target="local", project_dir=project, profile="local",
                           overrides=["train.max_steps=6"], run_id=STOPPED_RUN)
    registry = Registry(project)
    registry.update(STOPPED_RUN, recipe_document=launched.loaded.shipped())
    submitted = []

    def submit(registry_, plan):  # the runner's own submit starts a supervisor and torchrun: not here
        submitted.append(plan)
        return registry.update(plan.run_id, state=RunState.LAUNCHING, handle={})

    monkeypatch.setattr(runner, "submit", submit)
    with client_for(project) as client:
        resumed = client.post(f"/api/runs/{STOPPED_RUN}/resume")
        assert resumed.json() == {"id": STOPPED_RUN, "state": "launching"}, resumed.text
        assert client.get(f"/api/runs/{STOPPED_RUN}").json()["name"] == "stopped run"
    [plan] = submitted
    assert (plan.run_id, plan.target, plan.loaded.profile, plan.loaded.overrides, plan.loaded.changes) == (
        STOPPED_RUN, "local", "local", ("train.max_steps=6",), ())


def test_a_store_out_of_reach_is_one_line_of_error_soon(project, monkeypatch):
    from tests.trainer.mlflow_server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    Registry(project).update(STOPPED_RUN, store="s3://bucket/runs")
    with client_for(project) as client:
        for panel in ("checkpoints", "ledger"):
            started = time.monotonic()
            answer = client.get(f"/api/runs/{STOPPED_RUN}/{panel}")
            assert time.monotonic() - started < 10
            assert answer.status_code == 400
            [error] = answer.json().values()
            assert error.startswith(f"{panel} of run {STOPPED_RUN} not read from s3://bucket/runs: "
                                    f"EndpointConnectionError: ") and "\n" not in error
