"""The hub in a real browser (headless Chromium), the seed's scenario with a tiny local run: a new run from the
form, its loss curve growing while it trains, Stop, Clone with another learning rate, Save & Launch, and Compare
showing exactly that setting. Screenshots go to runs/test-artifacts/hub/."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from hub_helpers import hub_project
from launch_helpers import PROJECT_DIR, launch_executable, plan_launch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_DIR / "runs" / "test-artifacts" / "hub"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(project: Path, home: Path, *args: str):
    """`launch hub` (with `args`) serving `project`, HOME `home`; its URL. Any run still training is stopped
    through the hub when it ends."""
    port = free_port()
    env = {**os.environ, "HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("SPOTTRAIN_HUB_TOKEN", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen([launch_executable(), "hub", "--port", str(port), *args], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(home / "hub.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/runs", timeout=2)
            break
        except OSError:
            assert server.poll() is None, (home / "hub.log").read_text()
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.3)
    try:
        yield url
    finally:
        for run in json.load(urllib.request.urlopen(f"{url}/api/runs", timeout=30)):  # nothing trains on after it
            if run["state"] not in ("draft", "finished", "failed", "stopped", "pruned"):
                # through the hub: it started the supervisor, so it is the process that can reap it
                request = urllib.request.Request(f"{url}/api/runs/{run['id']}/stop", data=b"{}", method="POST",
                                                 headers={"X-Spottrain-CSRF": "1",
                                                          "Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=240)
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def hub(tmp_path):
    """`launch hub` serving a project with the real recipes; its URL."""
    project = hub_project(tmp_path / "project")
    with serving(project, tmp_path) as url:
        yield url, project


class PageErrors:
    """What the pages a test visits threw (`pageerror`) or logged as console errors: none, unless allowed."""

    def __init__(self):
        self.seen: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected (a 404 page's own response)."""
        self.allowed.append(re.compile(pattern))

    def add(self, what: str) -> None:
        if not any(pattern.search(what) for pattern in self.allowed):
            self.seen.append(what)


@pytest.fixture
def page_errors():
    return PageErrors()


@pytest.fixture
def page(page_errors):
    """A headless Chromium page; the test fails at teardown on any error a page threw or logged."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/setup installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda error: page_errors.add(f"{page.url}: page error: {error}"))
        page.on("console", lambda message: message.type == "error" and page_errors.add(
            f"{page.url}: console error: {message.text} ({message.location.get('url')})"))
        yield page
        browser.close()
    assert not page_errors.seen, "\n".join(page_errors.seen)


def points(page) -> int:
    return page.evaluate("Number(document.querySelector('#chart-train').dataset.points || 0)")


def _live_curve_grows(page) -> None:
    """The running run's training curve gets points, then more: the page follows the run live."""
    page.wait_for_function("Number(document.querySelector('#chart-train').dataset.points || 0) >= 2",
                           timeout=180_000)
    seen = points(page)
    page.wait_for_function(f"Number(document.querySelector('#chart-train').dataset.points || 0) > {seen}",
                           timeout=120_000)
    assert page.text_content("#run-state") == "running"


def test_new_run_stop_clone_and_compare(hub, page, page_errors):
    url, project = hub
    page_errors.allow(r"/new: console error: Failed to load resource: .* 400 .*/api/dry-run")  # lr -1: refused
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

    _live_curve_grows(page)
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
    page.wait_for_function("Number(document.querySelector('#chart-train').dataset.points || 0) > 0")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_the_runs_page_groups_a_sweeps_cells_and_filters_them(hub, page, page_errors):
    """Every run of the database with who launched it; a sweep's cells under its collapsible row; the filters kept
    in the URL, applied to cells; the ledger's goodput and GPU-hours where they were read."""
    # these records keep no recipe: Compare, where the test ends, answers 400 (its URL is what is checked)
    page_errors.allow(r"/compare\?run=abl-x&run=solo: console error: Failed to load resource: .* 400")
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
    assert page.get_attribute("a.compare-sweep", "href") == "/compare-sweep/abl"  # launch compare SWEEP's view

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


