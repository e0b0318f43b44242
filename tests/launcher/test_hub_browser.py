"""The hub in a real browser (headless Chromium), the seed's scenario with a tiny local run: a new run from the
form, its loss curve growing while it trains, Stop, Clone with another learning rate, Save & Launch, and Compare
showing exactly that setting. Screenshots go to runs/test-artifacts/hub/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from hub_helpers import hub_project
from launch_helpers import PROJECT_DIR, launch_executable

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_DIR / "runs" / "test-artifacts" / "hub"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub(tmp_path):
    """`launch hub` serving a project with the real recipes; its URL."""
    project = hub_project(tmp_path / "project")
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("SPOTTRAIN_HUB_TOKEN", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen([launch_executable(), "hub", "--port", str(port)], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "hub.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/runs", timeout=2)
            break
        except OSError:
            assert server.poll() is None, (tmp_path / "hub.log").read_text()
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.3)
    yield url, project
    import json

    for run in json.load(urllib.request.urlopen(f"{url}/api/runs", timeout=30)):  # nothing trains on after it
        if run["state"] not in ("draft", "finished", "failed", "stopped"):
            # through the hub: it started the supervisor, so it is the process that can reap it
            request = urllib.request.Request(f"{url}/api/runs/{run['id']}/stop", data=b"{}", method="POST",
                                             headers={"X-Spottrain-CSRF": "1", "Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=240)
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def page():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/setup installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def points(page) -> int:
    return page.evaluate("Number(document.querySelector('#chart-loss').dataset.points || 0)")


def test_new_run_stop_clone_and_compare(hub, page):
    url, project = hub
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{url}/new")
    page.fill("#name", "hub-e2e")
    page.fill("[id='f-train.max_steps']", "400")
    page.fill("[id='f-train.epochs']", "100")  # the shipped data is 20 steps an epoch: train until stopped
    lr = page.input_value("[id='f-train.optim.lr']")
    page.fill("[id='f-train.optim.lr']", "-1")  # the loader's reason shows beside the field
    page.click("#dry-run")
    page.wait_for_selector("[id='f-train.optim.lr'].invalid")
    beside = page.text_content("[id='f-train.optim.lr'] ~ .field-error")
    assert beside == "expected > 0, got -1.0", beside
    page.fill("[id='f-train.optim.lr']", lr)
    page.click("#dry-run")
    page.wait_for_selector("#dry-run-output:not([hidden])")
    assert "recipe     baseline" in page.text_content("#dry-run-output")
    page.screenshot(path=str(ARTIFACTS / "new-run.png"), full_page=True)
    page.click("#launch")
    page.wait_for_url(f"{url}/runs/*")
    first = page.url.rsplit("/", 1)[1]

    page.wait_for_function("Number(document.querySelector('#chart-loss').dataset.points || 0) >= 2",
                           timeout=180_000)
    seen = points(page)
    page.wait_for_function(f"Number(document.querySelector('#chart-loss').dataset.points || 0) > {seen}",
                           timeout=120_000)
    assert page.text_content("#run-state") == "running"
    page.screenshot(path=str(ARTIFACTS / "run.png"), full_page=True)

    page.click("#stop")
    page.wait_for_function("document.querySelector('#run-state').textContent === 'stopped'", timeout=240_000)
    page.wait_for_selector("#checkpoints tbody tr")  # the checkpoint the stop made
    page.wait_for_function("document.querySelector('#ledger-totals').textContent.startsWith('1 attempt,')")
    assert not page.is_disabled("#resume")

    page.click("#clone")
    page.wait_for_url(f"{url}/new?draft=*")
    assert page.input_value("[id='f-train.max_steps']") == "400"
    page.fill("[id='f-train.optim.lr']", "0.002")
    page.click("#launch")  # Save & Launch
    page.wait_for_url(f"{url}/runs/*")
    second = page.url.rsplit("/", 1)[1]
    assert second != first
    page.wait_for_function("!['draft', 'launching'].includes(document.querySelector('#run-state').textContent)")
    assert page.text_content("#run-name") == "hub-e2e (copy)"

    page.goto(url)
    page.check(f"input.pick[value='{first}']")
    page.check(f"input.pick[value='{second}']")
    page.click("#compare")
    page.wait_for_url(f"{url}/compare?*")
    assert page.locator("#config-diff .diff-key").all_text_contents() == ["train.optim.lr"]
    assert "goodput" in page.text_content("#usage")
    page.wait_for_function("Number(document.querySelector('#chart-loss').dataset.points || 0) > 0")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_the_runs_page_groups_a_sweeps_cells_and_filters_them(hub, page):
    """Every run of the database with who launched it; a sweep's cells under its collapsible row; the filters kept
    in the URL, applied to cells; the ledger's goodput and GPU-hours where they were read."""
    from launcher.registry import LedgerSummary, Registry, RunRecord
    from spottrain_contract.job import RunState

    url, project = hub
    registry = Registry(project)
    for run_id, state, who, sweep in [("solo", RunState.FINISHED, "ana@box", {}),
                                      ("abl-x", RunState.FINISHED, "bo@lab", {"sweep_id": "abl", "cell": "x"}),
                                      ("abl-y", RunState.FAILED, "bo@lab", {"sweep_id": "abl", "cell": "y"})]:
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=state, started=time.time(),
                                store="", local_dir=str(project / "none"), tracking_uri="", project=str(project),
                                launched_by=who, task="baseline", **sweep))
    registry.cache_ledger("abl-x", LedgerSummary(goodput=0.931, device_hours=0.42, device_unit="GPU", read=1.0))

    def rows() -> list[str]:
        return page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.id || 'sweep ' + "
                                                           "r.dataset.sweep)")

    page.goto(url)
    page.wait_for_selector("#live:text('live')")
    assert rows() == ["sweep abl", "abl-x", "abl-y", "solo"]
    sweep = page.text_content("tr.sweep")
    assert "1/2 cells" in sweep and "1 finished, 1 failed" in sweep and "0.42 GPU-h" in sweep
    assert "goodput 93.1% · 0.42 GPU-h" in page.text_content("tr[data-id='abl-x']")
    assert page.get_attribute("a.compare-sweep", "href") == "/compare?run=abl-x&run=abl-y"

    page.select_option("#filter-who", "bo@lab")
    page.select_option("#filter-state", "failed")
    assert rows() == ["sweep abl", "abl-y"] and "who=bo%40lab" in page.url and "state=failed" in page.url
    page.reload()
    page.wait_for_selector("#live:text('live')")
    assert rows() == ["sweep abl", "abl-y"] and page.input_value("#filter-who") == "bo@lab"
    page.click("tr.sweep button.toggle")
    assert rows() == ["sweep abl"]

    page.goto(f"{url}/?q=SOL")
    assert rows() == ["solo"]
    page.goto(url)
    page.check("input.pick[value='abl-x']")
    page.check("input.pick[value='solo']")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "runs.png"), full_page=True)
    page.click("#compare")
    page.wait_for_url(f"{url}/compare?run=abl-x&run=solo")
