"""A command recipe as the loader and the renderer see it: the script's config checked against its JSON Schema or
the types its values imply (one line naming the key), the config file's format, and the run script around the
command (torchrun or python, inside the node wrapper)."""

from __future__ import annotations

import json

import pytest
import yaml

from launch_helpers import PROJECT_DIR, render_for_display, write_project
from spottrain_contract.command import config_text
from spottrain_contract.errors import RecipeError
from spottrain_contract.recipe import load_recipe

SCRIPT_RECIPE = """\
name: team-script
task: command
image: img
command: [train.py, --config, "{config}"]
resources: {accelerator: A100, gpus: [4, 2]}
code: {repo: github.com/team/project}
mlflow: {experiment: team, run_name: script}
config:
  model: {hidden: 32, name: tiny}
  training: {lr: 0.001, epochs: 2, bf16: false, layers: [1, 2]}
train:
  checkpoint: {uri: runs/store, local_dir: runs/local}
profiles:
  local: {resources.gpus: 2}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("script"), {"script.yaml": SCRIPT_RECIPE})


def _error(project, *overrides: str, recipe: str = "script") -> str:
    with pytest.raises(RecipeError) as raised:
        load_recipe(recipe, project_dir=project, overrides=overrides)
    return str(raised.value)


def test_overrides_keep_the_types_the_recipe_wrote(project):
    loaded = load_recipe("script", project_dir=project, overrides=["config.training.lr=3e-4",
                                                                   "config.training.layers=[4]"])
    assert loaded.recipe.config["training"] == {"lr": 3e-4, "epochs": 2, "bf16": False, "layers": [4]}
    assert loaded.recipe.argv == ["train.py", "--config", "{config}"]
    assert loaded.recipe.effective_batch is None  # the script's, and any capacity list is the script's to adapt to


@pytest.mark.parametrize(("override", "message"), [
    ("config.training.lrr=1",
     "--override: config.training.lrr: unknown key (expected one of: bf16, epochs, layers, lr)"),
    ("config.training.epochs=two", "--override: config.training.epochs: expected an integer, got 'two'"),
    ("config.model.hidden=2.5", "--override: config.model.hidden: expected an integer, got 2.5"),
    ("config.training.bf16=1", "--override: config.training.bf16: expected true or false, got 1"),
    ("config_file=config.txt", "--override: config_file: expected a file name ending in .yaml, .yml or .json, "
                               "got 'config.txt'"),
])
def test_a_bad_config_value_is_one_line_naming_its_key(project, override, message):
    assert _error(project, override) == message


def test_a_config_schema_checks_ranges_and_choices_of_the_real_recipe():
    assert _error(PROJECT_DIR, "config.training.lr_scheduler_type=sawtooth", recipe="hf_trainer").startswith(
        "--override: config.training.lr_scheduler_type: expected one of ")
    assert _error(PROJECT_DIR, "config.model.hidden_size=2", recipe="hf_trainer") == (
        "--override: config.model.hidden_size: expected ≥ 8, got 2")
    assert _error(PROJECT_DIR, "config.model.hidden_sise=64", recipe="hf_trainer").startswith(
        "--override: config.model.hidden_sise: unknown key (expected one of: ")


def test_a_missing_schema_file_is_one_line(tmp_path):
    project = write_project(tmp_path, {"script.yaml": SCRIPT_RECIPE + "config_schema: schemas/none.json\n"})
    assert _error(project).startswith("recipes/script.yaml: config_schema: cannot read ")


def test_the_config_file_is_json_or_yaml_by_its_name(project):
    recipe = load_recipe("script", project_dir=project).recipe
    assert yaml.safe_load(config_text(recipe)) == recipe.config
    as_json = load_recipe("script", project_dir=project, overrides=["config_file=settings.json"]).recipe
    assert json.loads(config_text(as_json)) == recipe.config


def test_the_run_script_wraps_the_command_under_torchrun_or_python(project):
    _, torchrun = render_for_display("script", target="local", project_dir=project, profile="local", run_id="r")
    assert "python -m spottrain command -- torchrun --standalone --nnodes=1 --nproc_per_node=2 \\\n" \
           "  train.py --config '{config}' &" in torchrun
    _, python = render_for_display("script", target="local", project_dir=project, profile="local", run_id="r",
                                   overrides=["launcher=python"])
    assert "python -m spottrain command -- python \\\n  train.py --config '{config}' &" in python
