"""Stage inputs are declared by a task's options and found the same way for every task."""

from __future__ import annotations

from pathlib import Path

from spottrain_contract.recipe import load_recipe
from spottrain_contract.stage_inputs import StageInput, unset_stage_inputs

PROJECT = Path(__file__).resolve().parents[2]


def test_the_verifiable_stage_declares_the_critics_checkpoint_it_needs():
    recipe = load_recipe("verifiable", project_dir=PROJECT).recipe
    assert unset_stage_inputs(recipe.train) == [StageInput("train.verifiable.critic_checkpoint", "critic")]


def test_an_input_given_is_not_looked_up_and_its_producer_follows_the_option_naming_it():
    given = load_recipe("verifiable", project_dir=PROJECT,
                        overrides=["train.verifiable.critic_checkpoint=s3://b/critic-1/step-00000010"]).recipe
    other = load_recipe("verifiable", project_dir=PROJECT, overrides=["train.verifiable.critic_stage=critic_v2"])
    assert unset_stage_inputs(given.train) == []
    assert unset_stage_inputs(other.recipe.train) == [StageInput("train.verifiable.critic_checkpoint", "critic_v2")]


def test_a_task_without_inputs_has_none():
    assert unset_stage_inputs(load_recipe("baseline", project_dir=PROJECT).recipe.train) == []
