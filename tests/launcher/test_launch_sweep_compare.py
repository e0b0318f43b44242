"""`launch compare SWEEP`: its cells × final metrics read back from a real (SQLite) MLflow store, the
`ablation_summary.json` it writes, and the bars `--plot` draws."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from launch_helpers import copy_real_recipes, run_launch
from launcher.sweeps.ablation import ablation_table, ablation_view, plot_metrics
from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState
from spottrain_contract.recipe import load_recipe

SWEEP_RECIPE = Path(__file__).with_name("recipes") / "lr_sweep.yaml"
# cell -> what its run logged last (a VLM-like task's test metrics, val/loss, train/loss, the ledger's hours)
LOGGED = {
    "lr_1e3__s1": {"test/exact_match": 0.25, "test/bleu4": 0.125, "val/loss": 2.5, "train/loss": 2.0,
                   "ledger/device_hours": 1.5},
    "lr_1e3__s2": {"test/exact_match": 0.5, "test/bleu4": 0.25, "val/loss": 2.25, "train/loss": 1.75,
                   "ledger/device_hours": 2.0},
    "lr_3e3__s1": {"test/exact_match": 0.75, "val/loss": 2.0, "train/loss": 1.5, "ledger/device_hours": 2.5},
    "lr_3e3__s2": None,  # launched, nothing logged yet
}


# cell -> the price of one node an hour its recipe says (resources.price_per_hour; 2 GPUs a node in the local
# profile): lr_1e3__s2 has none, so its dollars are unknown; lr_3e3__s2 logged no GPU-hours to price
PRICES = {"lr_1e3__s1": 3.2, "lr_3e3__s1": 3.2, "lr_3e3__s2": 3.2}


def make_sweep(tmp_path: Path, mlflow_sqlite, prices: dict[str, float]) -> tuple[Path, str]:
    from mlflow.tracking import MlflowClient

    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    shutil.copy(SWEEP_RECIPE, project / "recipes")
    uri = mlflow_sqlite(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("weighted-mtp/production")
    registry = Registry(project)
    for cell, logged in LOGGED.items():
        run_id = f"abl-{cell}"
        priced = [f"resources.price_per_hour={prices[cell]}"] if cell in prices else []
        shipped = load_recipe("lr_sweep", project_dir=project, profile="local", overrides=priced,
                              cell=cell).shipped()
        registry.save(RunRecord(run_id=run_id, recipe="lr_sweep", target="local", state=RunState.FINISHED,
                                started=time.time(), store="s", local_dir=str(tmp_path), tracking_uri=uri,
                                project=str(project), recipe_document=shipped, sweep_id="abl", cell=cell))
        if logged is None:
            continue
        run = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: run_id}).info.run_id
        client.log_metric(run, "train/loss", 9.0, step=1)
        client.log_metric(run, "system/cpu_utilization_percentage", 50.0, step=0)
        client.log_metric(run, "perf/step_seconds", 0.1, step=1)
        for key, value in logged.items():
            client.log_metric(run, key, value, step=10)
    return project, "abl"


@pytest.fixture
def sweep(tmp_path, mlflow_sqlite) -> tuple[Path, str]:
    """A project whose registry holds the cells of sweep `abl` of the example recipe, their MLflow runs in a
    SQLite store (earlier train/loss values too, and metrics compare leaves out); no cell's recipe has a price."""
    return make_sweep(tmp_path, mlflow_sqlite, {})


@pytest.fixture
def priced_sweep(tmp_path, mlflow_sqlite) -> tuple[Path, str]:
    """The same sweep, its cells' recipes priced as PRICES says."""
    return make_sweep(tmp_path, mlflow_sqlite, PRICES)


def test_the_columns_are_the_evaluation_metrics_then_train_loss_then_gpu_hours(sweep):
    project, sweep_id = sweep
    view = ablation_view(Registry(project), sweep_id)
    assert view.metrics == ["test/bleu4", "test/exact_match", "val/loss", "train/loss", "gpu_hours"]


def test_each_cell_has_its_final_values_and_none_where_nothing_was_logged(sweep):
    project, sweep_id = sweep
    view = ablation_view(Registry(project), sweep_id)
    assert [cell.cell for cell in view.cells] == list(LOGGED)
    for cell in view.cells:
        logged = LOGGED[cell.cell] or {}
        assert cell.metrics == {"test/bleu4": logged.get("test/bleu4"), "test/exact_match": logged.get(
            "test/exact_match"), "val/loss": logged.get("val/loss"), "train/loss": logged.get("train/loss"),
                                "gpu_hours": logged.get("ledger/device_hours")}
        assert (cell.mlflow_run_id is None) == (LOGGED[cell.cell] is None)


