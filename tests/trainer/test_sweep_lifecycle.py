"""A 2 × 2 sweep of the baseline stage's local profile, end to end as a user drives it: four runs one after another,
one stopped early by Ctrl-C; a relaunch skips the finished cell and resumes the stopped one where it stopped; a
third launch skips them all; MLflow holds one parent run with the four cells as children; `launch compare SWEEP`
shows and writes the numbers MLflow holds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from spottrain_contract.job import MLFLOW_CELL_TAG, MLFLOW_PARENT_RUN_TAG, MLFLOW_RUN_ID_TAG, MLFLOW_SWEEP_ID_TAG
from tests.trainer.harness import LAUNCH, launch

pytestmark = pytest.mark.slow

SWEEP_RECIPE = Path(__file__).resolve().parents[1] / "launcher" / "recipes" / "lr_sweep.yaml"
CELLS = ["lr_1e3__s1", "lr_1e3__s2", "lr_3e3__s1", "lr_3e3__s2"]
STOPPED = "lr_1e3__s2"  # the second cell: Ctrl-C while it trains
STEPS = 12
OPTIONS = ("--target", "local", "--override", f"train.max_steps={STEPS}", "--override",
           "train.checkpoint.every_steps=4", "--override", f"train.eval.every_steps={STEPS}")


def cell_record(project: Path, cell: str):
    """The cell's record in the project's run database, as a dict (the state as its value); None before it."""
    from launcher.registry import Registry

    for found in Registry(project).all():
        if found.cell == cell:
            return {**asdict(found), "state": found.state.value}
    return None


def step_of(project: Path, run_id: str) -> int:
    try:
        return json.loads((project / "runs" / "local" / run_id / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep launched three times (the first interrupted in its second cell): (project, sweep id, the
    outputs of the three launches)."""
    project = tmp_path_factory.mktemp("sweep")
    shutil.copytree(Path(__file__).resolve().parents[2] / "recipes", project / "recipes")
    shutil.copy(SWEEP_RECIPE, project / "recipes")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
           "HOME": str(project)}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.Popen([LAUNCH, "recipe", "lr_sweep", *OPTIONS], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while (record := cell_record(project, STOPPED)) is None or step_of(project, record["run_id"]) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)  # Ctrl-C: the cell that runs checkpoints and stops, and so does the sweep
        interrupted, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, interrupted[-3000:]
    sweep_id = interrupted.splitlines()[0].split()[1].rstrip(":")
    relaunched = launch(project, "recipe", "lr_sweep", *OPTIONS, timeout=600)
    assert relaunched.returncode == 0, relaunched.stdout[-3000:] + relaunched.stderr[-3000:]
    again = launch(project, "recipe", "lr_sweep", *OPTIONS)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return project, sweep_id, interrupted, relaunched.stdout, again.stdout


def test_the_first_launch_ran_the_first_cell_and_stopped_in_the_second(swept):
    project, sweep_id, interrupted, _, _ = swept
    assert f"run {sweep_id}-lr_1e3__s1 finished at step {STEPS}/{STEPS}" in interrupted
    assert f"stopping {sweep_id}-{STOPPED}: the job checkpoints first" in interrupted
    assert "cell lr_3e3__s1" not in interrupted


def test_a_relaunch_skips_the_finished_cell_resumes_the_stopped_one_and_runs_the_rest(swept):
    project, sweep_id, _, relaunched, _ = swept
    log = (project / "runs" / "logs" / f"{sweep_id}-{STOPPED}.log").read_text()
    stopped_at = int(re.search(r"preemption notice: checkpointed step (\d+)", log).group(1))
    assert f"cell lr_1e3__s1: finished, skipped (run {sweep_id}-lr_1e3__s1)" in relaunched
    assert f"== {sweep_id}: cell {STOPPED}, resuming run {sweep_id}-{STOPPED} (stopped)" in relaunched
    assert f"steps {stopped_at}→{STEPS}" in relaunched
    for cell in CELLS[1:]:
        assert f"run {sweep_id}-{cell} finished at step {STEPS}/{STEPS}" in relaunched
    assert f"sweep {sweep_id}: 4 finished" in relaunched


def test_a_third_launch_skips_every_cell(swept):
    _, sweep_id, _, _, again = swept
    assert [line for line in again.splitlines() if line.startswith("cell ")] == [
        f"cell {cell}: finished, skipped (run {sweep_id}-{cell})" for cell in CELLS]
    assert "launched" not in again


def test_mlflow_holds_one_parent_with_the_four_cells_as_children(swept):
    from mlflow.tracking import MlflowClient

    project, sweep_id, _, _, _ = swept
    client = MlflowClient(f"sqlite:///{project}/runs/local/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [run for run in runs if run.data.tags.get(MLFLOW_SWEEP_ID_TAG) == sweep_id]
    assert parent.info.status == "FINISHED"
    children = [run for run in runs if run.data.tags.get(MLFLOW_PARENT_RUN_TAG) == parent.info.run_id]
    assert sorted((run.data.tags[MLFLOW_CELL_TAG], run.data.tags[MLFLOW_RUN_ID_TAG], run.info.run_name)
                  for run in children) == [(cell, f"{sweep_id}-{cell}", cell) for cell in CELLS]
    assert len(runs) == 5  # the resumed cell continued its own MLflow run


def test_launch_status_groups_the_cells_under_the_sweep(swept):
    project, sweep_id, _, _, _ = swept
    rows = [line.split() for line in launch(project, "status").stdout.splitlines()]
    assert rows[1][:5] == [sweep_id, "lr_sweep", "local", "finished", "4/4"]
    assert sorted(row[0] for row in rows[2:]) == [f"{sweep_id}-{cell}" for cell in CELLS]


def test_compare_prints_and_writes_the_final_metrics_mlflow_holds(swept):
    from mlflow.tracking import MlflowClient

    project, sweep_id, _, _, _ = swept
    done = launch(project, "compare", sweep_id)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[1].split() == ["CELL", "val/loss", "train/loss", "gpu_hours"]
    summary = json.loads((project / "runs" / "sweeps" / sweep_id / "ablation_summary.json").read_text())
    client = MlflowClient(f"sqlite:///{project}/runs/local/mlflow.db")
    for cell in summary["cells"]:
        final = client.get_run(cell["mlflow_run_id"]).data.metrics
        assert cell["metrics"] == {"val/loss": final["val/loss"], "train/loss": final["train/loss"],
                                   "gpu_hours": final["ledger/device_hours"]}
        assert client.get_run(cell["mlflow_run_id"]).data.tags[MLFLOW_CELL_TAG] == cell["cell"]
    assert [(c["cell"], c["overrides"]) for c in summary["cells"]] == [
        ("lr_1e3__s1", {"train.optim.lr": 1e-3, "train.seed": 1}), ("lr_1e3__s2", {"train.optim.lr": 1e-3}),
        ("lr_3e3__s1", {"train.optim.lr": 3e-3, "train.seed": 1}), ("lr_3e3__s2", {"train.optim.lr": 3e-3})]
    losses = [cell["metrics"]["train/loss"] for cell in summary["cells"]]
    assert len(set(losses)) == 4  # four different runs, not one run four times
