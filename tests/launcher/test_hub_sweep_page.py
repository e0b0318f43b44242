"""The hub's sweep page (/sweeps/ID) and its API (/api/sweeps/ID, stop, resume) over a real run database: a sweep
an ASHA search explored, its decisions in `sweep_decisions`, its cells' metric in a SQLite MLflow store and their
ledgers in the store. Stop and Resume start the real detached controller (`launcher.sweeps.controller`); the
browser test draws the page in headless Chromium (the `page` fixture of test_hub_browser)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from hub_helpers import client_for
from launch_helpers import copy_real_recipes
from test_hub_browser import page, page_errors  # noqa: F401 (fixtures of the browser test below)
from launcher import operations as ops
from launcher.registry import LedgerSummary, Registry, RunRecord
from launcher.sweeps.book import Decision, SweepBook, SweepRecord, SweepState, Verdict
from launcher.views.ledger import dollars
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState
from spottrain_contract.ledger import FINISHED, STOPPED, Attempt, prefix
from spottrain_contract.recipe import load_recipe
from spottrain_contract.store import open_store

RECIPE = """\
# The sweep page's tests: three learning rates, ASHA on val/loss with rungs at 4 and 12 of 36 steps.
extends: baseline.yaml
sweep:
  lr:
    lr_1e4: {train.optim.lr: 1.0e-4}
    lr_1e3: {train.optim.lr: 1.0e-3}
    lr_1e2: {train.optim.lr: 1.0e-2}