def test_each_cell_carries_its_entries_and_overrides(sweep):
    project, sweep_id = sweep
    cell = ablation_view(Registry(project), sweep_id).cells[2]
    assert (cell.cell, cell.run_id) == ("lr_3e3__s1", "abl-lr_3e3__s1")
    assert (cell.entries, cell.overrides) == ({"lr": "lr_3e3", "seed": "s1"},
                                              {"train.optim.lr": 3e-3, "train.seed": 1})


def test_metric_names_the_columns_instead_of_the_evaluation_metrics(sweep):
    project, sweep_id = sweep
    view = ablation_view(Registry(project), sweep_id, ["test/exact_match"])
    assert view.metrics == ["test/exact_match", "train/loss", "gpu_hours"]


def test_the_table_is_cells_by_metrics(sweep):
    project, sweep_id = sweep
    rows = [line.split() for line in ablation_table(ablation_view(Registry(project), sweep_id)).splitlines()]
    assert rows == [["CELL", "test/bleu4", "test/exact_match", "val/loss", "train/loss", "gpu_hours"],
                    ["lr_1e3__s1", "0.125", "0.25", "2.5", "2", "1.5"],
                    ["lr_1e3__s2", "0.25", "0.5", "2.25", "1.75", "2"],
                    ["lr_3e3__s1", "-", "0.75", "2", "1.5", "2.5"],
                    ["lr_3e3__s2", "-", "-", "-", "-", "-"]]


def test_the_plot_draws_a_chart_per_metric(sweep, tmp_path):
    project, sweep_id = sweep
    written = plot_metrics(ablation_view(Registry(project), sweep_id), tmp_path / "ablation")
    assert written == tmp_path / "ablation.png" and written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_sweep_names_the_known_ones(sweep):
    project, _ = sweep
    with pytest.raises(LaunchError, match=r"^no sweep 'abx' launched from this project \(sweeps: abl\)$"):
        ablation_view(Registry(project), "abx")


def test_launch_compare_sweep_prints_the_table_and_writes_the_summary(sweep, private_home):
    project, sweep_id = sweep
    done = run_launch("compare", sweep_id, "--plot", "bars.png", home=private_home, cwd=project)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sweep abl: 4 cells"
    assert lines[-2:] == ["wrote runs/sweeps/abl/ablation_summary.json",
                          "wrote bars.png (test/bleu4, test/exact_match, val/loss, train/loss, gpu_hours)"]
    summary = json.loads((project / "runs" / "sweeps" / "abl" / "ablation_summary.json").read_text())
    assert summary == json.loads(ablation_view(Registry(project), sweep_id).model_dump_json())
    assert (project / "bars.png").is_file()


def test_the_summary_goes_under_runs_so_the_project_stays_clean(sweep, private_home):
    """Not into the project root, where every later launch would report `+ uncommitted changes`: under runs/,
    which the project's .gitignore leaves out, from any directory of the project."""
    project, sweep_id = sweep
    (project / "notebooks").mkdir()
    done = run_launch("compare", sweep_id, home=private_home, cwd=project / "notebooks")
    assert done.returncode == 0, done.stderr
    summary = project / "runs" / "sweeps" / "abl" / "ablation_summary.json"
    assert done.stdout.splitlines()[-1] == f"wrote {summary}"
    assert summary.is_file() and not (project / "ablation_summary.json").exists()
    assert not (project / "notebooks" / "ablation_summary.json").exists()


def test_launch_compare_sweep_out_names_where_the_summary_goes(sweep, private_home, tmp_path):
    project, sweep_id = sweep
    done = run_launch("compare", sweep_id, "--out", str(tmp_path), "--json", home=private_home, cwd=project)
    assert json.loads(done.stdout) == json.loads((tmp_path / "ablation_summary.json").read_text())


def test_launch_compare_of_one_run_says_to_name_two(sweep, private_home):
    project, _ = sweep
    done = run_launch("compare", "abl-lr_1e3__s1", home=private_home, cwd=project)
    assert (done.returncode, done.stderr.splitlines()) == (
        2, ["error: compare: abl-lr_1e3__s1 is a run, not a sweep: name two runs (launch compare RUN_A RUN_B)"])


def test_the_table_shows_readable_numbers(sweep):
    project, sweep_id = sweep
    view = ablation_view(Registry(project), sweep_id)
    view.cells[0].metrics.update({"test/bleu4": 0.123456789, "gpu_hours": 12345.678})
    row = ablation_table(view).splitlines()[1].split()
    assert row[:2] == ["lr_1e3__s1", "0.1235"] and row[-1] == "12,346"


