"""A sweep on SkyPilot, exercised up to the SDK boundary: one managed job per cell with its own name, run id and
shipped cell, every job's environment naming the sweep's parent MLflow run (a real SQLite MLflow store), at most
`--max-parallel` jobs live at once, and a relaunch that skips finished cells and resubmits the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from launch_helpers import copy_real_recipes
from launcher import runner
from launcher.registry import Registry
from launcher.sweeps.cells import launch_sweep
from launcher import operations as ops
from spottrain_contract.job import MLFLOW_PARENT_RUN_ENV, MLFLOW_SWEEP_ID_TAG, RECIPE_ENV, RUN_ID_ENV
from spottrain_contract.recipe import from_shipped
from test_launch_skypilot_submit import SECRET_VALUES

SWEEP_RECIPE = Path(__file__).with_name("recipes") / "lr_sweep.yaml"
CELLS = ["lr_1e3__s1", "lr_1e3__s2", "lr_3e3__s1", "lr_3e3__s2"]


class SkyQueue:
    """SkyPilot's API as the sweep sees it: `jobs.launch` hands out job ids 1, 2, …; `jobs.queue` reports a job
    RUNNING for its first `polls_running` polls and then how it ended (`failing` job ids FAILED, others
    SUCCEEDED). `live_at_launch` records, at each launch, how many earlier jobs were not yet reported ended."""

    def __init__(self, polls_running: int = 2, failing: tuple[int, ...] = ()):
        self.polls_running, self.failing = polls_running, failing
        self.launched: list[tuple] = []
        self.polls: dict[int, int] = {}
        self.ended: set[int] = set()
        self.live_at_launch: list[int] = []

    def install(self, monkeypatch):
        import sky

        def launch(task, name=None, **kw):
            self.live_at_launch.append(len(self.launched) - len(self.ended))
            self.launched.append((task, name))
            return ("launch", len(self.launched))

        def queue(refresh=False, job_ids=()):
            (job_id,) = job_ids
            self.polls[job_id] = self.polls.get(job_id, 0) + 1
            if self.polls[job_id] > self.polls_running:
                self.ended.add(job_id)
                return [{"status": "FAILED" if job_id in self.failing else "SUCCEEDED"}]
            return [{"status": "RUNNING"}]

        monkeypatch.setattr(sky.jobs, "launch", launch)
        monkeypatch.setattr(sky.jobs, "queue", queue)
        monkeypatch.setattr(sky, "stream_and_get", lambda request: ([request[1]], None))
        monkeypatch.setattr(sky, "get", lambda answer: answer)
        return self


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_sqlite) -> Path:
    """The sweep's project; its MLflow store (where the sweep's parent run goes) starts with its tables made."""
    root = copy_real_recipes(tmp_path / "project", names=("baseline",))
    shutil.copy(SWEEP_RECIPE, root / "recipes")
    mlflow_sqlite(root / "mlflow.db")
    monkeypatch.chdir(root)  # SkyPilot resolves `workdir: .` against the launch directory
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    return root


def sweep_on_skypilot(project: Path, max_parallel=None, says=None):
    """`launch recipe lr_sweep` on SkyPilot (logging to a SQLite MLflow store the test reads), through the
    sweep's core as the CLI calls it; polls without sleeping."""
    ws = ops.Workspace.open(project)
    request = ops.LaunchRequest("lr_sweep", "skypilot",
                                overrides=(f"mlflow.tracking_uri=sqlite:///{project}/mlflow.db",))
    sweep = ops.prepare(ws, request).sweep
    states = launch_sweep(sweep, ws.registry, submit=lambda plan: runner.submit(ws.registry, plan) and None,
                          say=(says if says is not None else []).append, max_parallel=max_parallel, poll_seconds=0)
    return sweep, states