search: {method: asha, metric: val/loss, mode: min, budget: train.max_steps, min_budget: 4}
"""
SWEEP_ID = "lr_page-0001"
FULL_STEPS = 36
PRICED = ("resources.price_per_hour=4.0",)
T0 = 1_767_225_600.0
# cell -> (its run's end, val/loss at each evaluation step, its judgements: (rung, budget, verdict))
CELLS = {
    "lr_1e3": (RunState.FINISHED, {4: 2.2, 12: 1.9, 36: 1.5},
               [(0, 4.0, Verdict.PROMOTED), (1, 12.0, Verdict.PROMOTED)]),
    "lr_1e4": (RunState.PRUNED, {4: 2.5, 12: 2.4}, [(0, 4.0, Verdict.PROMOTED), (1, 12.0, Verdict.PRUNED)]),
    "lr_1e2": (RunState.PRUNED, {4: 3.0}, [(0, 4.0, Verdict.PRUNED)]),
}


def make_sweep(project: Path, mlflow_uri: str, *, sweep_id: str = SWEEP_ID, state: SweepState = SweepState.RUNNING,
               overrides: tuple[str, ...] = PRICED) -> str:
    """The sweep of recipes/lr_page.yaml as a controller leaves it: its record, a run per cell (the metric logged
    at each evaluation, an attempt of one GPU in its ledger, 90 s a step) and each decision."""
    from mlflow.tracking import MlflowClient

    overrides = (f"train.max_steps={FULL_STEPS}", *overrides)
    registry, book = Registry(project), SweepBook(Registry(project))
    book.create(SweepRecord(
        sweep_id=sweep_id, recipe="lr_page", target="local", method="asha",
        request={"recipe": "lr_page", "target": "local", "profile": "local", "overrides": list(overrides),
                 "max_parallel": None, "chaos": None},
        search={"method": "asha", "metric": "val/loss", "mode": "min", "budget": "train.max_steps", "min_budget": 4},
        state=state, started=T0, ended=None, controller=None, heartbeat=None, parent_run=None))
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment(f"sweep-page-{sweep_id}")
    store = project / "runs" / "store"
    for name, (end, values, judgements) in CELLS.items():
        run_id = f"{sweep_id}-{name}"
        steps = max(values)
        attempt = Attempt(number=1, started=T0, start_step=0, world_size=1, device="NVIDIA A100-SXM4-80GB", gpus=1,
                          last_step=steps, last_seen=T0 + 90 * steps, ended=T0 + 90 * steps,
                          cause=FINISHED if end is RunState.FINISHED else STOPPED, startup_seconds=0.0)
        open_store(str(store)).put_bytes(attempt.to_json(), prefix(run_id) + attempt.key_name)
        shipped = load_recipe("lr_page", project_dir=project, profile="local", overrides=overrides,
                              cell=name).shipped()
        registry.save(RunRecord(run_id=run_id, recipe="lr_page", target="local", state=end, started=T0,
                                store=str(store), local_dir=str(project / "runs" / "local"), tracking_uri=mlflow_uri,
                                project=str(project), recipe_document=shipped, sweep_id=sweep_id, cell=name))
        registry.cache_ledger(run_id, LedgerSummary(goodput=1.0, device_hours=attempt.wall_seconds / 3600,
                                                    device_unit="GPU", read=T0))  # as its Run page reads it
        run = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: run_id}).info.run_id
        for step, value in values.items():
            client.log_metric(run, "val/loss", value, step=step)
        for rung, budget, verdict in judgements:
            book.decide(sweep_id, Decision(cell=name, run_id=run_id, rung=rung, budget=budget, value=values[budget],
                                           verdict=verdict, decided=T0 + 90 * budget, reported=T0 + 90 * budget,
                                           acted=T0 + 90 * budget + 2 if verdict is Verdict.PRUNED else None))
    return sweep_id


@pytest.fixture
def project(tmp_path) -> Path:
    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    (project / "recipes" / "lr_page.yaml").write_text(RECIPE)
    return project


@pytest.fixture
def mlflow_uri(tmp_path, mlflow_sqlite) -> str:
    return mlflow_sqlite(tmp_path / "mlflow.db")


@pytest.fixture
def client(project):
    with client_for(project) as client:
        yield client


@pytest.fixture
def controllers(project):
    """Ends at teardown any controller a test's Stop or Resume left alive (each ends by itself once its sweep is
    stopped or finished)."""
    yield
    for record in SweepBook(Registry(project)).all():
        if record.controller and SweepBook(Registry(project)).controller_alive(record):
            os.kill(int(record.controller.rpartition(":")[2]), signal.SIGTERM)


def row_of(html: str, cell: str) -> str:
    return re.search(rf'<tr data-cell="{cell}".*?</tr>', html, re.S).group(0)


def text(html: str) -> str:
    """The page's words, tags gone and spaces folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def wait_for_sweep(client, sweep_id: str, state: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = client.get(f"/api/sweeps/{sweep_id}").json()
        if report["state"] == state:
            return report
        assert time.monotonic() < deadline, f"sweep {sweep_id} still {report['state']} after {timeout}s"
        time.sleep(0.5)


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_page_marks_the_rungs_and_says_how_each_cell_was_judged(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    answer = client.get(f"/sweeps/{sweep_id}")
    assert answer.status_code == 200
    assert "asha on val/loss (min), budget train.max_steps = 36, rungs at 4, 12" in text(answer.text)
    judged = {cell: re.search(r'<td class="judged">([^<]*)</td>', row_of(answer.text, cell)).group(1)
              for cell in CELLS}
    assert judged == {"lr_1e3": "promoted at 4, promoted at 12", "lr_1e4": "promoted at 4, pruned at 12",
                      "lr_1e2": "pruned at 4"}


def test_pruned_cells_are_grey_rows_and_the_best_cell_is_highlighted(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    html = client.get(f"/sweeps/{sweep_id}").text
    assert re.search(r'<tr data-cell="lr_1e3" class=" best">', html)
    for cell in ("lr_1e4", "lr_1e2"):
        assert re.search(rf'<tr data-cell="{cell}" class="pruned">', html)
        assert '<span class="state state-pruned">pruned</span>' in row_of(html, cell)
    assert "best lr_1e3 (val/loss 1.5)" in text(html)
    assert re.search(rf'<a href="/runs/{sweep_id}-lr_1e3">lr_1e3</a>', html)


def test_each_cell_links_its_run_with_its_step_metric_and_overrides(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    row = row_of(client.get(f"/sweeps/{sweep_id}").text, "lr_1e4")
    cells = [text(td).strip() for td in re.findall(r"<td[^>]*>.*?</td>", row, re.S)]
    assert cells[:6] == ["lr_1e4", f"{sweep_id}-lr_1e4", "pruned", "-/36", "2.4", "promoted at 4, pruned at 12"]
    assert cells[8] == "train.optim.lr=0.0001"
    assert f'<a href="/runs/{sweep_id}-lr_1e4">' in row


def test_the_page_shows_what_the_sweep_spent_and_what_its_pruned_cells_did_not(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    report = client.get(f"/api/sweeps/{sweep_id}").json()
    assert report["dollars_spent"] > 0 and report["dollars_not_spent"] > 0
    words = text(client.get(f"/sweeps/{sweep_id}").text)
    assert (f"{report['steps_computed']} steps computed of {3 * FULL_STEPS} for the full grid "
            f"· {report['device_hours']:.3g} GPU-hours · {dollars(report['dollars_spent'])} spent "
            f"· {dollars(report['dollars_not_spent'])} not spent by the 2 pruned cells") in words
    cells = {cell["cell"]: cell for cell in report["cells"]}
    row = text(row_of(client.get(f"/sweeps/{sweep_id}").text, "lr_1e2"))
    assert f"{dollars(cells['lr_1e2']['cost']['dollars_used'])} {dollars(cells['lr_1e2']['dollars_not_spent'])}" in row


def test_without_a_price_the_dollars_are_unknown_never_zero(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri, overrides=())
    html = client.get(f"/sweeps/{sweep_id}").text
    words = text(html)
    assert "dollars spent unknown" in words and "not spent by pruned cells: unknown" in words
    assert "$0" not in words
    assert text(row_of(html, "lr_1e2")).split()[-3:] == ["unknown", "unknown", "train.optim.lr=0.01"]


def test_a_running_sweep_without_a_controller_says_resume_starts_one(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    html = client.get(f"/sweeps/{sweep_id}").text
    assert re.search(r'<span id="sweep-controller" class="hint">no controller — Resume starts one</span>', html)
    data = json.loads(re.search(r'<script type="application/json" id="sweep-data">(.*?)</script>', html, re.S)
                      .group(1))
    assert (data["sweep"]["state"], data["sweep"]["controller_alive"]) == ("running", False)


# --- the API ----------------------------------------------------------------------------------------------------


def test_the_json_is_what_launch_sweep_status_json_prints(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri)
    report = client.get(f"/api/sweeps/{sweep_id}").json()
    assert report == ops.search_report(ops.Workspace.open(project), sweep_id).model_dump(mode="json")
    assert (report["rungs"], report["best"], report["full_budget"]) == ([4.0, 12.0], "lr_1e3", FULL_STEPS)
    cells = {cell["cell"]: cell for cell in report["cells"]}
    assert cells["lr_1e4"]["points"] == [[4.0, 2.5], [12.0, 2.4]]
    assert [(j["budget"], j["verdict"]) for j in cells["lr_1e4"]["judgements"]] == [(4.0, "promoted"),
                                                                                    (12.0, "pruned")]


def test_api_sweeps_lists_the_sweeps_a_search_explores(client, project, mlflow_uri):
    make_sweep(project, mlflow_uri)
    assert client.get("/api/sweeps").json() == [{"sweep_id": SWEEP_ID, "recipe": "lr_page", "target": "local",
                                                 "method": "asha", "state": "running"}]


def test_an_unknown_sweep_is_404_on_the_page_and_the_api(client):
    missing = client.get("/api/sweeps/nope")
    assert (missing.status_code, missing.json()) == (404, {
        "error": "no sweep 'nope' with a search in the run database (launch status lists every sweep)"})
    answer = client.get("/sweeps/nope")
    assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.text
    assert client.post("/api/sweeps/nope/stop").status_code == 404


def test_a_grid_sweep_has_no_sweep_page_and_says_where_its_cells_are(client, project, mlflow_uri):
    """Cells of a sweep launched without a search (no record in `sweeps`)."""
    shipped = load_recipe("lr_page", project_dir=project, profile="local", cell="lr_1e3").shipped()
    Registry(project).save(RunRecord(run_id="grid-lr_1e3", recipe="lr_page", target="local",
                                     state=RunState.FINISHED, started=T0, store="", local_dir=str(project),
                                     tracking_uri="", project=str(project), recipe_document=shipped,
                                     sweep_id="grid", cell="lr_1e3"))
    missing = client.get("/api/sweeps/grid")
    assert (missing.status_code, missing.json()["error"]) == (
        404, "sweep grid has no search: every cell trains to the end (launch compare grid shows them)")
    assert client.get("/sweeps/grid").status_code == 404
    assert client.get("/api/sweeps").json() == []


@pytest.mark.slow
def test_stop_hands_the_sweep_to_a_controller_that_marks_it_stopped(client, project, mlflow_uri, controllers):
    sweep_id = make_sweep(project, mlflow_uri)
    stopped = client.post(f"/api/sweeps/{sweep_id}/stop")
    assert stopped.json() == {"id": sweep_id, "state": "stopping"}
    wait_for_sweep(client, sweep_id, "stopped")  # no live cell to stop: the controller's first pass ends it
    assert client.post(f"/api/sweeps/{sweep_id}/stop").json()["state"] == "stopped"


@pytest.mark.slow
def test_resume_starts_a_controller_that_goes_on_where_the_sweep_was(client, project, mlflow_uri, controllers):
    sweep_id = make_sweep(project, mlflow_uri, state=SweepState.STOPPED)
    resumed = client.post(f"/api/sweeps/{sweep_id}/resume").json()
    assert resumed["state"] == "running" and re.fullmatch(r"pid \d+", resumed["controller"])
    # every cell ended and none is left to launch: the controller finishes the sweep, its decisions as they were
    report = wait_for_sweep(client, sweep_id, "finished")
    assert {c["cell"]: c["state"] for c in report["cells"]} == {name: str(end) for name, (end, _, _) in CELLS.items()}


def test_resume_of_a_finished_sweep_says_there_is_nothing_to_resume(client, project, mlflow_uri):
    sweep_id = make_sweep(project, mlflow_uri, state=SweepState.FINISHED)
    refused = client.post(f"/api/sweeps/{sweep_id}/resume")
    assert (refused.status_code, refused.json()) == (400, {"error": f"sweep {sweep_id} finished: nothing to resume"})


# --- in a browser -----------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_the_chart_has_a_line_per_cell_the_rungs_and_the_judgements_in_a_browser(tmp_path, project, mlflow_uri,
                                                                                 page, page_errors, controllers):
    from test_hub_browser import ARTIFACTS, serving

    sweep_id = make_sweep(project, mlflow_uri, state=SweepState.STOPPED)
    with serving(project, tmp_path) as url:
        page.goto(f"{url}/sweeps/{sweep_id}")
        page.wait_for_selector("#chart-sweep .main-svg")
        chart = "document.querySelector('#chart-sweep')"
        assert page.evaluate(f"{chart}.layout.shapes.map((s) => [s.x0, s.line.dash])") == [[4, "dash"], [12, "dash"]]
        legend = page.evaluate(f"{chart}.data.filter((t) => t.showlegend !== false).map((t) => t.name)")
        assert legend == ["pruned", "lr_1e3 (best)", "judged: promoted", "judged: pruned"]
        pruned = page.evaluate(f"{chart}.data.filter((t) => t.legendgroup === 'pruned').map((t) => t.text[0])")
        assert sorted(pruned) == ["lr_1e2", "lr_1e4"]
        assert page.evaluate(f"{chart}.data.find((t) => t.name === 'judged: pruned').marker.symbol") == "x"
        assert page.is_disabled("#stop-sweep") and not page.is_disabled("#resume-sweep")  # a stopped sweep
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "sweep.png"), full_page=True)
        served = [" ".join(page.inner_text(part).split()) for part in ("#sweep-cells", "#sweep-money")]

        page.click("#resume-sweep")  # a controller finishes it (nothing left to launch); the page follows
        page.wait_for_function("document.querySelector('#sweep-state').textContent === 'finished'", timeout=60_000)
        assert page.is_disabled("#stop-sweep") and page.is_disabled("#resume-sweep")
        assert [" ".join(page.inner_text(part).split()) for part in ("#sweep-cells", "#sweep-money")] == served

        page.goto(url)  # the Runs page links the sweep's id to its page
        page.click(f"tr.sweep a[href='/sweeps/{sweep_id}']")
        page.wait_for_url(f"{url}/sweeps/{sweep_id}")
