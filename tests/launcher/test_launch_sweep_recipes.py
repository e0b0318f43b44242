"""Sweep recipes: the `sweep:` syntax, its one-line errors, the grid's cells and their names, each cell resolved
like a profile, and `launch recipe SWEEP --dry-run` listing the cells with their documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from launch_helpers import PROJECT_DIR, copy_real_recipes, run_launch
from launcher import operations as ops
from launcher.targets import skypilot
from spottrain_contract.errors import UserError
from spottrain_contract.job import MLFLOW_PARENT_RUN_ENV
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


def plan_sweep(name: str, *, target: str, project_dir: Path, stages: str = "require", **asked):
    """`launch recipe NAME` planned as the CLI plans it: the sweep (its cells' plans), or None for a recipe
    without one."""
    lookup = {"ignore": ops.DependencyLookup.SKIP, "require": ops.DependencyLookup.REQUIRE}[stages]
    asked["overrides"] = tuple(asked.get("overrides", ()))
    planned = ops.prepare(ops.Workspace.open(project_dir), ops.LaunchRequest(name, target, **asked), lookup)
    return planned.sweep if isinstance(planned, ops.PlannedSweep) else None


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


def test_a_profile_s_sweep_replaces_the_recipe_s():
    """vlm_ablation: the published models' grid on a platform, tiny models of the same families here."""
    def grid(profile):
        # skypilot: no default profile, so None plans the recipe bare
        return [plan.loaded.cell.name for plan in plan_sweep("vlm_ablation", target="skypilot",
                                                             project_dir=PROJECT_DIR, profile=profile).cells]

    assert grid(None) == ["qwen_vl_chat__lora_r16", "qwen_vl_chat__lora_r32", "llava_1.5_7b__lora_r16",
                          "llava_1.5_7b__lora_r32"]
    assert grid("local") == ["tiny_qwen2_vl__lora_r16", "tiny_qwen2_vl__lora_r32", "tiny_llava__lora_r16",
                             "tiny_llava__lora_r32"]
    cell = load_recipe("vlm_ablation", project_dir=PROJECT_DIR, profile="local", cell="tiny_llava__lora_r32")
    assert (cell.recipe.train.model.id, cell.recipe.train.lora.r) == ("tiny:llava", 32)


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


def test_a_sweep_with_one_bad_cell_launches_nothing(make_project):
    project = make_project(with_sweep(ERRORS[0][1]))
    with pytest.raises(UserError, match=r"^recipes/x.yaml \(sweep.lr.bad\): train.optim.lrr: unknown key"):
        plan_sweep("x", target="local", project_dir=project, profile="local")
    assert not (project / "runs").exists()


def test_launch_check_checks_every_cell(make_project, private_home):
    project = make_project(with_sweep(ERRORS[0][1]))
    done = run_launch("check", "--target", "local", home=private_home, cwd=project)
    assert done.returncode == 1
    assert "ok    x × local × local × cell ok" in done.stdout.splitlines()
    assert ("FAIL  x × local × local × cell bad: recipes/x.yaml (sweep.lr.bad): train.optim.lrr: unknown key "
            "(expected one of: lr, weight_decay, betas, grad_clip)") in done.stdout.splitlines()


# --- ids ------------------------------------------------------------------------------------------------------------


def test_the_sweep_id_is_the_same_for_the_same_ask_and_another_for_another(project):
    def sweep_id(**asked):
        return plan_sweep("lr_sweep", project_dir=project, stages="ignore", **asked).sweep_id

    first = sweep_id(target="local", profile="local")
    assert first.startswith("lr_sweep-") and len(first) == len("lr_sweep-") + 8
    assert sweep_id(target="local", profile="local") == first
    assert sweep_id(target="local", profile="local", overrides=["train.max_steps=3"]) != first
    assert sweep_id(target="skypilot") != first
    assert sweep_id(target="local", profile="local", sweep_id="ablation-1") == "ablation-1"


def test_each_cells_run_id_is_the_sweep_id_and_the_cell(project):
    sweep = plan_sweep("lr_sweep", target="local", project_dir=project, profile="local", sweep_id="abl",
                       stages="ignore")
    assert [(c.loaded.cell.name, c.run_id, c.sweep_id) for c in sweep.cells] == [
        (cell, f"abl-{cell}", "abl") for cell in CELLS]


def test_a_sweep_id_a_run_id_cannot_hold_is_refused(project):
    with pytest.raises(UserError, match=r"^--sweep-id: expected lowercase letters and digits"):
        plan_sweep("lr_sweep", target="local", project_dir=project, sweep_id="My Sweep", stages="ignore")


def test_a_recipe_without_a_sweep_plans_no_sweep(project):
    assert plan_sweep("baseline", target="local", project_dir=project, stages="ignore") is None


# --- the dry run ----------------------------------------------------------------------------------------------------


@pytest.fixture
def dry_run(project, private_home):
    done = run_launch("recipe", "lr_sweep", "--dry-run", home=private_home, cwd=project)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_dry_run_lists_the_cells_with_their_run_ids_and_overrides(dry_run):
    lines = dry_run.splitlines()
    sweep_id = lines[0].split()[1].rstrip(":")
    assert lines[0] == (f"sweep      {sweep_id}: 4 cells of lr × seed (recipes/lr_sweep.yaml) on skypilot, "
                        f"all at once")
    assert [line.split() for line in lines[1:6]] == [
        ["CELL", "RUN", "ID", "OVERRIDES"],
        ["lr_1e3__s1", f"{sweep_id}-lr_1e3__s1", "train.optim.lr=0.001", "train.seed=1"],
        ["lr_1e3__s2", f"{sweep_id}-lr_1e3__s2", "train.optim.lr=0.001"],
        ["lr_3e3__s1", f"{sweep_id}-lr_3e3__s1", "train.optim.lr=0.003", "train.seed=1"],
        ["lr_3e3__s2", f"{sweep_id}-lr_3e3__s2", "train.optim.lr=0.003"]]
    assert lines[6] == ("mlflow     no parent run: the recipe names no MLflow server (mlflow.tracking_uri), so "
                        "each cell logs on its own node")


def test_the_dry_run_prints_each_cells_summary_and_the_document_it_would_submit(dry_run):
    sections = dry_run.split("\n== cell ")[1:]
    assert [section.splitlines()[0] for section in sections] == CELLS
    for cell, section in zip(CELLS, sections):
        summary, document = section.split("\n---\n", 1)
        lr, seed = ("0.001" if "1e3" in cell else "0.003"), (" train.seed=1" if cell.endswith("s1") else "")
        sweep_line = [line for line in summary.splitlines() if line.startswith("sweep      ")]
        assert sweep_line == [f"sweep      {sweep_line[0].split()[1]} cell {cell}: train.optim.lr={lr}{seed}"]
        skypilot.validate(document)
        task = yaml.safe_load(document)
        assert task["name"] == cell_job_name("baseline-mtp", cell)
        shipped = from_shipped(task["envs"]["SPOTTRAIN_RECIPE"], "envs")
        assert shipped.cell.name == cell and task["envs"]["SPOTTRAIN_RUN_ID"].endswith(f"-{cell}")
        assert MLFLOW_PARENT_RUN_ENV not in task["envs"]  # made at launch: a dry run never touches MLflow
        assert set(task["secrets"].values()) == {None}  # names only, as for any SkyPilot task


def test_the_dry_run_as_json_is_the_sweep_with_each_cells_plan(project, private_home):
    done = run_launch("recipe", "lr_sweep", "--target", "local", "--dry-run", "--json", home=private_home,
                      cwd=project)
    view = json.loads(done.stdout)
    assert (view["target"], view["recipe"]) == ("local", "lr_sweep")
    assert [(c["cell"], c["run_id"], c["sweep_id"]) for c in view["cells"]] == [
        (cell, f"{view['sweep_id']}-{cell}", view["sweep_id"]) for cell in CELLS]
    assert view["cells"][0]["cell_overrides"] == {"train.optim.lr": 0.001, "train.seed": 1}


def test_a_sweep_here_is_not_detached_and_has_no_max_parallel(project, private_home):
    for option in (["--detach"], ["--max-parallel", "2"]):
        done = run_launch("recipe", "lr_sweep", "--target", "local", *option, home=private_home, cwd=project)
        assert (done.returncode, done.stderr.splitlines()) == (2, [
            f"error: {option[0]}: a sweep's cells run here one after another, in the foreground (Ctrl-C stops "
            f"the cell that runs, and the sweep)"])
        assert not (project / "runs").exists()


def test_sweep_options_on_a_recipe_without_a_sweep_are_refused(project, private_home):
    done = run_launch("recipe", "baseline", "--max-parallel", "2", "--dry-run", home=private_home, cwd=project)
    assert (done.returncode, done.stderr.splitlines()) == (
        2, ["error: --max-parallel: only for a recipe with a sweep, launched without --run-id"])