# --- Runs seeded without training: their metrics and log written here, the hub only reads them -------------------
EXPERIMENT = "weighted-mtp/production"  # the baseline recipe's
TQDM_LOG = ("loading data\n"
            "\r  0%|          | 0/3\r 33%|###       | 1/3\r 67%|######    | 2/3\r100%|##########| 3/3\n"
            "epoch 1 done\r\n"
            "\rstep 5\rstep 6")  # a frame still being rewritten, its line not ended yet
TQDM_SHOWN = "loading data\n100%|##########| 3/3\nepoch 1 done\nstep 6"  # as a terminal shows it


@pytest.fixture
def seeded(tmp_path):
    """A hub over two finished runs of ours (`seeded-a`, `seeded-b`) and one MLflow run logged elsewhere, all in
    one SQLite MLflow store the hub watches: train and validation curves of several scales, bookkeeping counts, a
    system sample or two, and a log with tqdm's frames. Yields (url, the external run's MLflow id)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState

    project = hub_project(tmp_path / "project")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(EXPERIMENT)
    now = time.time()

    def logged(name, tags, curves, system=()):
        made = client.create_run(experiment, run_name=name, tags=tags)
        metrics = [Metric(key, value, int((now + step) * 1000), step)
                   for key, points in curves.items() for step, value in points]
        metrics += [Metric(key, value, int(at * 1000), 0) for key, at, value in system]
        client.log_batch(made.info.run_id, metrics=metrics)
        client.set_terminated(made.info.run_id, status="FINISHED")
        return made.info.run_id

    registry = Registry(project)
    for run_id, lr, loss in [("seeded-a", "0.001", 2.0), ("seeded-b", "0.002", 1.8)]:
        curves = {"train/loss": [(s, loss - 0.2 * s) for s in range(1, 5)],
                  "train/learning_rate": [(s, float(lr) * s / 4) for s in range(1, 5)],
                  "train/epoch": [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)],
                  "transfer/upload_bytes": [(s, 0.0) for s in range(1, 5)],
                  "val/loss": [(2, loss - 0.3), (4, loss - 0.5)],
                  "val/accuracy": [(2, 0.52), (4, 0.7)], "val/kendall_tau": [(2, 0.2), (4, 0.41)],
                  "val/total_pairs": [(2, 96.0), (4, 96.0)], "val/correct_predictions": [(2, 50.0), (4, 67.0)]}
        system = [("system/node0/cpu_utilization_percentage", now, 0.0),  # one sample: no chart yet
                  ("system/node0/system_memory_usage_megabytes", now, 1200.0)]
        if run_id == "seeded-a":  # seeded-b: one sample of each, no system chart at all; no perplexity
            system.append(("system/node0/system_memory_usage_megabytes", now + 2, 1250.0))
            curves["val/perplexity"] = [(2, 41.0), (4, 30.5)]
        logged(run_id, {MLFLOW_RUN_ID_TAG: run_id}, curves, system)
        local = tmp_path / run_id
        (local / "store").mkdir(parents=True)
        (local / "run.log").write_text(TQDM_LOG)
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=RunState.FINISHED,
                                started=now, ended=now + 60, store=str(local / "store"), local_dir=str(local),
                                tracking_uri=uri, project=str(project), log=str(local / "run.log"),
                                launched_by="ana@box", task="baseline",
                                handle={"hub": {"recipe": "baseline", "profile": None, "name": run_id,
                                                "overrides": {"train.optim.lr": lr}}}))
    shipped = plan_launch("baseline", target="local", project_dir=project, profile="local").loaded.shipped()
    for cell, loss in (("x", 1.4), ("y", 1.1)):  # a sweep of two cells, for its compare-sweep page
        logged(f"swept-{cell}", {MLFLOW_RUN_ID_TAG: f"swept-{cell}"}, {"train/loss": [(1, loss + 0.5), (2, loss)]})
        registry.save(RunRecord(run_id=f"swept-{cell}", recipe="baseline", target="local", state=RunState.FINISHED,
                                started=now - 600, ended=now - 500, store="", local_dir="", tracking_uri=uri,
                                project=str(project), recipe_document=shipped, sweep_id="swept", cell=cell,
                                task="baseline"))
    external = logged("by-hand", {"mlflow.user": "alice"}, {"train/loss": [(s, 3.0 - 0.1 * s) for s in range(1, 6)]})
    with serving(project, tmp_path, "--mlflow", uri) as url:
        yield url, external


def test_the_runs_page_lists_the_runs_logged_elsewhere_with_its_state_filter(seeded, page):
    url, external = seeded
    page.goto(url)
    page.wait_for_selector("#live:text('live')")
    page.wait_for_selector("#external-runs tbody tr", timeout=20_000)
    assert page.is_visible("#external")
    assert page.eval_on_selector_all("#external-runs tbody tr", "rows => rows.map(r => r.dataset.id)") == [
        f"mlflow:{external}"]
    assert page.get_attribute("#external-runs tbody a", "href") == f"/mlflow-runs/{external}"
    page.select_option("#filter-state", "failed")
    assert page.locator("#external-runs tbody tr").count() == 0
    page.select_option("#filter-state", "finished")
    assert page.locator("#external-runs tbody tr").count() == 1


CHARTS = """() => [...document.querySelectorAll('.chart')].map((node) => {
  const box = (selector) => { const found = node.querySelector(selector);
                               return found ? found.getBoundingClientRect().toJSON() : null; };
  const full = node._fullLayout;
  return {id: node.id, hidden: node.hidden || node.offsetParent === null,
          title: full ? full.title.text : null,
          traces: (node.data || []).map((t) => ({name: t.name, y: t.y, color: (t.line || {}).color})),
          xtype: full ? full.xaxis.type : null, dtick: full ? full.xaxis.dtick : null,
          yrange: full ? full.yaxis.range : null,
          legend: full && full.showlegend ? box('.legend') : null, gtitle: box('.gtitle'), xtitle: box('.g-xtitle')};
})"""


def overlap(a, b) -> bool:
    return bool(a and b) and a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] \
        and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def test_the_charts_keep_one_scale_each_leave_counts_out_and_wait_for_two_points(seeded, page):
    url, _ = seeded
    page.goto(f"{url}/runs/seeded-a")
    page.wait_for_function("Number(document.querySelector('#chart-train').dataset.points || 0) >= 4")
    page.wait_for_selector("#system-title:not([hidden])")
    page.wait_for_function("document.querySelector('#chart-ram').data")
    charts = {chart["id"]: chart for chart in page.evaluate(CHARTS)}
    shown = {id: chart for id, chart in charts.items() if not chart["hidden"]}
    names = {id: [t["name"] for t in chart["traces"]] for id, chart in shown.items()}
    plotted = [name for traces in names.values() for name in traces]
    for count in ("val/total_pairs", "val/correct_predictions", "train/epoch"):  # bookkeeping, not a curve
        assert count not in plotted, names
        assert count in page.text_content("#counts")
    assert "val/total_pairs 96" in page.text_content("#counts") and "train/epoch 1" in page.text_content("#counts")
    assert "transfer/upload_bytes" not in plotted, names  # the store's traffic: no training curve
    assert charts["chart-cpu"]["hidden"], "one CPU sample is no chart"
    assert "chart-ram" in shown and "train/loss" in names["chart-train"]
    for name in ("train/learning_rate", "val/loss", "val/accuracy", "val/kendall_tau", "val/perplexity"):
        assert name in plotted, names
    [with_accuracy] = [id for id, traces in names.items() if "val/accuracy" in traces]
    assert "val/perplexity" not in names[with_accuracy], names  # 0.7 and 30: two scales, two charts
    for id, chart in shown.items():
        peaks = [max(abs(v) for v in t["y"] if v is not None) for t in chart["traces"]]
        assert max(peaks) <= 10 * min(peaks), (id, names[id], peaks)
        assert max(len(t["y"]) for t in chart["traces"]) >= 2, (id, chart)
        colours = [t["color"] for t in chart["traces"]]
        assert None not in colours and len(set(colours)) == len(colours), (id, colours)
        if chart["xtype"] == "date":
            assert float(chart["dtick"]) >= 1000, (id, chart["dtick"])  # no millisecond ticks
        else:
            assert float(chart["dtick"]) >= 1, (id, chart["dtick"])  # no step 1.5
        assert chart["yrange"][0] >= 0 or min(v for t in chart["traces"] for v in t["y"]) < 0, (id, chart["yrange"])
        assert not overlap(chart["legend"], chart["xtitle"]) and not overlap(chart["legend"], chart["gtitle"]), chart
    assert shown["chart-ram"]["yrange"][0] >= 0

    page.goto(f"{url}/runs/seeded-b")  # one sample of each system metric: no chart, and no heading over none
    page.wait_for_function("document.querySelector('#chart-ram').dataset.points === '1'")
    assert page.is_hidden("#system-title")

    page.goto(f"{url}/compare?run=seeded-a&run=seeded-b")  # one run's curve still says whose it is
    page.wait_for_function("[...document.querySelectorAll('.chart')].some((n) => n.data && n.data.length === 1)")
    [alone] = [chart for chart in page.evaluate(CHARTS) if chart["title"] == "val/perplexity"]
    assert [t["name"] for t in alone["traces"]] == ["seeded-a (ed-a)"] and alone["legend"], alone


def test_the_log_shows_the_last_frame_of_a_rewritten_line(seeded, page):
    url, _ = seeded
    page.goto(f"{url}/runs/seeded-a")
    page.wait_for_function("document.querySelector('#log').textContent.includes('step')")
    page.wait_for_timeout(500)  # the stream's end: nothing more comes
    assert page.text_content("#log") == TQDM_SHOWN


PAGES = {"runs": ("/", "#live:text('live')"), "run": ("/runs/seeded-a", "#chart-train[data-points='4']"),
         "new-run": ("/new", "#run-form"), "compare": ("/compare?run=seeded-a&run=seeded-b", "#chart-train[data-points]"),
         "external-run": (None, "#chart-train[data-points]"), "login": ("/login", "form"),
         "not-found": ("/runs/no-such-run", "#error"), "compare-sweep": ("/compare-sweep/swept", "#sweep-cells")}


def test_every_page_fits_a_narrow_window_and_is_photographed(seeded, page, page_errors):
    """At 800 and 420 px wide no page is wider than the window (wide tables scroll inside their panel); every page
    photographed at 1400 and 420 px into runs/test-artifacts/hub/pages/."""
    url, external = seeded
    page_errors.allow(r"^\S*/runs/no-such-run: console error: Failed to load resource: .* 404")
    folder = ARTIFACTS / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    too_wide = []
    for width in (1400, 800, 420):
        page.set_viewport_size({"width": width, "height": 900})
        for name, (path, ready) in PAGES.items():
            page.goto(url + (path or f"/mlflow-runs/{external}"))
            page.wait_for_selector(ready, state="attached")
            page.wait_for_timeout(300)
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if scroll > inner:
                too_wide.append(f"{name} at {width} px: {scroll} px wide")
            if width != 800:
                page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    print(f"screenshots in {folder}")
    assert not too_wide, too_wide


def test_an_eval_job_is_listed_under_its_run_and_cannot_be_resumed_or_cloned(tmp_path, page):
    from launcher.registry import Registry, RunRecord
    from launcher.requests import JobKind
    from launcher.rundb.records import WeightsJobOf
    from spottrain_contract.job import RunState

    project = hub_project(tmp_path / "project")
    registry, now = Registry(project), time.time()
    for run_id, started, handle in (("trained", now - 300, {}), ("later", now - 100, {}),
                                    ("trained-eval-0a1b2c3d", now - 50,
                                     WeightsJobOf(kind=JobKind.EVAL, run_id="trained").entries())):
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=RunState.FAILED,
                                started=started, ended=started + 10, store="", local_dir="", tracking_uri="",
                                project=str(project), handle=handle))
    with serving(project, tmp_path) as url:
        page.goto(url)
        page.wait_for_selector("#live:text('live')")
        ids = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(row => row.dataset.id)")
        assert ids == ["later", "trained", "trained-eval-0a1b2c3d"]  # newest first, the job under its run
        assert page.get_attribute("tr[data-id='trained-eval-0a1b2c3d']", "class") == "cell job"
        assert page.text_content("tr[data-id='trained-eval-0a1b2c3d'] a") == "eval job"
        page.goto(f"{url}/runs/trained-eval-0a1b2c3d")
        assert page.is_disabled("#resume") and page.is_disabled("#clone")
        assert "eval job of run trained" in page.text_content("#job-of")
        page.goto(f"{url}/runs/trained")
        assert page.is_enabled("#resume") and page.is_enabled("#clone")


# --- A command run: whatever its script logs, charted by prefix, one scale a chart -----------------------------
SCRIPT_CURVES = {  # as a team's script reports them: prefixed or not, of very different sizes within a prefix
    "train/loss": [(s, 2.0 - 0.1 * s) for s in range(1, 5)],
    "train/grad_norm": [(s, 0.9 - 0.05 * s) for s in range(1, 5)],
    "train/learning_rate": [(s, 1e-4 * s / 4) for s in range(1, 5)],
    "eval/accuracy": [(2, 0.5), (4, 0.7)], "eval/loss": [(2, 1.5), (4, 1.2)],
    "hash/bit_entropy": [(2, 5.2), (4, 6.8)], "hash/quantization_error": [(2, 0.02), (4, 0.01)],
    "temperature": [(s, 0.07) for s in range(1, 5)], "throughput": [(s, 1200.5 + s) for s in range(1, 5)],
    "transfer/upload_bytes": [(s, 0.0) for s in range(1, 5)],  # spottrain's books: no curve
}


@pytest.fixture
def script_run(tmp_path):
    """A hub over one stopped command run (`script-run`, the fixture recipe script_schema) and the metrics its
    script logged. Yields the hub's URL."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from hub_helpers import command_project
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState
    from spottrain_contract.recipe import load_recipe

    project = command_project(tmp_path / "project")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    made = client.create_run(client.create_experiment("scripts"), run_name="script-run",
                             tags={MLFLOW_RUN_ID_TAG: "script-run"})
    client.log_batch(made.info.run_id, metrics=[Metric(key, value, int((time.time() + step) * 1000), step)
                                                for key, curve in SCRIPT_CURVES.items() for step, value in curve])
    client.set_terminated(made.info.run_id, status="KILLED")
    shipped = load_recipe("script_schema", project_dir=project, profile="local").shipped()
    Registry(project).save(RunRecord(run_id="script-run", recipe="script_schema", target="local",
                                     state=RunState.STOPPED, started=time.time(), store=str(tmp_path / "store"),
                                     local_dir=str(tmp_path), tracking_uri=uri, project=str(project),
                                     recipe_document=shipped, launched_by="ana@box", task="command"))
    with serving(project, tmp_path) as url:
        yield url


