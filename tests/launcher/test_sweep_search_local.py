"""An ASHA sweep of the micro model here, end to end as a user drives it, on each run database (SQLite and
PostgreSQL): eight learning rates over four orders of magnitude, at most two cells at once, one rank each.

`launch recipe lr_asha --target local` returns at once; the detached controller prunes the clearly losing cells at
the first rung and finishes the sweep having computed under half the full grid's steps. The pruned cells, resumed
from the checkpoints their stop kept, train to the end: the grid's best cell is the sweep's best.

On PostgreSQL every cell is also killed once by chaos mid-training, and the controller itself is SIGKILLed after
its first decision and started again with `launch sweep resume`: no rung is decided twice, no cell is lost, and
every cell was judged with exactly the values the undisturbed SQLite sweep's cell logged (bitwise resume)."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from launch_helpers import copy_real_recipes, launch_env, launch_executable

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).with_name("recipes") / "lr_asha.yaml"
FULL = 60  # train.max_steps; evaluations every 3 steps, rungs at 3, 9, 27
OPTIONS = ("--target", "local", "--gpus", "1", "--override", f"train.max_steps={FULL}", "--override",
           "train.epochs=20", "--override", "train.eval.every_steps=3", "--override",
           "train.checkpoint.every_steps=3", "--override", "search.min_budget=3")
CHAOS = "kills=1,signals=KILL+TERM,every=0.3:1.5,seed=3"
# lr_1e1 loses clearly too, but it starts beside the first cell (the recipe's seed) and may reach the first rung
# before it, when there is nothing to prune it for: the others start once a rung has values.
CLEARLY_LOSING = {"lr_1e5", "lr_3e5", "lr_1e4"}
SWEEP_MINUTES = 12


class Sweep:
    def __init__(self, project: Path, env: dict):
        self.project, self.env = project, env
        self.sweep_id = ""

    def launch(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([launch_executable(), *args], cwd=self.project, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def book(self):
        from launcher.registry import Registry
        from launcher.sweeps.book import SweepBook

        return SweepBook(Registry(self.project, url=self.env.get("SPOTTRAIN_DB")))

    def record(self):
        return self.book().get(self.sweep_id)

    def cells(self) -> dict:
        return {r.cell: r for r in self.book().registry.cells_of(self.sweep_id)}

    def controller_log(self) -> str:
        path = self.project / "runs" / "sweeps" / self.sweep_id / "controller.log"
        return path.read_text() if path.is_file() else ""

    def wait(self, until, what: str, minutes: float = SWEEP_MINUTES):
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            found = until()
            if found:
                return found
            time.sleep(1)
        raise AssertionError(f"{what} not within {minutes} min:\n{self.controller_log()[-4000:]}")

    def finished(self) -> bool:
        from launcher.sweeps.book import SweepState

        return self.record().state is SweepState.FINISHED


def metric_points(project: Path, record) -> dict[int, float]:
    from launcher.mlflow_runs import first_points, mlflow_run

    client, run = mlflow_run(record)
    return {step: value for step, value, _ in first_points(client, run.info.run_id, "val/loss")}


def sweep_on(project: Path, db_url: Optional[str], *, disturbed: bool) -> Sweep:
    """`launch recipe lr_asha` in `project` (its run database `db_url`, else the project's SQLite file) until the
    sweep ends; `disturbed`: chaos on every cell, and the controller SIGKILLed after its first decision and
    resumed with `launch sweep resume`."""
    shutil.copy(RECIPE, project / "recipes")
    # two one-rank cells at once on two cores: one thread each (torchrun sets this only for several ranks; two
    # processes spinning two OpenMP threads each on two cores train ten times slower)
    env = {**launch_env(project), "MLFLOW_DISABLE_TELEMETRY": "true", "SPOTTRAIN_SWEEP_POLL_SECONDS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if db_url:
        env["SPOTTRAIN_DB"] = db_url
    sweep = Sweep(project, env)
    sweep.disturbed = disturbed
    started = time.monotonic()
    done = sweep.launch("recipe", "lr_asha", *OPTIONS, *(("--chaos", CHAOS) if disturbed else ()))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep.returned_after = time.monotonic() - started
    sweep.launched = done.stdout
    sweep.sweep_id = next(line.split()[1].rstrip(":") for line in done.stdout.splitlines()
                          if line.startswith("sweep "))
    if disturbed:
        sweep.wait(lambda: sweep.book().decisions(sweep.sweep_id), "a first decision")
        holder = sweep.record().controller
        os.kill(int(holder.rsplit(":", 1)[1]), signal.SIGKILL)
        sweep.status_after_kill = sweep.wait(lambda: (lambda s: s if "no controller" in s else None)(
            sweep.launch("sweep", "status", sweep.sweep_id).stdout), "the dead controller seen", minutes=1)
        resumed = sweep.launch("sweep", "resume", sweep.sweep_id)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    sweep.wait(sweep.finished, "the sweep's end")
    return sweep


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> Sweep:
    """The sweep on the project's SQLite run database, nothing in its way."""
    return sweep_on(copy_real_recipes(tmp_path_factory.mktemp("asha-sqlite"), names=("baseline",)), None,
                    disturbed=False)


@pytest.fixture(scope="module")
def disturbed(tmp_path_factory, postgres_admin_url) -> Sweep:
    """The sweep on PostgreSQL, every cell killed once by chaos and its controller killed and resumed."""
    from postgres import fresh_database

    return sweep_on(copy_real_recipes(tmp_path_factory.mktemp("asha-postgresql"), names=("baseline",)),
                    fresh_database(postgres_admin_url), disturbed=True)


@pytest.fixture(params=["undisturbed", "disturbed"])
def swept(request) -> Sweep:
    return request.getfixturevalue(request.param)


def test_the_launch_returns_at_once_leaving_a_detached_controller(swept):
    assert swept.returned_after < 60
    assert f"sweep {swept.sweep_id}: controller pid " in swept.launched
    assert f"launch sweep status {swept.sweep_id}" in swept.launched


def test_the_clearly_losing_cells_are_pruned_at_the_first_rung_and_every_cell_ends(swept):
    from launcher.sweeps.book import Verdict
    from spottrain_contract.job import RunState

    cells = swept.cells()
    decisions = swept.book().decisions(swept.sweep_id)
    pruned_first = {d.cell for d in decisions if d.verdict is Verdict.PRUNED and d.rung == 0}
    assert CLEARLY_LOSING <= pruned_first, (decisions, swept.controller_log())
    assert len(cells) == 8 and {r.state for r in cells.values()} <= {RunState.FINISHED, RunState.PRUNED}
    assert {cell for cell, r in cells.items() if r.state is RunState.PRUNED} == {
        d.cell for d in decisions if d.verdict is Verdict.PRUNED}
    assert len(decisions) == len({(d.cell, d.rung) for d in decisions})  # no rung decided twice


def test_the_sweep_computes_under_half_the_full_grid_and_keeps_the_pruned_cells_hours(swept):
    from launcher.run_store import run_store
    from launcher.views.ledger import record_ledger
    from spottrain_contract.job import RunState

    ledgers = {cell: record_ledger(run_store(r), r) for cell, r in swept.cells().items()}
    computed = sum(ledger.computed for ledger in ledgers.values())
    assert computed < 8 * FULL / 2, {cell: ledger.computed for cell, ledger in ledgers.items()}
    for cell, record in swept.cells().items():
        if record.state is RunState.PRUNED:
            last = ledgers[cell].attempts[-1]
            assert ledgers[cell].device_hours > 0
            # under chaos the stop may come between a kill and the restart (or reach the restart before its
            # trainer writes an entry): the last entry is then the killed attempt, which the ended run's ledger
            # calls killed, not running
            assert last.cause == "stopped" or (swept.disturbed and last.cause == "killed"), last
    status = swept.launch("sweep", "status", swept.sweep_id, "--json")
    report = json.loads(status.stdout)
    assert report["steps_computed"] == computed and report["steps_full_grid"] == 8 * FULL


def test_the_controller_killed_mid_sweep_is_resumed_without_a_second_decision(disturbed):
    swept = disturbed
    assert "no controller (launch sweep resume starts one)" in swept.status_after_kill
    import optuna

    from launcher.sweeps.study import completed_rungs

    trials = optuna.load_study(study_name=swept.sweep_id, storage=swept.env["SPOTTRAIN_DB"].replace(
        "postgresql://", "postgresql+psycopg://")).get_trials()
    assert len(trials) == 8 and len({t.user_attrs["spottrain.cell"] for t in trials}) == 8  # no cell twice
    decided = {(d.cell, d.rung) for d in swept.book().decisions(swept.sweep_id)}
    recorded = {(t.user_attrs["spottrain.cell"], rung) for t in trials for rung in completed_rungs(t)}
    assert decided <= recorded


def test_a_cell_killed_by_chaos_was_judged_with_the_values_its_undisturbed_twin_logged(disturbed, undisturbed):
    """Every cell of the chaos sweep was killed once mid-training; each judgement used the first value logged at
    its step, the value the undisturbed SQLite sweep's same cell logged there (bitwise resume): no kill decided
    anything, and no value logged again by a resumed attempt counted twice. Each rung is compared where the twin got
    that far too: which cells ASHA promotes depends on the order they arrive in (every cell reaches the first)."""
    from launcher.sweeps.book import Verdict

    swept = disturbed
    twins = {cell: metric_points(undisturbed.project, r) for cell, r in undisturbed.cells().items()}
    logs = "".join((swept.project / "runs" / "logs" / f"{r.run_id}.log").read_text() for r in swept.cells().values())
    assert logs.count("[supervisor] chaos: ") >= 4  # the cells that trained long enough to be killed were
    twin_pruned = {d.cell: d.rung for d in undisturbed.book().decisions(undisturbed.sweep_id)
                   if d.verdict is Verdict.PRUNED}
    compared = set()
    for decision in swept.book().decisions(swept.sweep_id):
        points = metric_points(swept.project, swept.cells()[decision.cell])
        judged_at = min(step for step in points if step >= decision.budget)
        assert points[judged_at] == decision.value
        if judged_at in twins[decision.cell]:
            assert decision.value == twins[decision.cell][judged_at], decision
            compared.add((decision.cell, decision.rung))
        else:  # the twin stopped short of this rung: it was pruned at an earlier one
            assert twin_pruned.get(decision.cell, decision.rung) < decision.rung, decision
    assert CLEARLY_LOSING <= {cell for cell, rung in compared if rung == 0}, compared


def test_the_pruned_cells_resumed_from_their_checkpoints_make_the_full_grid_whose_best_is_the_sweeps(undisturbed):
    """`launch recipe lr_asha --run-id RUN` takes a pruned cell on from the checkpoint its stop kept; with every
    cell at the full budget, the best final val/loss is the cell the sweep named best."""
    swept = undisturbed
    from launcher.run_store import run_store
    from spottrain_contract.job import RunState
    from spottrain_contract.ledger import read_ledger

    best = json.loads(swept.launch("sweep", "status", swept.sweep_id, "--json").stdout)["best"]
    pruned = [r for r in swept.cells().values() if r.state is RunState.PRUNED]
    for batch in (pruned[:3], pruned[3:6], pruned[6:]):  # three at a time, a thread each
        for record in batch:
            done = swept.launch("recipe", "lr_asha", "--run-id", record.run_id, "--detach")
            assert done.returncode == 0, done.stdout + done.stderr
        swept.wait(lambda: all(swept.cells()[r.cell].state is RunState.FINISHED for r in batch), "the resumes")
    for record in pruned:
        ledger = read_ledger(run_store(record), record.run_id)
        assert ledger.attempts[-1].attempt.start_step > 0  # from the kept checkpoint, not from scratch
    finals = {cell: metric_points(swept.project, r)[FULL] for cell, r in swept.cells().items()}
    assert min(finals, key=finals.get) == best, finals
