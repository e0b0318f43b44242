"""Dollars per run: the ledger's device-hours at the price of one node as the recipe asks for it, from SkyPilot's
catalog on disk (the region the job ran in, else the cheapest) or the recipe's `resources.price_per_hour`; unknown,
never $0, where neither prices the run; shown by `launch status RUN`, the hub's Run page and `launch compare`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from launcher import operations as ops
from launcher import pricing
from launcher.registry import Registry, RunRecord
from spottrain_contract.errors import RecipeError
from spottrain_contract.job import RunState
from spottrain_contract.ledger import FINISHED, RUNNING, Attempt, prefix, read_ledger
from spottrain_contract.recipe import load_recipe
from spottrain_contract.store import open_store

STAGE = """\
extends: _base.yaml
name: x-stage
task: baseline
mlflow: {run_name: x-stage}
train:
  epochs: 1
"""
T0 = 1_767_225_600.0
# Two attempts of 4 GPUs, an hour each: the first killed after step 40 (no start-up), the second resumed from 30 with
# 6 minutes of start-up. Used: 8 GPU-hours. Lost: 10 recomputed steps at 90 s, plus the restart's 360 s; × 4 GPUs.
ATTEMPTS = [Attempt(number=1, started=T0, start_step=0, world_size=4, device="NVIDIA A100-SXM4-80GB", gpus=4,
                    last_step=40, last_seen=T0 + 3600, cause=RUNNING, startup_seconds=0.0),
            Attempt(number=2, started=T0 + 3600, start_step=30, world_size=4, device="NVIDIA A100-SXM4-80GB", gpus=4,
                    last_step=90, last_seen=T0 + 7200, ended=T0 + 7200, cause=FINISHED, startup_seconds=360.0)]
GPU_HOURS, GPU_HOURS_LOST = 8.0, (900 + 360) * 4 / 3600
# SkyPilot's catalog layout (sky/catalog/data_fetchers/fetch_aws.py's USEFUL_COLUMNS, as `sky` downloads it)
AWS_CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch
p4de.24xlarge,A100-80GB,8,96,1152,"{'Gpus': [{'Name': 'A100-80GB', 'Count': 8}]}",40.96,12.5,us-east-1,use1-az1,x86_64
p4de.24xlarge,A100-80GB,8,96,1152,"{'Gpus': [{'Name': 'A100-80GB', 'Count': 8}]}",40.96,11.0,us-east-1,use1-az2,x86_64
p4de.24xlarge,A100-80GB,8,96,1152,"{'Gpus': [{'Name': 'A100-80GB', 'Count': 8}]}",45.0,9.0,us-west-2,usw2-az1,x86_64
p3.2xlarge,V100,1,8,61,"{'Gpus': [{'Name': 'V100', 'Count': 1}]}",3.06,0.92,us-east-1,use1-az1,x86_64
m6i.large,,,2,8,,0.096,0.04,us-east-1,use1-az1,x86_64
"""


@pytest.fixture
def project(make_project) -> Path:
    return make_project({"x.yaml": STAGE})


@pytest.fixture
def registry(project) -> Registry:
    return Registry(project)


def launched(registry: Registry, project: Path, run_id: str, *overrides: str, target: str = "local",
             handle: dict = None) -> RunRecord:
    """A finished run of recipes/x.yaml with `overrides`, its ledger (ATTEMPTS) in its store."""
    store = project / "runs" / "store"
    for attempt in ATTEMPTS:
        open_store(str(store)).put_bytes(attempt.to_json(), prefix(run_id) + attempt.key_name)
    shipped = load_recipe("x", project_dir=project, overrides=overrides).shipped()
    record = RunRecord(run_id=run_id, recipe="x", target=target, state=RunState.FINISHED, started=time.time(),
                       store=str(store), local_dir=str(project / "runs" / "local"), tracking_uri="",
                       recipe_document=shipped, project=str(project), handle=handle or {})
    registry.save(record)
    return registry.get(run_id)


def cost_of(record: RunRecord):
    return pricing.run_cost(record, read_ledger(open_store(record.store), record.run_id))


# --- the recipe's price ---------------------------------------------------------------------------------------


