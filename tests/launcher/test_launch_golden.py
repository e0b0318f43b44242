"""Golden renders: every recipe × target, bare and under the `local` profile, byte for byte.

A change to a recipe, a template or a target shows up here as a diff a reviewer can read. After an intended
change, regenerate with:  UPDATE_GOLDEN=1 pytest tests/launcher/test_launch_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launch_helpers import PROJECT_DIR, TARGETS, render_for_display
from spottrain_contract.recipe import recipe_names

GOLDEN_DIR = Path(__file__).parent / "golden"
RUN_ID = "golden-run"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CASES = [(recipe, target, profile)
         for recipe in recipe_names(PROJECT_DIR) for target in TARGETS for profile in (None, "local")]


def golden_path(recipe: str, target: str, profile) -> Path:
    return GOLDEN_DIR / ".".join(filter(None, (recipe, target, profile, "yaml")))


@pytest.mark.parametrize(("recipe", "target", "profile"), CASES,
                         ids=[golden_path(*case).name[:-len(".yaml")] for case in CASES])
def test_render_matches_golden_file(recipe, target, profile, no_git_commit):
    _, document = render_for_display(recipe, target=target, project_dir=PROJECT_DIR, profile=profile,
                                     run_id=RUN_ID)
    path = golden_path(recipe, target, profile)
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(document, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: UPDATE_GOLDEN=1 pytest {Path(__file__).relative_to(PROJECT_DIR)}"
    assert document == path.read_text(encoding="utf-8")


def test_every_golden_file_belongs_to_a_current_render():
    expected = {golden_path(*case).name for case in CASES}
    stale = sorted(p.name for p in GOLDEN_DIR.glob("*.yaml") if p.name not in expected)
    if UPDATE:
        for name in stale:
            (GOLDEN_DIR / name).unlink()
        stale = []
    assert stale == []


def test_there_is_a_golden_file_for_each_recipe():
    assert {recipe for recipe, _, _ in CASES} == {"baseline", "critic", "ddp_example", "hf_trainer",
                                                  "lightning_example", "pairwise_ranking", "rho1", "verifiable",
                                                  "vlm_ablation"}
