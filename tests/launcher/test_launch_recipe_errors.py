"""Bad recipes and bad overrides: each gives one exact line naming the file to edit, the dotted key and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from spottrain_contract.errors import RecipeError, UserError
from launch_helpers import plan_launch
from spottrain_contract.recipe import load_recipe

STAGE = """\
extends: _base.yaml
name: x-stage
task: {task}
mlflow: {{run_name: x-stage}}
train:
  epochs: 1
"""


def stage(task: str = "baseline", train: str = "", top: str = "") -> str:
    """recipes/x.yaml: a valid stage of `task`, plus extra lines under `train:` and at the top level."""
    return STAGE.format(task=task) + train + top


@dataclass
class Case:
    id: str
    recipes: dict
    expected: str
    name: str = "x"
    profile: Optional[str] = None
    overrides: tuple = ()
    base_edit: Optional[tuple] = None
    gpus: Optional[int] = None
    kind: type = field(default=RecipeError)


CASES = [
    Case("unknown key", {"x.yaml": stage(train="  optim: {lrate: 1}\n")},
         "recipes/x.yaml: train.optim.lrate: unknown key (expected one of: lr, weight_decay, betas, grad_clip)"),
    Case("wrong type", {"x.yaml": stage(top="resources: {gpus: four}\n")},
         "recipes/x.yaml: resources.gpus: expected an integer, got 'four'"),
    Case("gpus out of range", {"x.yaml": stage(top="resources: {gpus: 0}\n")},
         "recipes/x.yaml: resources.gpus: expected 1–8, got 0"),
    Case("unknown accelerator", {"x.yaml": stage(top="resources: {accelerator: A1000}\n")},
         "recipes/x.yaml: resources.accelerator: expected one of A100, A100-80GB, A10, A10G, A40, B200, GB200, "
         "H100, H100-MEGA, H200, K80, L4, L40, L40S, M60, P100, P4, RTX4090, RTX6000, RTXPRO6000, T4, V100, "
         "V100-32GB, MI300X, got 'A1000'"),
    Case("unknown recipe suggests the closest name", {"baseline.yaml": stage(), "x.yaml": stage()},
         "unknown recipe 'baselin': did you mean 'baseline'? known recipes: baseline, x",
         name="baselin", kind=UserError),
    Case("unknown recipe with nothing close", {"x.yaml": stage()},
         "unknown recipe 'zzz': known recipes: x", name="zzz", kind=UserError),
    Case("shared defaults are not launchable", {"x.yaml": stage()},
         "unknown recipe '_base': known recipes: x", name="_base", kind=UserError),
    Case("cycle in extends", {"x.yaml": "extends: y.yaml\n", "y.yaml": "extends: x.yaml\n"},
         "recipes/y.yaml: extends: cycle: recipes/x.yaml → recipes/y.yaml → recipes/x.yaml"),
    Case("extends a missing file", {"x.yaml": stage().replace("_base.yaml", "_bsae.yaml")},
         "recipes/x.yaml: extends: no such file '_bsae.yaml' next to this recipe"),
    Case("override of a key that does not exist", {"x.yaml": stage()},
         "--override: train.optim.lrr: unknown key (expected one of: lr, weight_decay, betas, grad_clip)",
         overrides=("train.optim.lrr=1",)),
    Case("override without '='", {"x.yaml": stage()},
         "--override: train.optim.lr: expected dotted.key=value, e.g. train.optim.lr=5e-5",
         overrides=("train.optim.lr",)),
    Case("override with an empty key part", {"x.yaml": stage()},
         "--override: train..lr=1: expected dotted.key=value, e.g. train.optim.lr=5e-5",
         overrides=("train..lr=1",)),
    Case("override inside a value", {"x.yaml": stage()},
         "--override: train.optim.lr: is a value (1e-05), cannot set train.optim.lr.peak inside it",
         overrides=("train.optim.lr.peak=1",)),
    Case("override of the wrong type", {"x.yaml": stage()},
         "--override: resources.spot: expected true or false, got 'maybe'", overrides=("resources.spot=maybe",)),
    Case("--gpus out of range is blamed on the override", {"x.yaml": stage()},
         "--override: resources.gpus: expected 1–8, got 0", gpus=0),
    Case("invalid YAML", {"x.yaml": stage(top="resources: {gpus: 4\n")},
         "recipes/x.yaml: invalid YAML at line 8: expected ',' or '}', but got '<stream end>'"),
    Case("not UTF-8", {"x.yaml": b"extends: _base.yaml\nname: caf\xe9\n"},
         "recipes/x.yaml: not UTF-8 text at line 2"),
    Case("top level is not a mapping", {"x.yaml": "- extends: _base.yaml\n"},
         "recipes/x.yaml: expected a mapping at the top level, got list"),
    Case("missing task", {"x.yaml": stage().replace("task: baseline\n", "")},
         "recipes/x.yaml: task: required key is missing (known tasks: baseline, critic, verifiable, rho1, "
         "pairwise_ranking, vlm_lora, command)"),
    Case("unknown task", {"x.yaml": stage(task="rho2")},
         "recipes/x.yaml: task: unknown task 'rho2': did you mean 'rho1'? expected one of baseline, critic, "
         "verifiable, rho1, pairwise_ranking, vlm_lora, command"),
    Case("the old key names the new one", {"x.yaml": stage().replace("task: baseline\n", "pipeline: baseline\n")},
         "recipes/x.yaml: pipeline: renamed to `task` (what the stage trains; `launch pipeline` runs stages in "
         "sequence)"),
    Case("missing required key", {"x.yaml": stage().replace("name: x-stage\n", "")},
         "recipes/x.yaml: name: required key is missing"),
    Case("verifiable weight_clip min > max",
         {"x.yaml": stage("verifiable", train="  verifiable: {weight_clip: [5.0, 0.1]}\n")},
         "recipes/x.yaml: train.verifiable.weight_clip: expected 0 ≤ min ≤ max, got [5.0, 0.1]"),
    Case("rho1 k_percent above 1",
         {"x.yaml": stage("rho1", train="  rho1: {reference_model: micro, k_percent: 1.5}\n")},
         "recipes/x.yaml: train.rho1.k_percent: expected a fraction in (0, 1], got 1.5"),
    Case("rho1 k_percent of 0",
         {"x.yaml": stage("rho1", train="  rho1: {reference_model: micro, k_percent: 0}\n")},
         "recipes/x.yaml: train.rho1.k_percent: expected a fraction in (0, 1], got 0.0"),
    Case("verifiable beta of 0", {"x.yaml": stage("verifiable", train="  verifiable: {beta: 0}\n")},
         "recipes/x.yaml: train.verifiable.beta: expected > 0, got 0.0"),
    Case("verifiable beta below 0", {"x.yaml": stage("verifiable", train="  verifiable: {beta: -0.5}\n")},
         "recipes/x.yaml: train.verifiable.beta: expected > 0, got -0.5"),
    Case("invalid env var name", {"x.yaml": stage(top="env: {1BAD: x}\n")},
         "recipes/x.yaml: env.1BAD: expected an environment variable name, got '1BAD'"),
    Case("invalid secret name", {"x.yaml": stage(top="secrets: [HF_TOKEN, hf-token]\n")},
         "recipes/x.yaml: secrets.1: expected an environment variable name, got 'hf-token'"),
    Case("profile that does not exist", {"x.yaml": stage()},
         "recipes/x.yaml: profiles.cloud: no such profile (this recipe has: local)", profile="cloud"),
    Case("profile that is not a mapping", {"x.yaml": stage(top="profiles: {fast: 3}\n")},
         "recipes/x.yaml: profiles.fast: expected a mapping of dotted keys to values", profile="fast"),
    Case("another task's section", {"x.yaml": stage(train="  rho1: {reference_model: micro}\n")},
         "recipes/x.yaml: train.rho1: unknown key (expected one of: model, data, batch, epochs, max_steps, seed, "
         "log_every_steps, optim, schedule, checkpoint, deepspeed, performance, eval, early_stopping)"),
    Case("evaluation cadence in steps and in epochs", {"x.yaml": stage(train="  eval: {every_epochs: 1}\n")},
         "recipes/x.yaml: train.eval.every_epochs: set every_steps or every_epochs, not both (got every_steps 500 "
         "and every_epochs 1): set the other to null"),
    Case("checkpoints without a cadence", {"x.yaml": stage()}, "--override: train.checkpoint.every_steps: required: "
         "how often (every_steps, or every_epochs)", overrides=("train.checkpoint.every_steps=null",)),
    Case("task without its section", {"x.yaml": stage("critic")},
         "recipes/x.yaml: train.critic: required key is missing"),
    Case("invalid job name", {"x.yaml": stage().replace("name: x-stage", "name: X_Stage")},
         "recipes/x.yaml: name: expected lowercase letters, digits and dashes, got 'X_Stage'"),
    Case("relative volume mount", {"x.yaml": stage(top="volumes: {extra: {mount: data}}\n")},
         "recipes/x.yaml: volumes.extra.mount: expected an absolute path, got 'data'"),
    Case("several problems are each shown on a line", {"x.yaml": stage(top="resources: {gpus: 0, nodes: 0}\n")},
         "recipes/x.yaml: resources.gpus: expected 1–8, got 0\nrecipes/x.yaml: resources.nodes: expected 1–64, got 0"),
    # Blame: the file (or option) that set the bad value, not the recipe that was asked for.
    Case("bad value in _base.yaml is blamed on _base.yaml", {"x.yaml": stage()},
         "recipes/_base.yaml: resources.gpus: expected 1–8, got 16", base_edit=("  gpus: 4\n", "  gpus: 16\n")),
    Case("bad list item in _base.yaml is blamed on _base.yaml", {"x.yaml": stage()},
         "recipes/_base.yaml: secrets.4: expected an environment variable name, got 'HF-TOKEN'",
         base_edit=("HF_TOKEN]", "HF-TOKEN]")),
    Case("bad value from a profile is blamed on the profile",
         {"x.yaml": stage(top="profiles:\n  local:\n    resources.gpus: 12\n")},
         "recipes/x.yaml (profile local): resources.gpus: expected 1–8, got 12", profile="local"),
    Case("bad profile entry of _base.yaml is blamed on _base.yaml though the recipe adds to the profile",
         {"x.yaml": stage(top="profiles:\n  local:\n    train.epochs: 2\n")},
         "recipes/_base.yaml (profile local): resources.gpus: expected 1–8, got 9", profile="local",
         base_edit=("    resources.gpus: 2\n", "    resources.gpus: 9\n")),
    Case("an override beats the file it overrides in blame", {"x.yaml": stage(top="resources: {gpus: 0}\n")},
         "--override: resources.gpus: expected 1–8, got 9", overrides=("resources.gpus=9",)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_recipe_gives_its_exact_one_line_message(case: Case, make_project):
    project = make_project(case.recipes, base_edit=case.base_edit)
    with pytest.raises(UserError) as caught:
        if case.gpus is not None:
            plan_launch(case.name, target="skypilot", project_dir=project, gpus=case.gpus,
                        profile=case.profile, overrides=case.overrides, run_id="r")
        else:
            load_recipe(case.name, project_dir=project, profile=case.profile, overrides=case.overrides)
    assert (type(caught.value).__name__, str(caught.value)) == (case.kind.__name__, case.expected)


def test_there_are_at_least_twelve_bad_recipe_cases():
    assert len(CASES) >= 12 and len({case.id for case in CASES}) == len(CASES)


def test_a_recipe_error_names_the_source_and_key_separately(make_project):
    project = make_project({"x.yaml": stage(top="resources: {gpus: 0}\n")})
    with pytest.raises(RecipeError) as caught:
        load_recipe("x", project_dir=project)
    assert (caught.value.source, caught.value.key) == ("recipes/x.yaml", "resources.gpus")


def test_the_good_stage_used_by_the_table_loads(make_project):
    """Guards the table: each case differs from a recipe that is valid by exactly its one defect."""
    project = make_project({"x.yaml": stage()})
    assert load_recipe("x", project_dir=project).recipe.name == "x-stage"