def test_a_command_runs_metrics_are_charted_by_prefix_one_scale_a_chart(script_run, page):
    url = script_run
    page.goto(f"{url}/runs/script-run")
    page.wait_for_function("document.querySelector('#chart-other-2') && document.querySelector('#chart-other-2').data")
    charts = [chart for chart in page.evaluate(CHARTS) if chart["traces"]]
    assert [(c["id"], c["title"], [t["name"] for t in c["traces"]]) for c in charts] == [
        ("chart-train", "train", ["train/loss", "train/grad_norm"]),  # losses first, as Compare lists them
        ("chart-train-2", "train/learning_rate", ["train/learning_rate"]),  # 1e-4: not on the loss's axis
        ("chart-eval", "eval", ["eval/loss", "eval/accuracy"]),
        ("chart-hash", "hash/bit_entropy", ["hash/bit_entropy"]),
        ("chart-hash-2", "hash/quantization_error", ["hash/quantization_error"]),
        ("chart-other", "temperature", ["temperature"]),  # the unprefixed ones: one group, split by scale
        ("chart-other-2", "throughput", ["throughput"]),
    ]
    assert not any(chart["hidden"] for chart in charts)
    assert not page.is_disabled("#resume") and not page.is_disabled("#clone") and page.is_disabled("#stop")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "command-run.png"), full_page=True)


