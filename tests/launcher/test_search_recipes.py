"""A recipe's `search:`: what it accepts and the one-line errors for what it does not, its rungs, what a dry run
shows of it, the sweep id it makes, and where its study and decisions live (the run database, SQLite and
PostgreSQL, beside the runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from launch_helpers import copy_real_recipes, run_launch
from launcher.registry import Registry
from spottrain_contract.errors import RecipeError
from spottrain_contract.recipe import load_recipe
from spottrain_contract.search import Search

RECIPE = Path(__file__).with_name("recipes") / "lr_asha.yaml"


@pytest.fixture
def project(tmp_path) -> Path:
    root = copy_real_recipes(tmp_path / "project", names=("baseline",))
    shutil.copy(RECIPE, root / "recipes")
    return root


def load(project: Path, *overrides: str):
    return load_recipe("lr_asha", project_dir=project, profile="local", overrides=overrides)


@pytest.mark.parametrize("override, expected", [
    ("search.method=bayes", "--override: search.method: expected 'grid', 'asha', 'hyperband' or 'median', got "
                            "'bayes'"),
    ("search.min_budget=null", "search: method asha needs min_budget"),
    ("search.metric=null", "search: method asha needs metric"),
    ("search.budget=train.optim.sched", "search.budget: train.optim.sched is not a number this recipe sets"),
    ("search.min_budget=40", "search.min_budget: 40 is not below the full budget (train.max_steps = 40)"),
    ("search.reduction_factor=1", "search.reduction_factor: "),
    ("search.space={train.optim.lr: {log_uniform: [1.0e-5, 1.0e-3]}}", "a space is sampled: say how many trials"),
    ("search.space={train.optim.lr: {log_uniform: [0, 1]}}", "log_uniform: expected positive bounds on a log scale"),
    ("search.space={train.optim.lr: {normal: [0, 1]}}", "unknown distribution 'normal'"),
    ("search.space={train.optim.lr: {uniform: [1, 0]}}", "the low bound must be below the high one"),
    ("search.trials=0", "search.trials: "),
])
def test_a_wrong_search_is_one_line_naming_the_key(project, override, expected):
    with pytest.raises(RecipeError) as raised:
        load(project, override)
    message = str(raised.value)
    assert expected in message and len(message.splitlines()) == 1, message


def test_grid_takes_no_space_and_a_pruning_search_needs_something_to_explore(project):
    with pytest.raises(RecipeError, match="method grid trains every cell of the axes"):
        load(project, "search.method=grid", "search.trials=4")
    (project / "recipes" / "no_axes.yaml").write_text(
        "extends: baseline.yaml\nsearch: {method: median, metric: val/loss, budget: train.max_steps}\n")
    with pytest.raises(RecipeError, match="no_axes.yaml: search: nothing to explore: add sweep axes, or a space "
                                          "with trials"):
        load_recipe("no_axes", project_dir=project, profile="local")


def test_rungs_are_the_first_budget_times_the_reduction_factor_below_the_full_budget():
    search = Search(method="asha", metric="m", budget="train.max_steps", min_budget=4, reduction_factor=3)
    assert search.rungs(100) == [4, 12, 36] and search.rungs(36) == [4, 12]
    assert Search(method="median", metric="m", budget="train.max_steps").rungs(100) == []


def test_a_shipped_cell_leaves_the_search_behind(project):
    loaded = load_recipe("lr_asha", project_dir=project, profile="local", cell="lr_1e3")
    assert loaded.recipe.search.method == "asha" and "search:" not in loaded.shipped()


def test_the_dry_run_shows_the_search_and_its_rungs_and_another_search_is_another_sweep(project, tmp_path):
    done = run_launch("recipe", "lr_asha", "--target", "local", "--dry-run", home=tmp_path, cwd=project)
    assert done.returncode == 0, done.stderr
    assert ("search     asha on val/loss (min), budget train.max_steps, rungs at 4, 12, 36: losing cells are "
            "stopped early by the sweep's controller") in done.stdout
    assert "8 cells of lr (recipes/lr_asha.yaml) on local, at most 2 at once" in done.stdout
    grid = run_launch("recipe", "lr_asha", "--target", "local", "--dry-run", "--override", "search.method=grid",
                      home=tmp_path, cwd=project)
    first_id = done.stdout.split()[1].rstrip(":")
    assert first_id.startswith("lr_asha-") and first_id not in grid.stdout


def test_trials_are_drawn_and_their_space_s_corners_are_planned_before_anything_starts(project, tmp_path):
    done = run_launch("recipe", "lr_asha", "--target", "local", "--dry-run", "--json",
                      "--override", "search.trials=12",
                      "--override", "search.space={train.optim.weight_decay: {uniform: [0.0, 0.2]}}",
                      home=tmp_path, cwd=project)
    assert done.returncode == 0, done.stderr
    import json

    cells = json.loads(done.stdout)["cells"]
    assert [cell["cell"] for cell in cells] == ["corner-low", "corner-high"]
    assert cells[0]["cell_overrides"] == {"train.optim.lr": 1e-5, "train.optim.weight_decay": 0.0}
    assert cells[1]["cell_overrides"] == {"train.optim.lr": 1e-1, "train.optim.weight_decay": 0.2}
    too_high = run_launch("recipe", "lr_asha", "--target", "local", "--dry-run",
                          "--override", "search.trials=12",
                          "--override", "search.space={train.optim.weight_decay: {uniform: [0.0, 20.0]}}",
                          home=tmp_path, cwd=project)
    assert too_high.returncode != 0 and "train.optim.weight_decay" in too_high.stderr
    assert "search.space.train.optim.weight_decay, corner-high" in too_high.stderr


# --- the study and the decisions in the run database ------------------------------------------------------------

def test_the_study_lives_in_the_run_database_beside_the_runs(db_url, tmp_path):
    """Optuna's tables (and its Alembic version) beside this schema's: the runs, the study and a reopened study
    all read back, and the run database still opens at its head."""
    from launcher.rundb import engine as db
    from launcher.sweeps.study import open_study
    from test_run_db import a_record

    search = Search(method="asha", metric="val/loss", budget="train.max_steps", min_budget=4)
    registry = Registry(tmp_path, url=db_url)
    registry.create(a_record("before"))
    study = open_study(db_url, "sweep-1", search)
    trial = study.ask()
    trial.report(1.5, 4)
    db.dispose_all()
    again = open_study(db_url, "sweep-1", search)
    assert [t.intermediate_values for t in again.get_trials()] == [{4: 1.5}]
    assert [r.run_id for r in Registry(tmp_path, url=db_url).all()] == ["before"]
    assert db.current_revision(db.engine_for(db_url)) == db.HEAD


def test_a_second_decision_for_the_same_rung_leaves_the_first_and_a_live_controller_holds_its_sweep(
        db_url, tmp_path):
    import time

    from launcher.sweeps.book import ControllerBusy, Decision, SweepBook, SweepRecord, SweepState, Verdict

    book = SweepBook(Registry(tmp_path, url=db_url))
    book.create(SweepRecord(sweep_id="s", recipe="lr_asha", target="local", method="asha", request={}, search={},
                            state=SweepState.RUNNING, started=time.time(), ended=None, controller=None,
                            heartbeat=None, parent_run=None))
    first = Decision(cell="c", run_id="s-c", rung=0, budget=4, value=2.0, verdict=Verdict.PRUNED, decided=1.0,
                     reported=0.5, acted=None)
    assert book.decide("s", first) == first
    assert book.decide("s", first.__class__(**{**first.__dict__, "verdict": Verdict.PROMOTED, "decided": 2.0})) == first
    assert book.decisions("s") == [first]

    book.claim("s")  # this process
    other = f"{os.uname().nodename}:{os.getppid()}"  # a live process on this host
    book.update("s", controller=other)
    with pytest.raises(ControllerBusy, match=f"its controller {other} is alive"):
        book.claim("s")
    book.update("s", controller=f"{os.uname().nodename}:999999999")  # gone: taken over
    assert book.claim("s").controller.endswith(f":{os.getpid()}")
