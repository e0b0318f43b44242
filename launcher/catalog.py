"""The project's recipes as a whole: the `launch list` table and `launch check` over every combination."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from launcher.views.tables import Header, render_table
from launcher.views import RecipeView
from spottrain_contract.errors import UserError
from spottrain_contract.recipe import load_recipe, recipe_names
from spottrain_contract.sweep import cells

CHECK_RUN_ID = "check-run"


@dataclass(frozen=True)
class CheckResult:
    recipe: str
    target: str
    profile: Optional[str]
    error: Optional[str] = None
    cell: Optional[str] = None  # a sweep's cell

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        what = (f"{self.recipe} × {self.target}" + (f" × {self.profile}" if self.profile else "")
                + (f" × cell {self.cell}" if self.cell else ""))
        return f"ok    {what}" if self.ok else f"FAIL  {what}: {self.error}"


def check_all(project_dir: Path, targets: Iterable[str]) -> list[CheckResult]:
    """Render and validate each recipe for each target, bare and under each of its profiles, and each cell of
    its sweep under each. Offline."""
    from launcher.display import masked_document
    from launcher.plan import plan_launch
    from launcher.requests import LaunchRequest

    results = []
    for name in recipe_names(project_dir):
        try:
            recipe = load_recipe(name, project_dir=project_dir).recipe
        except UserError as exc:
            results.append(CheckResult(name, "-", None, str(exc)))
            continue
        grids = {profile: _grid(name, project_dir, profile) for profile in [None, *recipe.profiles]}
        for target in targets:
            for profile, grid in grids.items():
                for cell in [None, *grid]:
                    try:
                        # the profile as given: None renders the recipe bare, not under the target's default
                        loaded = load_recipe(name, project_dir=project_dir, profile=profile, cell=cell)
                        request = LaunchRequest(name, target, run_id=CHECK_RUN_ID)
                        masked_document(plan_launch(request, project_dir, loaded=loaded))
                        results.append(CheckResult(name, target, profile, cell=cell))
                    except UserError as exc:
                        results.append(CheckResult(name, target, profile, str(exc), cell=cell))
    return results


def _grid(name: str, project_dir: Path, profile) -> list[str]:
    """The cells of the recipe's sweep under `profile` (a profile may bring its own grid); none when that
    profile does not load (the render then says why)."""
    try:
        return [c.name for c in cells(load_recipe(name, project_dir=project_dir, profile=profile).recipe.sweep)]
    except UserError:
        return []


def recipe_views(project_dir: Path) -> list[RecipeView]:
    """Every recipe with the targets it renders for as written: each target that takes the recipe as a launch
    there loads it, under the target's default profile (local: `local`) where it has one."""
    from launcher.targets import get_target, target_names

    targets = {name: get_target(name) for name in target_names()}
    views = []
    for name in recipe_names(project_dir):
        try:
            r = load_recipe(name, project_dir=project_dir).recipe
        except UserError as exc:
            views.append(RecipeView(name=name, error=str(exc)))
            continue
        runs_on = [t for t, module in targets.items() if _renders_for(module, name, r, project_dir)]
        views.append(RecipeView(name=name, task=r.task, gpus=r.resources.preferred_gpus, nodes=r.resources.nodes,
                                spot=r.resources.spot, accelerator=r.resources.accelerators[0], targets=runs_on,
                                profiles=list(r.profiles), capacity=r.resources.candidates))
    return views


def _renders_for(target, name: str, bare, project_dir: Path) -> bool:
    """Whether a launch of recipe `name` (`bare`: as written, no profile) on `target` renders: a target with a
    default profile applies it (`plan.effective_profile`), so the recipe must have that profile, and the target
    take the recipe under it."""
    profile = target.DEFAULT_PROFILE
    if profile is None:
        return target.unsupported(bare) is None
    if profile not in bare.profiles:
        return False
    try:
        return target.unsupported(load_recipe(name, project_dir=project_dir, profile=profile).recipe) is None
    except UserError:
        return False


# on a narrow terminal, dropped in this order; the recipe and where it runs stay
_DROP = ("NODES", "SPOT", "TASK", "PROFILES", "ACCELERATOR", "GPUS")


def recipe_table(views: list[RecipeView]) -> str:
    invalid = any(v.error for v in views)  # TASK then says why a recipe does not load: it stays
    header = Header(("RECIPE", "TASK", "GPUS", "NODES", "SPOT", "ACCELERATOR", "TARGETS", "PROFILES"),
                    drop=[name for name in _DROP if not (invalid and name == "TASK")])
    rows = [(v.name, f"invalid: {v.error}", "", "", "", "", "", "") if v.error else
            (v.name, v.task, v.gpus, v.nodes, "yes" if v.spot else "no",
             v.accelerator if len(v.capacity) <= 1 else " ".join(v.capacity), ",".join(v.targets),
             ",".join(v.profiles) or "-") for v in views]
    return render_table(header, rows)