# --- The seed's scenarios A and B with the Hugging Face Trainer example (task: command) ---------------------------
@pytest.fixture
def hf_hub(tmp_path):
    """`launch hub` over a project holding the hf_trainer recipe, its schema and its script; its URL."""
    project = hub_project(tmp_path / "project")
    shutil.copy(PROJECT_DIR / "recipes" / "hf_trainer.yaml", project / "recipes")
    shutil.copytree(PROJECT_DIR / "recipes" / "schemas", project / "recipes" / "schemas", dirs_exist_ok=True)
    shutil.copytree(PROJECT_DIR / "examples" / "hf_trainer", project / "examples" / "hf_trainer")
    with serving(project, tmp_path) as url:
        yield url


def test_the_hf_trainer_example_from_its_schema_form_stopped_cloned_and_compared(hf_hub, page):
    """Scenario A: the New run form from the config's JSON Schema, its presets the recipe's profiles, a launch on
    this machine with a live curve; B: Stop, Clone with one config value changed, launch, and Compare showing
    exactly that key."""
    url = hf_hub
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/new?recipe=hf_trainer&target=local")
    assert page.eval_on_selector_all("#profile option", "options => options.map(o => o.value)") == [
        "", "local", "colab"]
    assert page.input_value("#profile") == "local"
    assert page.input_value("[id='f-config.training.max_steps']") == "30"  # the local preset's
    page.fill("#name", "hf-e2e")
    page.fill("[id='f-config.training.max_steps']", "5000")  # train until stopped
    page.click("#launch")
    page.wait_for_url(f"{url}/runs/*")
    first = page.url.rsplit("/", 1)[1]
    assert page.text_content("#overrides").split() == ["config.training.max_steps=5000"]  # only what was changed
    _live_curve_grows(page)
    page.screenshot(path=str(ARTIFACTS / "hf-run.png"), full_page=True)

    page.click("#stop")
    page.wait_for_function("document.querySelector('#run-state').textContent === 'stopped'", timeout=240_000)
    assert not page.is_disabled("#resume")
    page.click("#clone")
    page.wait_for_url(f"{url}/new?draft=*")
    assert page.input_value("[id='f-config.training.max_steps']") == "5000"
    page.fill("[id='f-config.training.learning_rate']", "0.002")
    page.click("#launch")  # Save & Launch
    page.wait_for_url(f"{url}/runs/*")
    second = page.url.rsplit("/", 1)[1]
    assert second != first
    page.wait_for_function("!['draft', 'launching'].includes(document.querySelector('#run-state').textContent)")

    page.goto(url)
    page.check(f"input.pick[value='{first}']")
    page.check(f"input.pick[value='{second}']")
    page.click("#compare")
    page.wait_for_url(f"{url}/compare?*")
    assert page.locator("#config-diff .diff-key").all_text_contents() == ["config.training.learning_rate"]
    page.screenshot(path=str(ARTIFACTS / "hf-compare.png"), full_page=True)
