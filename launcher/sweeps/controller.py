"""The controller of a sweep that a search explores (`search.method` asha, hyperband or median): it launches cells
up to `max_parallel`, reads each live cell's metric from its MLflow run, lets Optuna judge it, stops the losing
cells through their target, and draws new trials while the search asks for more.

It is not the user's terminal: `launch recipe SWEEP` records the sweep and starts the controller detached (its own
process, log under runs/sweeps/<id>/), or the hub runs it when one serves the project. Everything it decides is in
the run database before it acts (the study's reports and rung values in Optuna's tables, each promotion and pruning
in `sweep_decisions`, one row per cell and rung), so a controller that died, or a laptop that slept, is started
again (`launch sweep resume`) and goes on where it was: a rung already decided is not decided again, a pruned
cell whose stop was not handed over is stopped, and no cell is lost.

Judging a cell: progress is the step its metric was evaluated at (in the budget's unit), never wall time or an
attempt's own count; a step is judged once, with the first value logged at it (a resumed attempt that recomputes
steps logs them again); a cell that is restarting after a preemption reports nothing new and so is never judged,
let alone pruned for being behind. A pruned cell is stopped gracefully (it checkpoints: `launch recipe RECIPE
--run-id RUN`, or the hub's Resume, trains it on later), its run ends `pruned`, and its device-hours stay in its
ledger.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from launcher import runner
from launcher.errors import UserError
from launcher.mlflow_runs import first_points, mlflow_run, steps_per_epoch
from launcher.operations.launching import plan_run, submit
from launcher.operations.workspace import Workspace
from launcher.registry import RunRecord
from launcher.requests import DependencyLookup
from launcher.sweeps.book import ControllerBusy, Decision, SweepBook, SweepState, Verdict, request_of
from launcher.sweeps.cells import cell_run_id
from launcher.sweeps.parent import end_parent_run
from launcher.sweeps.study import CELL_ATTR, completed_rungs, new_grid_trial, new_sampled_trial, open_study, pruner_for
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped, load_recipe
from spottrain_contract.search import Search, budget_value, cell_from, trial_cell_name
from spottrain_contract.sweep import Cell, cells

POLL_SECONDS = 5.0  # between passes over the live cells (a pass reads each one's new metric values)
POLL_ENV = "SPOTTRAIN_SWEEP_POLL_SECONDS"  # another pace for detached controllers (tests: tiny models train fast)
class Controller:
    def __init__(self, ws: Workspace, sweep_id: str, *, poll_seconds: float = POLL_SECONDS,
                 say: Callable[[str], None] = print, stop_requested: Optional[threading.Event] = None):
        """`stop_requested`: set, the controller leaves the sweep after its pass (it goes on without it: a
        controller started later resumes it)."""
        self.ws, self.sweep_id, self.poll_seconds, self.say = ws, sweep_id, poll_seconds, say
        self.book = SweepBook(ws.registry)
        self.record = self.book.get(sweep_id)
        self.request = request_of(self.record)
        self.bare = load_recipe(self.request.recipe, project_dir=ws.project_dir, profile=self.request.profile,
                                overrides=self.request.overrides)
        self.search: Search = self.bare.recipe.search
        self.axes = self.bare.recipe.sweep
        self.study = open_study(ws.registry.database_url, sweep_id, self.search)
        self.stop_requested = stop_requested or threading.Event()
        self._stops: dict[str, Future] = {}  # run id -> its stop, handed to its target in the background
        self._stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sweep-stop")
        self._mlflow: dict[str, tuple] = {}  # run id -> (MlflowClient, MLflow run id), once found
        self._judged_once: set[int] = set()  # trials judged since this controller started
        self._scales: dict[str, tuple[float, int]] = {}  # run id -> its (steps per budget unit, full steps), known
        # Grid cells start in an order drawn with the search's seed, not the axes' order: asynchronous successive
        # halving promotes each early arrival that is the best so far, so an axis written in ascending order
        # (each cell better than the one before) would promote every cell until the best one arrives.
        self._grid_order = cells(self.axes)
        random.Random(self.search.seed).shuffle(self._grid_order)

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> SweepState:
        """Hold the sweep and pass over it until it is finished or stopped, or `stop_requested`."""
        self.book.claim(self.sweep_id)
        self.say(f"[controller] sweep {self.sweep_id}: {self.search.method} on {self.search.metric} "
                 f"({self.search.mode}), budget {self.search.budget}")
        try:
            while True:
                state = self.pass_once()
                if state in (SweepState.FINISHED, SweepState.STOPPED):
                    return state
                if self.stop_requested.wait(self.poll_seconds):
                    return state
        finally:
            self._stopper.shutdown(wait=True)
            self.book.release(self.sweep_id)

    def pass_once(self) -> SweepState:
        """One look at every cell: judge what reported, act on what was decided, launch what has room."""
        self.book.beat(self.sweep_id)
        self.record = self.book.get(self.sweep_id)
        trials = {t.user_attrs.get(CELL_ATTR): t for t in self.study.get_trials(deepcopy=False)}
        runs = {record.cell: self._refreshed(record) for record in self.ws.registry.cells_of(self.sweep_id)}
        if self.record.state is SweepState.STOPPING:
            return self._stop_all(runs)
        for cell, record in runs.items():
            trial = trials.get(cell)
            if trial is not None:
                self._follow(cell, record, trial)
        trials = {t.user_attrs.get(CELL_ATTR): t for t in self.study.get_trials(deepcopy=False)}
        runs = {record.cell: record for record in self.ws.registry.cells_of(self.sweep_id)}
        if self._launch_what_fits(runs, trials):
            return SweepState.RUNNING  # a cell just launched: the sweep goes on
        if self._done(runs, trials):
            self._finish(runs)
            return SweepState.FINISHED
        return SweepState.RUNNING

    # --- one cell -----------------------------------------------------------------------------------------------

    def _refreshed(self, record: RunRecord) -> RunRecord:
        if not record.state.is_terminal:
            runner.refresh(self.ws.registry, record)
            return self.ws.registry.get(record.run_id)
        return record

    def _follow(self, cell: str, record: RunRecord, trial) -> None:
        """Judge a live cell on what it reported since; a cell that ended by itself is judged too (its rung
        values are what later cells compete with) but never pruned for it, and its trial is told how it ended."""
        from optuna.trial import TrialState

        if trial.state is TrialState.PRUNED:
            self._carry_out_pruning(cell, record)
            return
        if trial.state is not TrialState.RUNNING:
            return
        points = self._points(record)
        scale = self._scale(record)  # None: a budget in epochs, and no epoch logged yet to place a value on it
        if scale is not None:
            steps_per_unit, full_steps = scale
            reported = max(trial.intermediate_values, default=-1)
            new = [point for point in points if reported < point[0] < full_steps]  # the full budget is no rung
            if new or trial.number not in self._judged_once:
                live = not record.state.is_terminal
                if self._judge(cell, record, trial, new, steps_per_unit, full_steps, act=live):
                    self._carry_out_pruning(cell, self.ws.registry.get(record.run_id))
                    return
                self._judged_once.add(trial.number)
        if record.state is RunState.FINISHED:
            if points:
                self.study.tell(trial.number, points[-1][1])
                self.say(f"[controller] cell {cell}: finished, {self.search.metric} {points[-1][1]:.4g}")
            else:
                self.study.tell(trial.number, state=TrialState.FAIL)
                self.say(f"[controller] cell {cell}: finished without logging {self.search.metric}")
        elif record.state is RunState.FAILED:
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.say(f"[controller] cell {cell}: failed (run {record.run_id})")

    def _points(self, record: RunRecord) -> list[tuple[int, float, float]]:
        """The cell's metric as logged so far, first value per step (its MLflow run found once)."""
        found = self._mlflow.get(record.run_id)
        if found is None:
            client, run = mlflow_run(record)
            if run is None:
                return []
            found = self._mlflow[record.run_id] = (client, run.info.run_id)
        client, mlflow_run_id = found
        return first_points(client, mlflow_run_id, self.search.metric)

    def _judge(self, cell: str, record: RunRecord, trial, points: list[tuple[int, float, float]],
               steps_per_unit: float, full_steps: int, *, act: bool) -> bool:
        """Report each new value in step order and let the pruner judge after each, as if the cell reported it
        itself; every rung it decides is written down. True when the cell is pruned. Without `act` (a cell that
        ended by itself) the values are reported and the rungs recorded, and nothing is decided."""
        import optuna
        from optuna.trial import TrialState

        pruner = pruner_for(self.search, steps_per_unit, full_steps)
        storage, trial_id = self.study._storage, trial._trial_id
        reporter = optuna.trial.Trial(self.study, trial_id)
        for step, value, logged in points or [(None, None, None)]:  # none new: judge what was reported
            if step is not None:
                reporter.report(value, step)
            frozen = storage.get_trial(trial_id)
            if frozen.last_step is None:
                return False
            before = completed_rungs(frozen)
            pruned = pruner.prune(self.study, frozen)
            if not act:
                continue
            after = completed_rungs(storage.get_trial(trial_id))
            if pruned:  # told at once: the study holds the decision before anything acts on it
                self.study.tell(trial.number, state=TrialState.PRUNED)
            decided = sorted(set(after) - set(before))
            if self.search.method == "median":  # no rungs: a pruning is written at the step it was judged at
                decided = [frozen.last_step] if pruned else []
                after = {frozen.last_step: frozen.intermediate_values[frozen.last_step]}
            for rung in decided:
                verdict = Verdict.PRUNED if pruned and rung == decided[-1] else Verdict.PROMOTED
                self.book.decide(self.sweep_id, Decision(
                    cell=cell, run_id=record.run_id, rung=rung, budget=self._rung_budget(rung, frozen.last_step,
                                                                                        steps_per_unit),
                    value=after[rung], verdict=verdict, decided=time.time(),
                    reported=logged if step is not None else None, acted=None))
            if pruned:
                self.say(f"[controller] cell {cell}: pruned at {self.search.budget} "
                         f"{frozen.last_step / steps_per_unit:g} ({self.search.metric} "
                         f"{frozen.intermediate_values[frozen.last_step]:.4g})")
                return True
        return False

    def _rung_budget(self, rung: int, step: int, steps_per_unit: float) -> float:
        if self.search.method == "median":
            return step / steps_per_unit
        return self.search.min_budget * self.search.reduction_factor ** rung

    def _scale(self, record: RunRecord) -> Optional[tuple[float, int]]:
        """(optimizer steps per budget unit, the cell's steps at the full budget): 1 and the budget itself for a
        budget in steps; for one in epochs, from the cell's own `train/epoch` metric (the trainer's, and Hugging
        Face Trainer's through the integration) at its latest step: None until it has logged one."""
        if record.run_id in self._scales:
            return self._scales[record.run_id]
        document = from_shipped(record.recipe_document, f"run {record.run_id}").resolved
        full = budget_value(document, self.search.budget) or 1
        if not self.search.budget.endswith("epochs"):
            scale = (1.0, int(full))
        else:
            client, mlflow_run_id = self._mlflow.get(record.run_id) or (None, None)
            per_epoch = steps_per_epoch(client, mlflow_run_id) if client is not None else None
            if per_epoch is None:
                return None
            scale = (per_epoch, round(full * per_epoch))
        self._scales[record.run_id] = scale
        return scale

    def _carry_out_pruning(self, cell: str, record: RunRecord) -> None:
        """Hand the pruned cell's stop to its target (once), and mark its run pruned once it has stopped."""
        if record.state in (RunState.PRUNED, RunState.FINISHED):  # finished before its stop landed: it stays so
            return
        if record.state.is_terminal:
            self.ws.registry.update(record.run_id, state=RunState.PRUNED)
            self.say(f"[controller] cell {cell}: stopped, run {record.run_id} pruned (checkpoint kept)")
            return
        if record.run_id not in self._stops:
            pruning = [d for d in self.book.decisions(self.sweep_id) if d.cell == cell and d.verdict is Verdict.PRUNED]
            self._stops[record.run_id] = self._stopper.submit(self._stop_cell, record, pruning[-1] if pruning else None)

    def _stop_cell(self, record: RunRecord, decision: Optional[Decision]) -> None:
        try:
            runner.stop(self.ws.registry, record)
        except Exception as exc:  # said (a pruned cell left training would go unseen); the next pass asks again
            self.say(f"[controller] cell {record.cell}: stop failed ({type(exc).__name__}: {exc}); asking again")
            self._stops.pop(record.run_id, None)
            return
        if decision is not None:
            self.book.acted(self.sweep_id, decision.cell, decision.rung)

    # --- launching ----------------------------------------------------------------------------------------------

    def _launch_what_fits(self, runs: dict[str, RunRecord], trials: dict) -> int:
        """Launch what `max_parallel` has room for; how many were launched."""
        live = [r for r in runs.values() if not r.state.is_terminal]
        chosen = self._next_cells(runs, trials, self._max_parallel() - len(live))
        for cell, trial in chosen:
            if trial is None:
                new_grid_trial(self.study, self.axes, self.search, cell)
            self._launch(cell)
        return len(chosen)

    def _next_cells(self, runs: dict[str, RunRecord], trials: dict, room: int):
        """Up to `room` (cell, its trial or None) to launch: a cell whose trial exists but whose run was never
        made (a controller that died in between) first, then grid cells in order, or newly drawn trials."""
        from optuna.trial import TrialState

        chosen = []
        for name, trial in trials.items():
            if len(chosen) >= room:
                return chosen
            if name not in runs and trial.state is TrialState.RUNNING:
                chosen.append((self._cell_of(trial), trial))
        if self.search.trials is None:
            for cell in self._grid_order:
                if len(chosen) >= room:
                    return chosen
                if cell.name not in runs and cell.name not in trials:
                    chosen.append((cell, None))
            return chosen
        while len(chosen) < room and len(self.study.get_trials(deepcopy=False)) < self.search.trials:
            trial, cell = new_sampled_trial(self.study, self.axes, self.search, trial_cell_name)
            chosen.append((cell, trial))
        return chosen

    def _cell_of(self, trial) -> Cell:
        return cell_from(trial.params, self.axes, self.search, trial.user_attrs[CELL_ATTR])

    def _launch(self, cell: Cell) -> None:
        request = self.request.but(run_id=cell_run_id(self.sweep_id, cell.name), cell=cell, sweep_id=self.sweep_id,
                                   max_parallel=None)
        planned = plan_run(self.ws, request, DependencyLookup.REQUIRE)
        planned = dataclasses.replace(planned, plan=dataclasses.replace(planned.plan,
                                                                        mlflow_parent=self.record.parent_run))
        submitted = submit(self.ws, planned)
        self.say(f"[controller] cell {cell.name}: launched as run {submitted.run_id} on {submitted.target}"
                 + (f" ({submitted.where})" if submitted.where else ""))

    def _max_parallel(self) -> int:
        """As asked (`--max-parallel`, else the search's), else one at a time here and every cell at once on a
        platform."""
        from launcher.targets import get_target

        asked = self.request.max_parallel or self.search.max_parallel
        if asked:
            return asked
        return 1 if get_target(self.request.target).RUNS_HERE else (self.search.trials or len(cells(self.axes)))

    # --- the end ------------------------------------------------------------------------------------------------

    def _done(self, runs: dict[str, RunRecord], trials: dict) -> bool:
        """Every cell launched and ended, and judged to its end (a cell a person stopped counts as ended: `launch
        sweep resume` resumes it)."""
        from optuna.trial import TrialState

        if any(not record.state.is_terminal for record in runs.values()) or self._stops_pending():
            return False
        wanted = self.search.trials if self.search.trials is not None else len(cells(self.axes))
        if len(runs) < wanted:
            return False
        return all(trial.state is not TrialState.RUNNING or runs[name].state is RunState.STOPPED
                   for name, trial in trials.items() if name in runs)

    def wait_for_stops(self) -> None:
        """Until every stop handed to a target so far is done (a pass only hands them over)."""
        for future in list(self._stops.values()):
            future.result()

    def _stops_pending(self) -> bool:
        return any(not future.done() for future in self._stops.values())

    def _finish(self, runs: dict[str, RunRecord]) -> None:
        self.book.update(self.sweep_id, state=SweepState.FINISHED, ended=time.time())
        counts = {}
        for record in runs.values():
            counts[str(record.state)] = counts.get(str(record.state), 0) + 1
        self.say(f"[controller] sweep {self.sweep_id} finished: "
                 + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        uri = next((record.tracking_uri for record in runs.values() if record.tracking_uri), None)
        if self.record.parent_run and uri:
            end_parent_run(uri, self.ws.project_dir, self.record.parent_run,
                           finished=all(r.state in (RunState.FINISHED, RunState.PRUNED) for r in runs.values()))

    def _stop_all(self, runs: dict[str, RunRecord]) -> SweepState:
        live = [record for record in runs.values() if not record.state.is_terminal]
        for record in live:
            if record.run_id not in self._stops:
                self._stops[record.run_id] = self._stopper.submit(self._stop_cell, record, None)
        if live or self._stops_pending():
            return SweepState.STOPPING
        self.book.update(self.sweep_id, state=SweepState.STOPPED, ended=time.time())
        self.say(f"[controller] sweep {self.sweep_id} stopped")
        return SweepState.STOPPED


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m launcher.sweeps.controller --project DIR --sweep-id ID`: what `operations.start_controller` runs."""
    parser = argparse.ArgumentParser(prog="launcher.sweeps.controller")
    parser.add_argument("--project", required=True)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--poll-seconds", type=float, default=float(os.environ.get(POLL_ENV, POLL_SECONDS)))
    args = parser.parse_args(argv)
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        state = Controller(Workspace(Path(args.project)), args.sweep_id, poll_seconds=args.poll_seconds,
                           say=lambda line: print(line, flush=True), stop_requested=stop).run()
    except ControllerBusy as exc:
        print(f"[controller] {exc}: this one leaves it", flush=True)
        return 0
    except UserError as exc:  # a cell that cannot be planned or launched: said; `launch sweep resume` goes on
        print(f"[controller] sweep {args.sweep_id}: the controller stopped: {exc}", flush=True)
        return 1
    print(f"[controller] sweep {args.sweep_id}: {state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
