"""The project's recipes: the list, `launch check` over every recipe × target × profile × cell, a render for
display, `launch doctor`, the New-run form's fields, and what shell completion offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from launcher import catalog, doctor
from launcher.errors import LaunchError
from launcher.operations.launching import Planned, plan_run
from launcher.operations.workspace import Workspace
from launcher.plan import effective_profile
from launcher.requests import DependencyLookup, LaunchRequest
from launcher.stages import pipeline_names
from launcher.targets import Check, get_target, target_names
from launcher.views import RecipeView
from spottrain_contract.recipe import load_recipe, recipe_names


def recipes(ws: Workspace) -> list[RecipeView]:
    return catalog.recipe_views(ws.project_dir)


def recipe_table(views: list[RecipeView]) -> str:
    return catalog.recipe_table(views)


def check(ws: Workspace, targets: tuple[str, ...] = ()) -> list[catalog.CheckResult]:
    """Render and validate every recipe × target × profile × cell, offline (`targets`: only these)."""
    for target in targets:
        get_target(target)  # an unknown name is a usage error, not a failed check
    return catalog.check_all(ws.project_dir, targets or target_names())


def render(ws: Workspace, request: LaunchRequest) -> Planned:
    """The document a launch of `request` would submit, secrets masked (stage inputs left as written)."""
    return plan_run(ws, request, DependencyLookup.SKIP)


def doctor_checks(ws: Workspace, request: LaunchRequest) -> Iterator[Check]:
    """What a launch of the request needs, checked online: secrets, store, MLflow, the platform's own checks,
    each as it finishes. Without a recipe name the project's only recipe is checked."""
    names = recipe_names(ws.project_dir)
    if not request.recipe and len(names) != 1:
        raise LaunchError(f"doctor: name the recipe to check (one of: {', '.join(names)})")
    return doctor.run_checks(render(ws, request.but(recipe=request.recipe or names[0])).plan, ws.project_dir)


@dataclass(frozen=True)
class RecipeChoices:
    """The New-run form's choices: recipes, targets, the recipe's profiles, and the profile a target applies."""

    recipes: list[str]
    targets: list[str]
    profiles: list[str]
    default_profile: Optional[str]


def recipe_choices(ws: Workspace, recipe: str, target: str) -> RecipeChoices:
    return RecipeChoices(recipe_names(ws.project_dir), target_names(),
                         list(load_recipe(recipe, project_dir=ws.project_dir).recipe.profiles),
                         effective_profile(LaunchRequest(recipe, target)))


def names(ws: Workspace) -> list[str]:
    return recipe_names(ws.project_dir)


def pipelines(ws: Workspace) -> list[str]:
    return pipeline_names(ws.project_dir)


def targets() -> list[str]:
    return target_names()