def test_the_hub_compare_sweep_page_and_api_give_the_clis_view(sweep):
    """The Runs page's "compare sweep" link opens the cells × metrics `launch compare SWEEP` prints; the hub writes
    no summary."""
    import re

    from hub_helpers import client_for

    project, sweep_id = sweep
    with client_for(project) as client:
        api = client.get(f"/api/compare-sweep/{sweep_id}")
        html = client.get(f"/compare-sweep/{sweep_id}").text
        chosen = client.get(f"/api/compare-sweep/{sweep_id}", params={"metric": ["val/loss"]}).json()
        missing = client.get("/compare-sweep/abx")
        a_run = client.get("/api/compare-sweep/abl-lr_1e3__s1")
    assert api.status_code == 200
    assert api.json() == json.loads(ablation_view(Registry(project), sweep_id).model_dump_json())
    assert chosen["metrics"] == ["val/loss", "train/loss", "gpu_hours"]
    table = html[html.index('id="sweep-cells"'):]
    heads = re.findall(r'<th class="mono">([^<]*)</th>', table)
    assert heads == ["test/bleu4", "test/exact_match", "val/loss", "train/loss", "gpu_hours"]
    rows = re.findall(r'<tr data-id="([^"]*)"><td><a href="/runs/[^"]*">([^<]*)</a></td>((?:<td>[^<]*</td>)*)</tr>',
                      table)
    assert [(run_id, cell, re.findall(r"<td>([^<]*)</td>", values)) for run_id, cell, values in rows] == [
        ("abl-lr_1e3__s1", "lr_1e3__s1", ["0.125", "0.25", "2.5", "2", "1.5"]),
        ("abl-lr_1e3__s2", "lr_1e3__s2", ["0.25", "0.5", "2.25", "1.75", "2"]),
        ("abl-lr_3e3__s1", "lr_3e3__s1", ["-", "0.75", "2", "1.5", "2.5"]),
        ("abl-lr_3e3__s2", "lr_3e3__s2", ["-", "-", "-", "-", "-"])]
    assert missing.status_code == 400 and "no sweep &#39;abx&#39; launched from this project" in missing.text
    assert a_run.status_code == 400 and a_run.json()["error"].startswith("compare: abl-lr_1e3__s1 is a run")
    assert not list(project.rglob("ablation_summary.json"))


# --- dollars ----------------------------------------------------------------------------------------------------


def test_dollars_are_each_cells_gpu_hours_at_its_price_beside_them(priced_sweep):
    project, sweep_id = priced_sweep
    view = ablation_view(Registry(project), sweep_id)
    assert view.metrics[-2:] == ["gpu_hours", "dollars"]
    dollars = {cell.cell: cell.metrics["dollars"] for cell in view.cells}
    assert dollars == {"lr_1e3__s1": pytest.approx(1.5 * 3.2 / 2), "lr_1e3__s2": None,  # no price: unknown, not 0
                       "lr_3e3__s1": pytest.approx(2.5 * 3.2 / 2), "lr_3e3__s2": None}  # no GPU-hours logged


def test_a_sweep_no_price_covers_has_no_dollars_column(sweep):
    project, sweep_id = sweep
    view = ablation_view(Registry(project), sweep_id)
    assert "dollars" not in view.metrics and all("dollars" not in cell.metrics for cell in view.cells)


def test_the_table_prints_dollars_after_gpu_hours_and_a_dash_where_unknown(priced_sweep):
    project, sweep_id = priced_sweep
    rows = [line.split() for line in ablation_table(ablation_view(Registry(project), sweep_id)).splitlines()]
    assert [row[-2:] for row in rows] == [["gpu_hours", "dollars"], ["1.5", "2.4"], ["2", "-"], ["2.5", "4"],
                                          ["-", "-"]]


def test_the_hub_compare_sweep_page_shows_dollars_beside_gpu_hours(priced_sweep):
    import re

    from hub_helpers import client_for

    project, sweep_id = priced_sweep
    with client_for(project) as client:
        html = client.get(f"/compare-sweep/{sweep_id}").text
        api = client.get(f"/api/compare-sweep/{sweep_id}").json()
    table = html[html.index('id="sweep-cells"'):]
    assert re.findall(r'<th class="mono">([^<]*)</th>', table)[-2:] == ["gpu_hours", "dollars"]
    values = [re.findall(r"<td>([^<]*)</td>", row)[-2:] for row in re.findall(r"<tr data-id=.*?</tr>", table)]
    assert values == [["1.5", "2.4"], ["2", "-"], ["2.5", "4"], ["-", "-"]]
    assert "-: no price known" in html
    assert [cell["metrics"]["dollars"] for cell in api["cells"]] == [pytest.approx(2.4), None, pytest.approx(4.0),
                                                                       None]
