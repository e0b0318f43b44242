"""`launch status` groups a sweep's cells under a row of the sweep; `launch status SWEEP` shows its cells."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from launch_helpers import copy_real_recipes, run_launch
from launcher.registry import Registry, RunRecord
from launcher.sweeps.status import sweep_state
from spottrain_contract.job import RunState

RUNNING, FINISHED, FAILED, STOPPED = RunState.RUNNING, RunState.FINISHED, RunState.FAILED, RunState.STOPPED


@pytest.mark.parametrize("states, expected", [
    ([FINISHED, FINISHED], FINISHED), ([FINISHED, RUNNING, FAILED], RUNNING), ([FINISHED, FAILED, STOPPED], FAILED),
    ([FINISHED, STOPPED], STOPPED), ([RunState.PENDING, FINISHED], RUNNING)])
def test_a_sweeps_state_is_its_liveliest_cells(states, expected):
    assert sweep_state(states) is expected


@pytest.fixture
def project(tmp_path) -> Path:
    """A registry of a plain run and a sweep `abl` of three cells here: finished, running (a live supervisor: this
    process), failed."""
    root = copy_real_recipes(tmp_path / "project", names=("baseline",))
    registry = Registry(root)
    now = time.time()

    def save(run_id, state, started, recipe="lr_sweep", **sweep):
        registry.save(RunRecord(run_id=run_id, recipe=recipe, target="local", state=state, started=now - started,
                                store="s", local_dir=str(tmp_path), tracking_uri="", project=str(root),
                                handle={"supervisor_pid": os.getpid()} if state is RUNNING else {}, **sweep))

    save("solo", FINISHED, 400, recipe="baseline")
    save("abl-a__x", FINISHED, 300, sweep_id="abl", cell="a__x")
    save("abl-a__y", RUNNING, 200, sweep_id="abl", cell="a__y")
    save("abl-b__x", FAILED, 100, sweep_id="abl", cell="b__x")
    return root


def test_status_groups_a_sweeps_cells_under_its_row(project, private_home):
    done = run_launch("status", home=private_home, cwd=project)
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE"],
        ["solo", "baseline", "local", "finished", "-", "0", "6m"],
        ["abl", "lr_sweep", "local", "running", "1/3", "cells", "0", "5m"],
        ["abl-a__x", "lr_sweep", "local", "finished", "-", "0", "5m"],
        ["abl-a__y", "lr_sweep", "local", "running", "-", "0", "3m"],
        ["abl-b__x", "lr_sweep", "local", "failed", "-", "0", "1m"]]
    assert done.stdout.splitlines()[3].startswith("  abl-a__x")  # a cell's row is indented under its sweep


def test_status_of_a_sweep_lists_its_cells(project, private_home):
    done = run_launch("status", "abl", home=private_home, cwd=project)
    lines = done.stdout.splitlines()
    assert lines[0] == "sweep abl: recipe lr_sweep on local, running, 1/3 cells finished"
    assert [line.split() for line in lines[1:]] == [
        ["CELL", "RUN", "STATE", "STEP", "RESTARTS", "AGE"],
        ["a__x", "abl-a__x", "finished", "-", "0", "5m"],
        ["a__y", "abl-a__y", "running", "-", "0", "3m"],
        ["b__x", "abl-b__x", "failed", "-", "0", "1m"]]


def test_status_json_names_each_runs_sweep_and_cell(project, private_home):
    views = json.loads(run_launch("status", "--json", home=private_home, cwd=project).stdout)
    assert [(v["id"], v["sweep_id"], v["cell"]) for v in views] == [
        ("solo", None, None), ("abl-a__x", "abl", "a__x"), ("abl-a__y", "abl", "a__y"), ("abl-b__x", "abl", "b__x")]


def test_status_of_neither_a_run_nor_a_sweep_names_it(project, private_home):
    done = run_launch("status", "nope", home=private_home, cwd=project)
    assert (done.returncode, done.stderr.splitlines()[0].split(" (")[0]) == (
        2, "error: no run 'nope' launched from this project")


def test_status_on_a_narrow_terminal_drops_restarts_first_and_keeps_every_cell_whole(project, private_home,
                                                                                      monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    done = run_launch("status", home=private_home, cwd=project)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout and max(map(len, done.stdout.splitlines())) <= 60
    assert [line.split() for line in done.stdout.splitlines()[:3]] == [
        ["RUN", "RECIPE", "TARGET", "STATE", "STEP", "AGE"],
        ["solo", "baseline", "local", "finished", "-", "6m"],
        ["abl", "lr_sweep", "local", "running", "1/3", "cells", "5m"]]


def test_status_of_a_sweep_on_a_narrow_terminal_keeps_the_cell_run_state_and_step(project, private_home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    lines = run_launch("status", "abl", home=private_home, cwd=project).stdout.splitlines()
    assert [line.split() for line in lines[1:3]] == [["CELL", "RUN", "STATE", "STEP", "AGE"],
                                                     ["a__x", "abl-a__x", "finished", "-", "5m"]]


def test_an_eval_job_is_listed_under_the_run_it_judges_and_neither_resumed_nor_cloned(project, private_home):
    from launcher import operations as ops
    from launcher.requests import JobKind
    from launcher.rundb.records import WeightsJobOf

    registry = Registry(project)
    registry.save(RunRecord(run_id="solo-eval-0a1b2c3d", recipe="baseline", target="local", state=FINISHED,
                            started=time.time() - 200, store="s", local_dir="/l", tracking_uri="", project=str(project),
                            handle=WeightsJobOf(kind=JobKind.EVAL, run_id="solo").entries()))
    done = run_launch("status", home=private_home, cwd=project)
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[1:3] == [["solo", "baseline", "local", "finished", "-", "0", "6m"],
                         ["solo-eval-0a1b2c3d", "eval", "local", "finished", "-", "0", "3m"]]
    assert done.stdout.splitlines()[2].startswith("  solo-eval-")
    ws = ops.Workspace.open(project)
    for act, done_to in ((lambda: ops.resume(ws, "solo-eval-0a1b2c3d"), "resumed"),
                         (lambda: ops.clone(ws, "solo-eval-0a1b2c3d", {}), "cloned")):
        with pytest.raises(ops.LaunchError) as refused:
            act()
        assert str(refused.value) == (f"run solo-eval-0a1b2c3d is an eval job of run solo: it is not {done_to}; run "
                                      f"`launch eval solo` again")
    assert ws.registry.get("solo-eval-0a1b2c3d").state is FINISHED