def test_a_runs_dollars_are_its_gpu_hours_at_the_recipes_node_price_per_gpu(registry, project):
    record = launched(registry, project, "priced", "resources.price_per_hour=3.2")  # 4 GPUs: $0.80 a GPU-hour
    cost = cost_of(record)
    assert cost.price == pricing.Price(3.2, 4, "recipe resources.price_per_hour")
    assert (cost.dollars_used, cost.dollars_lost) == pytest.approx((GPU_HOURS * 0.8, GPU_HOURS_LOST * 0.8))
    assert cost.dollars_per_step == pytest.approx(6.4 / 90)


def test_status_of_a_run_prints_its_cost_under_the_ledger_and_its_json_carries_it(registry, project):
    launched(registry, project, "priced", "resources.price_per_hour=3.2")
    report = ops.status(ops.Workspace(project, registry), "priced")
    assert ("cost: $6.40 used, $1.12 lost to preemption (recipe resources.price_per_hour: $3.20/h a node)"
            in report.ledger_table.splitlines())
    cost = report.views[0].model_dump(mode="json")["cost"]
    assert cost == pytest.approx({"dollars_used": 6.4, "dollars_lost": 1.12, "dollars_per_step": 6.4 / 90,
                                  "price_per_hour": 3.2, "source": "recipe resources.price_per_hour",
                                  "summary": "$6.40 used, $1.12 lost to preemption (recipe "
                                             "resources.price_per_hour: $3.20/h a node)"})


def test_without_a_price_the_dollars_are_unknown_and_said_so_never_zero(registry, project):
    record = launched(registry, project, "unpriced")
    assert cost_of(record) is None
    report = ops.status(ops.Workspace(project, registry), "unpriced")
    assert "cost: unknown: the recipe sets no resources.price_per_hour" in report.ledger_table.splitlines()
    cost = report.views[0].cost
    assert (cost.dollars_used, cost.dollars_lost, cost.price_per_hour) == (None, None, None)


def test_a_run_without_an_attempt_has_no_cost_yet(registry, project):
    record = launched(registry, project, "priced", "resources.price_per_hour=3.2")
    assert pricing.run_cost(record, read_ledger(open_store(record.store), "no-such-run")) is None


@pytest.mark.parametrize("line, expected", [
    ("resources: {price_per_hour: 0}", "recipes/x.yaml: resources.price_per_hour: expected > 0, got 0.0"),
    ("resources: {price_per_hour: -2.5}", "recipes/x.yaml: resources.price_per_hour: expected > 0, got -2.5"),
    ("resources: {price_per_hour: cheap}", "recipes/x.yaml: resources.price_per_hour: expected a number, got 'cheap'"),
])
def test_a_bad_price_per_hour_is_one_line_naming_the_file_and_the_key(make_project, line, expected):
    project = make_project({"x.yaml": STAGE + line + "\n"})
    with pytest.raises(RecipeError) as caught:
        load_recipe("x", project_dir=project)
    assert str(caught.value) == expected


def test_a_bad_price_per_hour_override_is_blamed_on_the_override(project):
    with pytest.raises(RecipeError) as caught:
        load_recipe("x", project_dir=project, overrides=("resources.price_per_hour=0",))
    assert str(caught.value) == "--override: resources.price_per_hour: expected > 0, got 0.0"


# --- SkyPilot's catalog -----------------------------------------------------------------------------------------


@pytest.fixture
def aws_catalog():
    """SkyPilot's AWS catalog on disk where SkyPilot reads it (~/.sky/catalogs/<version>/aws/vms.csv in the tests'
    HOME), removed afterwards: other tests' SkyPilot must not see it."""
    from sky.catalog import common

    path = Path(common.get_catalog_path("aws/vms.csv"))
    assert not path.exists(), f"{path}: a catalog is already there"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(AWS_CATALOG)
    yield path
    path.unlink()


EIGHT_A100 = ("resources.accelerator=A100-80GB", "resources.gpus=8")


def test_a_skypilot_run_is_priced_from_the_catalog_in_the_region_it_ran_in(registry, project, aws_catalog):
    record = launched(registry, project, "sky-east", *EIGHT_A100, "resources.price_per_hour=99", target="skypilot",
                      handle={"job_id": 7, "cloud": "AWS", "region": "us-east-1"})
    cost = cost_of(record)
    # the cheapest spot zone of us-east-1, not the recipe's price; 8 GPUs a node
    assert cost.price == pricing.Price(11.0, 8, "skypilot catalog: aws us-east-1 spot p4de.24xlarge")
    assert cost.dollars_used == pytest.approx(GPU_HOURS * 11.0 / 8)


