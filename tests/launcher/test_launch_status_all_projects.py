"""`launch status --all-projects`: every project's runs in one database (a team's SPOTTRAIN_DB), with a PROJECT
column, and a WHO column wherever the runs listed were launched by more than one person."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.registry import Registry, RunRecord
from spottrain_contract.job import RunState


@pytest.fixture
def team(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Projects alpha (ana's run) and beta (bo's run and a two-cell sweep) launching into one database."""
    monkeypatch.setenv("SPOTTRAIN_DB", f"sqlite:///{tmp_path / 'team' / 'spottrain.db'}")
    monkeypatch.delenv("COLUMNS", raising=False)
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"
    now = time.time()

    def save(project: Path, run_id: str, who: str, minutes: int, **sweep):
        Registry(project).save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=RunState.FINISHED,
                                         started=now - 60 * minutes - 1, store="s", local_dir=str(tmp_path / "none"),
                                         tracking_uri="", project=str(project), launched_by=who, **sweep))

    save(alpha, "a1", "ana@box", 9)
    save(beta, "b1", "bo@lab", 8)
    save(beta, "abl-x", "bo@lab", 7, sweep_id="abl", cell="x")
    save(beta, "abl-y", "bo@lab", 6, sweep_id="abl", cell="y")
    return alpha, beta


def status(project: Path, *args: str) -> list[list[str]]:
    done = CliRunner().invoke(cli, ["status", *args], env={"LAUNCH_PROJECT_DIR": str(project)})
    assert done.exit_code == 0, done.output
    return [line.split() for line in done.output.splitlines()]


def test_all_projects_lists_every_projects_runs_with_project_and_who(team):
    alpha, _ = team
    assert status(alpha, "--all-projects") == [
        ["RUN", "PROJECT", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE", "WHO"],
        ["a1", "alpha", "baseline", "local", "finished", "-", "0", "9m", "ana@box"],
        ["b1", "beta", "baseline", "local", "finished", "-", "0", "8m", "bo@lab"],
        ["abl", "beta", "baseline", "local", "finished", "2/2", "cells", "0", "7m", "bo@lab"],
        ["abl-x", "beta", "baseline", "local", "finished", "-", "0", "7m", "bo@lab"],
        ["abl-y", "beta", "baseline", "local", "finished", "-", "0", "6m", "bo@lab"]]


def test_without_it_a_project_lists_its_own_runs_and_one_launcher_needs_no_who(team):
    alpha, beta = team
    assert status(alpha) == [["RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE"],
                             ["a1", "baseline", "local", "finished", "-", "0", "9m"]]
    assert [row[0] for row in status(beta)] == ["RUN", "b1", "abl", "abl-x", "abl-y"]


def test_all_projects_is_for_the_list_only(team):
    done = CliRunner().invoke(cli, ["status", "a1", "--all-projects"], env={"LAUNCH_PROJECT_DIR": str(team[0])})
    assert done.exit_code != 0 and "--all-projects: only for the list of runs" in str(done.exception)
