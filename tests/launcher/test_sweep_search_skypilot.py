"""An ASHA sweep on SkyPilot, up to the SDK boundary: the controller launches one managed job per cell (at most
`max_parallel` live), reads each cell's metric from its MLflow run (a real SQLite store, written here as the
nodes would log), prunes the clearly losing cells at the first rung by cancelling their jobs through the target,
never launches a pruned cell again, and leaves a recovering cell that is behind alone. Optuna's study and the
controller's decisions live in the run database, SQLite and PostgreSQL alike."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from launch_helpers import copy_real_recipes
from launcher import operations as ops
from launcher.sweeps.book import SweepBook, SweepState, Verdict
from launcher.sweeps.controller import Controller
from spottrain_contract.job import MLFLOW_PARENT_RUN_ENV, MLFLOW_RUN_ID_TAG, RunState
from test_launch_skypilot_submit import SECRET_VALUES

RECIPE = Path(__file__).with_name("recipes") / "lr_asha.yaml"
FULL = 40  # train.max_steps: rungs at 4, 12, 36
BEST_LR = 3e-3


def loss_at(lr: float, step: int) -> float:
    """A loss curve whose ordering by learning rate is clear from the first rung: best at BEST_LR."""
    return 2.0 + abs(math.log10(lr / BEST_LR)) + 3.0 / (1 + step)


class SkyJobs:
    """SkyPilot's managed jobs as the controller sees them: `jobs.launch` hands out ids 1, 2, …, `jobs.queue`
    reports what the test set (RUNNING unless told), `jobs.cancel` records the cancel and makes the job
    CANCELLED, as a graceful cancel ends."""

    def __init__(self):
        self.launched: list[tuple] = []  # (job name, task)
        self.status: dict[int, str] = {}
        self.cancelled: list[tuple[int, dict]] = []

    def install(self, monkeypatch):
        import sky

        def launch(task, name=None, **kw):
            self.launched.append((name, task))
            self.status[len(self.launched)] = "RUNNING"
            return ("launch", len(self.launched))

        def queue(refresh=False, job_ids=()):
            return [{"status": self.status[job_id]} for job_id in job_ids]

        def cancel(job_ids=(), **kw):
            for job_id in job_ids:
                self.cancelled.append((job_id, kw))
                self.status[job_id] = "CANCELLED"
            return ("cancel", None)

        monkeypatch.setattr(sky.jobs, "launch", launch)
        monkeypatch.setattr(sky.jobs, "queue", queue)
        monkeypatch.setattr(sky.jobs, "cancel", cancel)
        monkeypatch.setattr(sky, "stream_and_get", lambda request: ([request[1]], None))
        monkeypatch.setattr(sky, "get", lambda answer: answer)
        return self

    def job_of(self, run_id: str) -> int:
        return next(number for number, (name, _) in enumerate(self.launched, 1) if name == run_id)


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_sqlite, db_url) -> Path:
    root = copy_real_recipes(tmp_path / "project", names=("baseline",))
    shutil.copy(RECIPE, root / "recipes")
    mlflow_sqlite(root / "mlflow.db")
    monkeypatch.chdir(root)
    monkeypatch.setenv("SPOTTRAIN_DB", db_url)
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    return root


class Nodes:
    """What the cells' nodes log: each cell's MLflow run, tagged with its run id, and its metric at steps."""

    def __init__(self, project: Path, steps_per_epoch: int = 0):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(f"sqlite:///{project}/mlflow.db")
        self.runs: dict[str, str] = {}
        self.steps_per_epoch = steps_per_epoch  # also log train/epoch, as the trainer does

    def log(self, run_id: str, lr: float, *steps: int) -> None:
        if run_id not in self.runs:
            experiment = self.client.get_experiment_by_name("weighted-mtp/production")
            self.runs[run_id] = self.client.create_run(experiment.experiment_id,
                                                       tags={MLFLOW_RUN_ID_TAG: run_id}).info.run_id
        for step in steps:
            self.client.log_metric(self.runs[run_id], "val/loss", loss_at(lr, step), step=step)
            if self.steps_per_epoch:
                self.client.log_metric(self.runs[run_id], "train/epoch", step / self.steps_per_epoch, step=step)


def start(project: Path, max_parallel: int = 4) -> tuple[ops.Workspace, str, list[str]]:
    ws = ops.Workspace.open(project)
    request = ops.LaunchRequest("lr_asha", "skypilot", overrides=(
        f"mlflow.tracking_uri=sqlite:///{project}/mlflow.db", f"train.max_steps={FULL}",
        f"search.max_parallel={max_parallel}"))
    planned = ops.prepare(ws, request)
    assert planned.controlled and ops.record_search(ws, planned) is False
    said: list[str] = []
    return ws, planned.sweep.sweep_id, said


def lr_of(ws, run_id: str) -> float:
    from spottrain_contract.recipe import from_shipped

    return from_shipped(ws.registry.get(run_id).recipe_document, run_id).recipe.train.optim.lr


def drive(ws, sweep_id, sky: SkyJobs, nodes: Nodes, said: list[str], *, recovering: tuple[str, ...] = (),
          full: int = FULL):
    """Pass after pass as the nodes would train: each live cell logs its next evaluation (every 4 steps), a cell
    that reaches the full budget succeeds; `recovering` cells are RECOVERING and log nothing."""
    controller = Controller(ws, sweep_id, poll_seconds=0, say=said.append)
    controller.book.claim(sweep_id)
    reached: dict[str, int] = {}
    for _ in range(200):
        if controller.pass_once() is SweepState.FINISHED:
            return controller
        controller.wait_for_stops()  # those this pass handed over, done before the nodes train on
        for record in ws.registry.cells_of(sweep_id):
            job = sky.job_of(record.run_id)
            if sky.status[job] != "RUNNING" and sky.status[job] != "RECOVERING":
                continue
            if record.cell in recovering:
                sky.status[job] = "RECOVERING"
                continue
            step = reached.get(record.run_id, 0) + 4
            reached[record.run_id] = step
            nodes.log(record.run_id, lr_of(ws, record.run_id), step)
            if step >= full:
                sky.status[job] = "SUCCEEDED"
    raise AssertionError("the sweep did not finish in 200 passes:\n" + "\n".join(said))


def test_the_clearly_losing_cells_are_cancelled_at_the_first_rung_and_never_launched_again(project, monkeypatch):
    sky = SkyJobs().install(monkeypatch)
    nodes = Nodes(project)
    ws, sweep_id, said = start(project)
    drive(ws, sweep_id, sky, nodes, said)
    records = {r.cell: r for r in ws.registry.cells_of(sweep_id)}
    decisions = SweepBook(ws.registry).decisions(sweep_id)
    pruned = {d.cell for d in decisions if d.verdict is Verdict.PRUNED}

    assert len(sky.launched) == 8 and len({name for name, _ in sky.launched}) == 8  # no cell launched twice
    assert sorted(job for job, _ in sky.cancelled) == sorted(sky.job_of(records[c].run_id) for c in pruned)
    assert all(kw.get("graceful") is True for _, kw in sky.cancelled)  # a checkpoint first
    assert {cell for cell, r in records.items() if r.state is RunState.PRUNED} == pruned
    assert {"lr_1e5", "lr_3e5", "lr_1e1"} <= {d.cell for d in decisions if d.verdict is Verdict.PRUNED and d.rung == 0}
    assert records["lr_3e3"].state is RunState.FINISHED  # the best cell trains to the end
    assert len(decisions) == len({(d.cell, d.rung) for d in decisions})  # one decision per cell and rung
    assert all(d.acted is not None for d in decisions if d.verdict is Verdict.PRUNED)
    from launcher import runner

    for cell in pruned:  # SkyPilot says CANCELLED; the run stays pruned
        assert sky.status[sky.job_of(records[cell].run_id)] == "CANCELLED"
        assert runner.refresh(ws.registry, records[cell]).state is RunState.PRUNED
    tasks = [task for _, task in sky.launched]
    assert len({task.envs[MLFLOW_PARENT_RUN_ENV] for task in tasks}) == 1  # every cell under the sweep's parent
    assert SweepBook(ws.registry).get(sweep_id).state is SweepState.FINISHED


def test_a_controller_that_died_after_deciding_is_replaced_by_one_that_acts_and_decides_nothing_again(
        project, monkeypatch):
    """The first controller decides rung 0 for the first four cells and dies before handing any stop over; the
    next one finds the prunings in the study, cancels those jobs once, and writes no decision twice."""
    sky = SkyJobs().install(monkeypatch)
    nodes = Nodes(project)
    ws, sweep_id, said = start(project)
    first = Controller(ws, sweep_id, poll_seconds=0, say=said.append)
    first.book.claim(sweep_id)
    first.pass_once()
    for record in ws.registry.cells_of(sweep_id):
        nodes.log(record.run_id, lr_of(ws, record.run_id), 4)
    monkeypatch.setattr(first, "_carry_out_pruning", lambda cell, record: None)  # it dies before acting
    first.pass_once()
    decided = SweepBook(ws.registry).decisions(sweep_id)
    assert decided and sky.cancelled == []
    pruned = {d.cell for d in decided if d.verdict is Verdict.PRUNED}

    second = drive(ws, sweep_id, sky, nodes, said)
    decisions = SweepBook(ws.registry).decisions(sweep_id)
    kept = [(d.cell, d.rung, d.verdict, d.decided) for d in decisions[:len(decided)]]
    assert kept == [(d.cell, d.rung, d.verdict, d.decided) for d in decided]  # the first one's stand
    assert all(d.acted is not None for d in decisions if d.verdict is Verdict.PRUNED)  # acted on by the second
    assert len(decisions) == len({(d.cell, d.rung) for d in decisions})
    records = {r.cell: r for r in ws.registry.cells_of(sweep_id)}
    assert all(records[cell].state is RunState.PRUNED for cell in pruned)
    cancelled = [job for job, _ in sky.cancelled]
    assert len(cancelled) == len(set(cancelled)) and len(sky.launched) == 8
    assert second.book.get(sweep_id).state is SweepState.FINISHED


def test_a_recovering_cell_that_is_behind_is_pending_not_pruned(project, monkeypatch):
    """lr_1e5 is the worst cell: while its job recovers it reports nothing new and is not judged, though every
    other cell has passed the first rung; once back, its first evaluation prunes it."""
    sky = SkyJobs().install(monkeypatch)
    ws, sweep_id, said = start(project, max_parallel=8)
    controller = Controller(ws, sweep_id, poll_seconds=0, say=said.append)
    controller.book.claim(sweep_id)
    nodes = Nodes(project)
    controller.pass_once()  # all eight launch
    behind = {r.cell: r for r in ws.registry.cells_of(sweep_id)}["lr_1e5"]
    sky.status[sky.job_of(behind.run_id)] = "RECOVERING"
    for record in ws.registry.cells_of(sweep_id):
        if record.cell != "lr_1e5":
            nodes.log(record.run_id, lr_of(ws, record.run_id), 4, 8)
    controller.pass_once()
    controller.wait_for_stops()
    assert ws.registry.get(behind.run_id).state is RunState.RESTARTING
    assert [d for d in SweepBook(ws.registry).decisions(sweep_id) if d.cell == "lr_1e5"] == []
    assert sky.job_of(behind.run_id) not in [job for job, _ in sky.cancelled]

    sky.status[sky.job_of(behind.run_id)] = "RUNNING"
    nodes.log(behind.run_id, 1e-5, 4)
    controller.pass_once()
    controller.wait_for_stops()
    (decision,) = [d for d in SweepBook(ws.registry).decisions(sweep_id) if d.cell == "lr_1e5"]
    assert (decision.rung, decision.verdict) == (0, Verdict.PRUNED)
    assert sky.job_of(behind.run_id) in [job for job, _ in sky.cancelled]


def test_the_hub_adopts_a_sweep_whose_controller_is_gone_and_leaves_it_when_it_stops(project, monkeypatch):
    import os
    import threading
    import time

    sky = SkyJobs().install(monkeypatch)
    ws, sweep_id, _ = start(project)
    stop = threading.Event()
    (thread,) = ops.adopt_orphans(ws, stop)
    deadline = time.monotonic() + 60
    while len(sky.launched) < 4 and time.monotonic() < deadline:
        thread.join(0.1)
    holder = SweepBook(ws.registry).get(sweep_id).controller
    assert len(sky.launched) == 4 and holder.endswith(f":{os.getpid()}")  # held by the hub
    assert ops.adopt_orphans(ws, stop) == []  # held: not adopted twice
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and SweepBook(ws.registry).get(sweep_id).controller is None
    log = (project / "runs" / "sweeps" / sweep_id / "controller.log").read_text()
    assert "[controller] cell " in log and "(in the hub)" in log


def test_drawn_trials_launch_what_the_sampler_drew_and_a_pruned_one_makes_room_for_the_next(project, monkeypatch):
    """`trials: 6` over the lr axis and a weight-decay space: six cells trial-000…005, each trained with the
    entry and value its Optuna trial holds; a pruned trial's slot goes to the next draw, up to six."""
    import optuna

    from spottrain_contract.recipe import from_shipped

    sky = SkyJobs().install(monkeypatch)
    nodes = Nodes(project)
    ws = ops.Workspace.open(project)
    request = ops.LaunchRequest("lr_asha", "skypilot", overrides=(
        f"mlflow.tracking_uri=sqlite:///{project}/mlflow.db", f"train.max_steps={FULL}", "search.max_parallel=2",
        "search.trials=6", "search.space={train.optim.weight_decay: {uniform: [0.0, 0.1]}}"))
    planned = ops.prepare(ws, request)
    ops.record_search(ws, planned)
    sweep_id = planned.sweep.sweep_id
    drive(ws, sweep_id, sky, nodes, [])

    assert [name for name, _ in sky.launched] == [f"{sweep_id}-trial-{n:03d}" for n in range(6)]
    study = optuna.load_study(study_name=sweep_id, storage=ws.registry.database_url)
    for trial in study.get_trials():
        (task,) = [task for name, task in sky.launched if name.endswith(trial.user_attrs["spottrain.cell"])]
        shipped = from_shipped(task.envs["SPOTTRAIN_RECIPE"], "SPOTTRAIN_RECIPE").recipe
        assert shipped.train.optim.weight_decay == trial.params["train.optim.weight_decay"]
        assert 0.0 <= shipped.train.optim.weight_decay <= 0.1
        assert shipped.train.optim.lr == {"lr_1e5": 1e-5, "lr_3e5": 3e-5, "lr_1e4": 1e-4, "lr_3e4": 3e-4,
                                          "lr_1e3": 1e-3, "lr_3e3": 3e-3, "lr_1e2": 1e-2,
                                          "lr_1e1": 1e-1}[trial.params["lr"]]
    states = {trial.state.name for trial in study.get_trials()}
    assert states <= {"COMPLETE", "PRUNED"} and len(study.get_trials()) == 6


