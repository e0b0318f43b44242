"""Sweep recipes: the `sweep:` syntax, its one-line errors, the grid's cells and their names, each cell resolved
like a profile."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from launch_helpers import PROJECT_DIR, copy_real_recipes
from spottrain_contract.errors import UserError
from spottrain_contract.recipe import from_shipped, load_recipe, settings_of
from spottrain_contract.sweep import cell_job_name, cells

SWEEP_RECIPE = Path(__file__).with_name("recipes") / "lr_sweep.yaml"
CELLS = ["lr_1e3__s1", "lr_1e3__s2", "lr_3e3__s1", "lr_3e3__s2"]


@pytest.fixture
def project(tmp_path) -> Path:
    """The real recipes and the example sweep (tests/launcher/recipes/lr_sweep.yaml: lr × seed of baseline)."""
    root = copy_real_recipes(tmp_path / "project", names=("baseline",))
    shutil.copy(SWEEP_RECIPE, root / "recipes")
    return root


def with_sweep(sweep: str) -> dict[str, str]:
    return {"x.yaml": "extends: baseline.yaml\n" + sweep,
            "baseline.yaml": (PROJECT_DIR / "recipes" / "baseline.yaml").read_text()}


# --- the grid ---------------------------------------------------------------------------------------------------


def test_the_grid_is_every_combination_first_axis_slowest_named_by_its_entries():
    grid = cells({"model": {"small": {"train.model.path": "s"}, "large": {"train.model.path": "l"}},
                  "lr": {"lr_1e4": {"train.optim.lr": 1e-4}, "lr_3e4": {"train.optim.lr": 3e-4}, "same": {}}})
    assert [cell.name for cell in grid] == ["small__lr_1e4", "small__lr_3e4", "small__same", "large__lr_1e4",
                                            "large__lr_3e4", "large__same"]
    assert grid[1].entries == {"model": "small", "lr": "lr_3e4"}
    assert grid[1].overrides == {"train.model.path": "s", "train.optim.lr": 3e-4}
    assert grid[2].overrides == {"train.model.path": "s"}


def test_no_axes_make_no_cells():
    assert cells({}) == []


def test_a_later_axis_wins_where_two_set_the_same_key():
    (cell,) = cells({"a": {"one": {"train.seed": 1}}, "b": {"two": {"train.seed": 2}}})
    assert cell.overrides == {"train.seed": 2}


def test_a_cells_job_name_is_the_recipes_name_and_the_cell_in_lowercase_and_dashes():
    assert cell_job_name("baseline-mtp", "lr_1e-4__clip_0.5") == "baseline-mtp-lr-1e-4-clip-0-5"
    long = cell_job_name("baseline-mtp", "a" * 60 + "_b")
    assert len(long) == 63 and not long.endswith("-") and long.startswith("baseline-mtp-aaa")


# --- a cell resolved ----------------------------------------------------------------------------------------------


def test_a_cell_applies_after_the_profile_and_before_the_overrides(project):
    loaded = load_recipe("lr_sweep", project_dir=project, profile="local", cell="lr_3e3__s1")
    assert (loaded.recipe.train.optim.lr, loaded.recipe.train.seed) == (3e-3, 1)  # the local profile sets lr 1e-3
    overridden = load_recipe("lr_sweep", project_dir=project, profile="local", cell="lr_3e3__s1",
                             overrides=["train.optim.lr=5e-3"])
    assert overridden.recipe.train.optim.lr == 5e-3


def test_a_cell_is_named_for_its_cell_on_the_platform_and_in_mlflow(project):
    loaded = load_recipe("lr_sweep", project_dir=project, cell="lr_1e3__s2")
    assert (loaded.recipe.name, loaded.recipe.mlflow.run_name) == ("baseline-mtp-lr-1e3-s2", "lr_1e3__s2")
    assert loaded.recipe.train.seed == 42  # s2 is empty: the recipe's seed


def test_the_shipped_recipe_of_a_cell_names_its_cell_and_leaves_the_sweep_behind(project):
    loaded = load_recipe("lr_sweep", project_dir=project, cell="lr_3e3__s1")
    document = yaml.safe_load(loaded.shipped())
    assert "sweep" not in document and "profiles" not in document
    assert document["resolved_from"]["cell"] == {"name": "lr_3e3__s1", "entries": {"lr": "lr_3e3", "seed": "s1"},
                                                 "overrides": {"train.optim.lr": 3e-3, "train.seed": 1}}
    again = from_shipped(loaded.shipped(), "job")
    assert (again.cell, settings_of(again.recipe)) == (loaded.cell, settings_of(loaded.recipe))


# --- one-line errors ----------------------------------------------------------------------------------------------


ERRORS = [
    ("an unknown key in one entry names the file, the entry and the key",
     "sweep:\n  lr:\n    ok: {train.optim.lr: 1.0e-3}\n    bad: {train.optim.lrr: 3.0e-3}\n", "bad",
     "recipes/x.yaml (sweep.lr.bad): train.optim.lrr: unknown key (expected one of: lr, weight_decay, betas, "
     "grad_clip)"),
    ("a bad value in one entry",
     "sweep:\n  lr:\n    neg: {train.optim.lr: -1}\n", "neg",
     "recipes/x.yaml (sweep.lr.neg): train.optim.lr: expected > 0, got -1.0"),
    ("an entry name a run id cannot hold",
     "sweep:\n  lr:\n    LR_1: {train.optim.lr: 1.0e-3}\n", "LR_1",
     "recipes/x.yaml: sweep.lr.LR_1: expected lowercase letters and digits with single '.', '_' or '-' between "
     "them, got 'LR_1'"),
    ("an entry name with the cell separator in it",
     "sweep:\n  lr:\n    a__b: {train.optim.lr: 1.0e-3}\n", "a__b",
     "recipes/x.yaml: sweep.lr.a__b: expected lowercase letters and digits with single '.', '_' or '-' between "
     "them, got 'a__b'"),
    ("an axis without entries", "sweep:\n  lr: {}\n", "x",
     "recipes/x.yaml: sweep.lr: expected at least one entry (name: {dotted.key: value, ...})"),
    ("an entry that is not a mapping", "sweep:\n  lr:\n    one: 1.0e-3\n", "one",
     "recipes/x.yaml: sweep.lr.one: expected a mapping, got 0.001"),
    ("an entry key that is not dotted", "sweep:\n  lr:\n    one: {train..lr: 1}\n", "one",
     "recipes/x.yaml: sweep.lr.one: expected dotted keys as --override takes them (train.optim.lr), got 'train..lr'"),
    ("a cell outside the grid", "sweep:\n  lr:\n    one: {}\n    two: {}\n", "three",
     "recipes/x.yaml: sweep: no cell 'three' in this sweep (cells: one, two)"),
]


@pytest.mark.parametrize("sweep, cell, expected", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_a_bad_sweep_is_one_line_naming_the_file_the_entry_and_the_key(sweep, cell, expected, make_project):
    project = make_project(with_sweep(sweep))
    with pytest.raises(UserError) as caught:
        load_recipe("x", project_dir=project, cell=cell)
    assert str(caught.value) == expected