def test_where_the_region_is_not_known_the_cheapest_regions_price_is_taken_and_named(registry, project, aws_catalog):
    record = launched(registry, project, "sky-any", *EIGHT_A100, target="skypilot", handle={"job_id": 8})
    assert pricing.run_price(record) == pricing.Price(
        9.0, 8, "skypilot catalog: aws cheapest region us-west-2 spot p4de.24xlarge")


def test_an_on_demand_run_is_priced_on_demand(registry, project, aws_catalog):
    record = launched(registry, project, "sky-od", *EIGHT_A100, "resources.spot=false", target="skypilot",
                      handle={"job_id": 9, "region": "us-east-1"})
    assert pricing.run_price(record) == pricing.Price(
        40.96, 8, "skypilot catalog: aws us-east-1 on-demand p4de.24xlarge")


def test_what_the_catalog_does_not_list_falls_back_to_the_recipes_price(registry, project, aws_catalog):
    record = launched(registry, project, "sky-h200", "resources.accelerator=H200", "resources.price_per_hour=20",
                      target="skypilot", handle={"job_id": 10})
    assert pricing.run_price(record) == pricing.Price(20.0, 4, "recipe resources.price_per_hour")


def test_without_a_catalog_on_disk_nothing_is_fetched_and_the_reason_names_both_sources(registry, project, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("SKY_RUNTIME_DIR", str(tmp_path / "no-sky"))  # no catalog here: none may be downloaded
    record = launched(registry, project, "sky-none", *EIGHT_A100, target="skypilot", handle={"job_id": 11})
    assert pricing.run_price(record) is None
    assert pricing.unpriced(record) == ("no SkyPilot catalog on this machine prices it and the recipe sets no "
                                        "resources.price_per_hour")
    assert not (tmp_path / "no-sky").exists()


def test_skypilots_job_queue_tells_the_record_where_the_job_runs(registry, project, monkeypatch):
    import sky

    record = launched(registry, project, "sky-placed", target="skypilot", handle={"job_id": 12})
    monkeypatch.setattr(sky.jobs, "queue", lambda **kw: "queue-request")
    monkeypatch.setattr(sky, "get", lambda request: [{"status": "RUNNING", "cloud": "AWS", "region": "us-east-1"}])
    from launcher import runner

    runner.refresh(registry, record)
    assert registry.get("sky-placed").handle == {"job_id": 12, "cloud": "AWS", "region": "us-east-1"}


# --- the hub and launch compare ---------------------------------------------------------------------------------


def test_the_hubs_ledger_panel_carries_the_cost_line(registry, project):
    from hub_helpers import client_for

    launched(registry, project, "priced", "resources.price_per_hour=3.2")
    with client_for(project) as client:
        cost = client.get("/api/runs/priced/ledger").json()["cost"]
        page = client.get("/runs/priced").text
    assert cost["summary"] == "$6.40 used, $1.12 lost to preemption (recipe resources.price_per_hour: $3.20/h a node)"
    assert 'id="ledger-cost"' in page


def test_compare_prices_each_runs_ledger_hours_among_the_bookkeeping_rows(registry, project, tmp_path,
                                                                          mlflow_sqlite):
    from mlflow.tracking import MlflowClient

    uri = mlflow_sqlite(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("cost")
    for run_id, price in (("run-a", ("resources.price_per_hour=3.2",)), ("run-b", ())):
        record = launched(registry, project, run_id, *price)
        registry.update(run_id, tracking_uri=uri)
        run = client.create_run(experiment, tags={"spottrain.run_id": run_id}).info.run_id
        client.log_metric(run, "train/loss", 1.0, step=90)
        client.log_metric(run, "ledger/device_hours", GPU_HOURS, step=90)
        client.log_metric(run, "ledger/device_hours_lost", GPU_HOURS_LOST, step=90)
        del record
    ws = ops.Workspace(project, registry)
    view = ops.compare_runs(ws, ["run-a", "run-b"])
    assert view.metrics["ledger/dollars_used"] == [pytest.approx(6.4), None]  # run-b: unknown, not $0
    assert view.metrics["ledger/dollars_lost"] == [pytest.approx(1.12), None]
    text = ops.compare_text(view, every_metric=True)
    assert ["ledger/dollars_used", "6.4", "-"] in [line.split() for line in text.splitlines()]
    assert "ledger/dollars_used" not in ops.compare_text(view)  # bookkeeping: behind --all
