"""Capacity a spot platform may offer: `resources.gpus` and `resources.accelerator` as lists in order of
preference, rendered as SkyPilot's ordered candidates, each count checked to keep the global batch."""

from __future__ import annotations

import pytest
import yaml

from launch_helpers import PROJECT_DIR, plan_launch
from launcher.secrets import MaskedSecrets
from launcher.targets import get_target
from spottrain_contract.errors import RecipeError

CAPACITY = ("resources.gpus=[4,2]", "resources.accelerator=[A100-80GB,A100]")


def test_skypilot_gets_the_candidates_in_order_and_validates_them():
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, overrides=CAPACITY, run_id="r")
    skypilot = get_target("skypilot")
    document = skypilot.render(plan, MaskedSecrets(plan.recipe.secrets))
    skypilot.validate(document)  # SkyPilot's own Task.from_yaml_config accepts the ordered list
    assert yaml.safe_load(document)["resources"]["accelerators"] == ["A100-80GB:4", "A100:4", "A100-80GB:2",
                                                                      "A100:2"]
    assert '--nproc_per_node="$SKYPILOT_NUM_GPUS_PER_NODE"' in yaml.safe_load(document)["run"]


def test_the_preferred_count_sets_the_global_batch_and_the_summary_says_what_each_other_keeps():
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, overrides=CAPACITY, run_id="r")
    assert (plan.recipe.world_size, plan.recipe.effective_batch, plan.recipe.grad_accum_on(2)) == (4, 64, 8)
    summary = plan.summary(get_target("skypilot").describe(plan.recipe))
    assert "target     skypilot: 4 or 2× A100-80GB or A100 × 1 node, spot" in summary
    assert ("capacity   A100-80GB:4, A100:4, A100-80GB:2, A100:2, in this order (global batch 64 kept: grad-accum 8 "
            "on 2)") in summary


def test_a_single_choice_renders_as_before():
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, run_id="r")
    document = get_target("skypilot").render(plan, MaskedSecrets(plan.recipe.secrets))
    assert yaml.safe_load(document)["resources"]["accelerators"] == "A100-80GB:4"
    assert "capacity" not in plan.summary("x")


@pytest.mark.parametrize(("override", "expected"), [
    ("resources.gpus=[4,3]", "--override: resources.gpus: 3 GPUs per node cannot keep the global batch of 64 with "
                             "train.batch.per_gpu 4: drop 3, or change per_gpu"),
    ("resources.gpus=[4,0]", "--override: resources.gpus: expected 1–8, got 0"),
    ("resources.gpus=[]", "--override: resources.gpus: expected a value or a non-empty list of them, got []"),
    ("resources.accelerator=[A100,B100]", "--override: resources.accelerator: expected one of A100, A100-80GB"),
])
def test_a_capacity_that_cannot_be_used_is_one_line(override, expected):
    with pytest.raises(RecipeError) as caught:
        plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, overrides=[override], run_id="r")
    assert str(caught.value).startswith(expected)


PRESETS = 'resources.vessl.preset={"A100-80GB:4": gpu-a100-80g-4-spot, "A100-80GB:2": gpu-a100-80g-2-spot}'


def test_vessl_gets_the_preset_of_the_first_candidate_that_has_one():
    vessl = get_target("vessl")
    for gpus, preset in (("[4,2]", "gpu-a100-80g-4-spot"), ("2", "gpu-a100-80g-2-spot"), ("[8,2]", "gpu-a100-80g-2-spot")):
        plan = plan_launch("baseline", target="vessl", project_dir=PROJECT_DIR, run_id="r",
                           overrides=(f"resources.gpus={gpus}", PRESETS))
        assert vessl.unsupported(plan.recipe) is None
        document = vessl.render(plan, MaskedSecrets(plan.recipe.secrets))
        vessl.validate(document)
        assert yaml.safe_load(document)["resources"]["preset"] == preset, gpus


def test_vessl_without_a_preset_for_any_candidate_is_one_line():
    plan = plan_launch("baseline", target="vessl", project_dir=PROJECT_DIR, run_id="r",
                       overrides=("resources.gpus=8", PRESETS))
    assert get_target("vessl").unsupported(plan.recipe) == (
        "resources.vessl.preset: no preset for A100-80GB:8 (presets for A100-80GB:4, A100-80GB:2): name one for a "
        "candidate, or set a single preset")