def test_each_cell_is_one_managed_job_named_by_its_run_id(project, monkeypatch):
    sky = SkyQueue().install(monkeypatch)
    sweep, _ = sweep_on_skypilot(project)
    assert [name for _, name in sky.launched] == [f"{sweep.sweep_id}-{cell}" for cell in CELLS]
    for (task, name), cell in zip(sky.launched, CELLS):
        assert task.name == f"baseline-mtp-{cell.replace('__', '-').replace('_', '-')}"
        assert task.envs[RUN_ID_ENV] == name
        shipped = from_shipped(task.envs[RECIPE_ENV], RECIPE_ENV)
        assert shipped.cell.name == cell
        assert shipped.recipe.train.optim.lr == (1e-3 if "1e3" in cell else 3e-3)
        assert shipped.recipe.train.seed == (1 if cell.endswith("s1") else 42)
        assert {k: v.get_secret_value() for k, v in task.secrets.items()} == SECRET_VALUES


def test_every_job_nests_under_one_parent_run_tagged_with_the_sweep_id(project, monkeypatch):
    from mlflow.tracking import MlflowClient

    sky = SkyQueue().install(monkeypatch)
    sweep, _ = sweep_on_skypilot(project)
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("weighted-mtp/production")
    (parent,) = client.search_runs([experiment.experiment_id])
    assert (parent.data.tags[MLFLOW_SWEEP_ID_TAG], parent.info.run_name) == (sweep.sweep_id, sweep.sweep_id)
    assert parent.data.params == {"sweep.lr": "lr_1e3, lr_3e3", "sweep.seed": "s1, s2"}
    assert {task.envs[MLFLOW_PARENT_RUN_ENV] for task, _ in sky.launched} == {parent.info.run_id}


def test_the_registry_records_each_cells_sweep_and_cell(project, monkeypatch):
    SkyQueue().install(monkeypatch)
    sweep, states = sweep_on_skypilot(project)
    records = Registry(project).cells_of(sweep.sweep_id)
    assert sorted((r.cell, r.run_id, r.handle["job_id"]) for r in records) == [
        (cell, f"{sweep.sweep_id}-{cell}", number) for number, cell in enumerate(CELLS, 1)]
    assert states == {cell: None for cell in CELLS}  # submitted, not followed


def test_without_max_parallel_every_cell_is_submitted_at_once(project, monkeypatch):
    sky = SkyQueue().install(monkeypatch)
    sweep_on_skypilot(project)
    assert (sky.live_at_launch, sky.polls) == ([0, 1, 2, 3], {})


def test_max_parallel_keeps_at_most_n_jobs_live_waiting_for_one_to_end(project, monkeypatch):
    sky = SkyQueue(polls_running=2).install(monkeypatch)
    says = []
    sweep_on_skypilot(project, max_parallel=2, says=says)
    assert len(sky.launched) == 4
    assert max(sky.live_at_launch) == 1  # each launch found at most one other job live: two at once
    assert "waiting for one of 2 live cells to end (--max-parallel 2)" in says


def test_a_relaunch_skips_the_finished_cells_and_resubmits_the_failed_one(project, monkeypatch):
    first = SkyQueue(polls_running=0, failing=(3,)).install(monkeypatch)  # every job has ended when asked
    sweep, _ = sweep_on_skypilot(project)
    failed = f"{sweep.sweep_id}-lr_3e3__s1"
    first.launched.clear()
    says = []
    again, _ = sweep_on_skypilot(project, says=says)
    assert again.sweep_id == sweep.sweep_id
    assert [name for _, name in first.launched] == [failed]
    assert [line for line in says if "skipped" in line] == [
        f"cell {cell}: finished, skipped (run {sweep.sweep_id}-{cell})" for cell in CELLS if cell != "lr_3e3__s1"]
    assert f"== {sweep.sweep_id}: cell lr_3e3__s1, resuming run {failed} (failed)" in says


def test_a_live_cell_is_not_launched_again(project, monkeypatch):
    sky = SkyQueue(polls_running=100).install(monkeypatch)
    sweep, _ = sweep_on_skypilot(project)
    sky.launched.clear()
    says = []
    sweep_on_skypilot(project, says=says)
    assert sky.launched == []
    assert f"cell lr_1e3__s1: live on skypilot (running), not launched again (run {sweep.sweep_id}-lr_1e3__s1)" \
        in says