def test_a_budget_in_epochs_is_judged_in_epochs_from_the_cells_own_train_epoch(project, monkeypatch):
    """budget train.epochs = 5 at 8 steps an epoch, first rung half an epoch: the cells are judged at step 4 (half
    an epoch by their train/epoch metric), and the decisions are in epochs."""
    sky = SkyJobs().install(monkeypatch)
    nodes = Nodes(project, steps_per_epoch=8)
    ws = ops.Workspace.open(project)
    request = ops.LaunchRequest("lr_asha", "skypilot", overrides=(
        f"mlflow.tracking_uri=sqlite:///{project}/mlflow.db", "train.epochs=5", "search.budget=train.epochs",
        "search.min_budget=0.5", "search.max_parallel=4"))
    planned = ops.prepare(ws, request)
    ops.record_search(ws, planned)
    sweep_id = planned.sweep.sweep_id
    drive(ws, sweep_id, sky, nodes, [], full=40)
    decisions = SweepBook(ws.registry).decisions(sweep_id)
    assert {d.budget for d in decisions} <= {0.5, 1.5, 4.5} and {d.rung for d in decisions if d.budget == 0.5} == {0}
    cells = {r.cell: r for r in ws.registry.cells_of(sweep_id)}
    for decision in decisions:
        judged_at = int(decision.budget * 8)  # the first evaluation at the rung: every 4 steps
        assert decision.value == loss_at(lr_of(ws, cells[decision.cell].run_id), judged_at)
    assert "lr_1e5" in {d.cell for d in decisions if d.verdict is Verdict.PRUNED and d.budget == 0.5}
    report = ops.search_report(ws, sweep_id)
    best = next(cell for cell in report.cells if cell.cell == "lr_3e3")
    assert best.points[0][0] == 0.5 and best.points[-1][0] == 5.0  # [epoch, metric]
